//! Who subscribes to what: symbol names, popularity (uniform or Zipf), and
//! which clients are slow readers. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One client's part of the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPlan {
    pub index: usize,
    /// Indices into the symbol list.
    pub symbols: Vec<usize>,
    /// Stops reading once subscribed.
    pub slow: bool,
}

/// Symbol names for `--symbols N`: `S0001`, `S0002`, … (valid NATS subject tokens too).
pub fn generated_symbols(n: usize) -> Vec<String> {
    let width = n.to_string().len().max(4);
    (1..=n).map(|i| format!("S{i:0width$}")).collect()
}

/// Zipf(s) over ranks 1..=n as a cumulative distribution.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// A rank in `0..n` (0 is the most popular).
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Plans `clients` clients over `n_symbols` symbols.
///
/// Without `zipf`, subscriptions go round-robin so every symbol has the same
/// number of subscribers (±1), and a client's symbols are evenly spaced. With `zipf`, each client draws distinct symbols
/// from Zipf(s). Slow readers are spread evenly among the clients.
pub fn plan(
    clients: usize,
    n_symbols: usize,
    subs: usize,
    zipf: Option<f64>,
    slow_fraction: f64,
    seed: u64,
) -> Vec<ClientPlan> {
    let subs = subs.clamp(1, n_symbols.max(1));
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = zipf.map(|s| Zipf::new(n_symbols, s));
    (0..clients)
        .map(|i| {
            let symbols = match &dist {
                None => {
                    // Spread a client's symbols out (i, i + N/k, i + 2N/k, ...) so
                    // that ticks published round-robin in a batch rarely hit one
                    // client twice: no batching for free from the scenario's layout.
                    let stride = (n_symbols / subs).max(1);
                    (0..subs).map(|j| (i + j * stride) % n_symbols).collect()
                }
                Some(z) => distinct(z, subs, n_symbols, &mut rng),
            };
            let f = slow_fraction.clamp(0.0, 1.0);
            let slow = ((i + 1) as f64 * f).floor() > (i as f64 * f).floor();
            ClientPlan {
                index: i,
                symbols,
                slow,
            }
        })
        .collect()
}

fn distinct(z: &Zipf, k: usize, n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(k);
    let mut tries = 0;
    while out.len() < k && tries < k * 64 {
        let r = z.sample(rng);
        if !out.contains(&r) {
            out.push(r);
        }
        tries += 1;
    }
    // Very skewed draws: fill with the most popular symbols not yet taken.
    let mut r = 0;
    while out.len() < k && r < n {
        if !out.contains(&r) {
            out.push(r);
        }
        r += 1;
    }
    out
}

/// Subscribers per symbol among clients that read (what deliveries are expected for).
pub fn readers_per_symbol(plans: &[ClientPlan], n_symbols: usize) -> Vec<u64> {
    let mut v = vec![0u64; n_symbols];
    for p in plans.iter().filter(|p| !p.slow) {
        for &s in &p.symbols {
            v[s] += 1;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_balanced_and_distinct() {
        let p = plan(5000, 200, 5, None, 0.0, 1);
        let per = readers_per_symbol(&p, 200);
        assert!(per.iter().all(|&n| n == 125), "{per:?}");
        for c in &p {
            let mut s = c.symbols.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 5);
        }
    }

    #[test]
    fn a_clients_symbols_are_spread_out() {
        for c in plan(400, 200, 5, None, 0.0, 1) {
            let mut s = c.symbols.clone();
            s.sort();
            assert!(s.windows(2).all(|w| w[1] - w[0] >= 40), "{s:?}");
        }
    }

    #[test]
    fn subs_are_clamped_to_the_symbol_count() {
        let p = plan(3, 2, 5, None, 0.0, 1);
        assert!(p.iter().all(|c| c.symbols.len() == 2));
        let p = plan(3, 2, 5, Some(1.2), 0.0, 1);
        assert!(p.iter().all(|c| c.symbols.len() == 2));
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(100, 1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 100];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // P(rank 1) = 1/H(100) ≈ 0.193; P(rank 2) is half of it.
        assert!((18_000..21_000).contains(&counts[0]), "{}", counts[0]);
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((1.8..2.2).contains(&ratio), "{ratio}");
        assert!(counts[99] > 0 && counts[99] < counts[9]);
    }

    #[test]
    fn zipf_zero_is_uniform() {
        let z = Zipf::new(4, 0.0);
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn zipf_plans_are_distinct_and_deterministic() {
        let a = plan(1000, 50, 5, Some(1.1), 0.0, 9);
        assert_eq!(a, plan(1000, 50, 5, Some(1.1), 0.0, 9));
        for c in &a {
            let mut s = c.symbols.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 5);
        }
        let per = readers_per_symbol(&a, 50);
        assert!(per[0] > per[49]);
    }

    #[test]
    fn slow_readers_are_spread() {
        let p = plan(1000, 1, 1, None, 0.1, 1);
        assert_eq!(p.iter().filter(|c| c.slow).count(), 100);
        assert_eq!(p[..100].iter().filter(|c| c.slow).count(), 10);
        assert_eq!(readers_per_symbol(&p, 1), vec![900]);
        assert!(plan(10, 1, 1, None, 1.0, 1).iter().all(|c| c.slow));
    }

    #[test]
    fn generated_names() {
        assert_eq!(generated_symbols(2), ["S0001", "S0002"]);
        assert_eq!(generated_symbols(12_000)[0], "S00001");
    }
}
