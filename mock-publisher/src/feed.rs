//! [`Feed`]: paces random walks at a steady rate and hands ticks to a sink.

use std::time::Duration;

use marketmux_core::Tick;

use crate::walk::RandomWalk;

/// How fast and over which symbols the feed runs.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Ticks per second per symbol (0 stops the feed).
    pub rate_per_symbol: f64,
    /// Number of symbols (the default universe first).
    pub symbols: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            rate_per_symbol: 4.0,
            symbols: crate::walk::DEFAULT_SYMBOLS.len(),
        }
    }
}

/// A paced random-walk feed.
pub struct Feed {
    walks: Vec<RandomWalk>,
    config: FeedConfig,
}

impl Feed {
    /// A feed over `config.symbols` walks.
    pub fn new(config: FeedConfig) -> Self {
        let walks = RandomWalk::universe(config.symbols, &mut rand::rng());
        Self { walks, config }
    }

    /// Runs until `sink` returns false. Every 10 ms each symbol moves
    /// `rate / 100` times on average (see [`moves_per_step`]), so at low rates
    /// ticks arrive spread out, not in bursts, and high rates are not capped.
    pub async fn run(mut self, mut sink: impl FnMut(Vec<Tick>) -> bool) {
        if self.config.rate_per_symbol <= 0.0 || self.walks.is_empty() {
            return;
        }
        let step = Duration::from_millis(10);
        let per_step = self.config.rate_per_symbol * step.as_secs_f64();
        let mut every = tokio::time::interval(step);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        loop {
            every.tick().await;
            let mut batch = Vec::new();
            for w in &mut self.walks {
                for _ in 0..moves_per_step(per_step, &mut rng) {
                    batch.push(w.step(&mut rng));
                }
            }
            if !batch.is_empty() && !sink(batch) {
                return;
            }
        }
    }
}

use rand::SeedableRng as _;

/// How often a symbol moves in one step, for `per_step` moves per step on
/// average: the whole part every time, one more with the fraction's probability.
pub fn moves_per_step(per_step: f64, rng: &mut impl rand::Rng) -> usize {
    if !per_step.is_finite() || per_step <= 0.0 {
        return 0;
    }
    let whole = per_step.floor();
    whole as usize + usize::from(rng.random_bool(per_step - whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_per_step_averages_the_rate_with_no_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for per_step in [0.04, 0.5, 1.0, 5.0, 12.25] {
            let steps = 20_000;
            let total: usize = (0..steps).map(|_| moves_per_step(per_step, &mut rng)).sum();
            let mean = total as f64 / steps as f64;
            assert!(
                (mean - per_step).abs() < 0.02 * per_step.max(1.0),
                "{per_step}: {mean}"
            );
        }
        assert_eq!(moves_per_step(0.0, &mut rng), 0);
        assert_eq!(moves_per_step(f64::NAN, &mut rng), 0);
    }
}
