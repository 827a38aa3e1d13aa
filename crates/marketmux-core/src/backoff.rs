//! [`Backoff`]: how long to wait before the next retry or reconnection.
//!
//! Every retry loop of the workspace (a feed reconnecting, a bridge whose sink
//! refused a batch, a fired alert that could not be published, a load-test
//! client coming back) uses this one type: the delay doubles from `first` up
//! to `max` and goes back to `first` after a success. [`Jitter`] says how the
//! wait is drawn below that ceiling.

use std::time::Duration;

use rand::Rng as _;

/// How a wait is drawn from the current ceiling `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `d`: one process retrying its own work (a sink, a store) gains
    /// nothing from randomness, and its logs read as a plain doubling.
    None,
    /// Uniform in `[0, d]` ("full jitter"): many clients that lost the same
    /// server do not come back in lockstep.
    Full,
    /// Uniform in `[d/2, d]` ("equal jitter"): spread like [`Jitter::Full`],
    /// but never a near-zero wait that hammers a server still coming up.
    Equal,
}

/// Capped exponential backoff: attempt `n` waits at most
/// `min(max, first * 2^n)`, drawn as its [`Jitter`] says.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: Jitter,
    attempt: u32,
}

impl Backoff {
    /// Starts at `first`, doubling, never above `max` (nor below `first`).
    pub fn new(first: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            first,
            max: max.max(first),
            jitter,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        // 2^20 times any sensible `first` is past any sensible `max`.
        let factor = 1u32 << self.attempt.min(20);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// The next delay; counts one more attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => uniform(Duration::ZERO, ceiling),
            Jitter::Equal => uniform(ceiling / 2, ceiling),
        }
    }

    /// Back to the first delay (after an attempt that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random duration in `[low, high]` (`low <= high`).
fn uniform(low: Duration, high: Duration) -> Duration {
    let clamp = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (low, high) = (clamp(low), clamp(high));
    Duration::from_nanos(rand::rng().random_range(low..=high.max(low)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_jitter_the_wait_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(1), Jitter::None);
        let waits: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
        assert_eq!(b.next_delay(), 200 * MS);
    }

    #[test]
    fn full_jitter_stays_under_each_ceiling() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(1), Jitter::Full);
        let mut below_half = false;
        for _ in 0..200 {
            b.reset();
            for ceiling_ms in [100, 200, 400, 800, 1000, 1000] {
                assert_eq!(b.ceiling(), ceiling_ms * MS);
                let w = b.next_delay();
                assert!(w <= ceiling_ms * MS, "{w:?} above {ceiling_ms} ms");
                below_half |= w < ceiling_ms * MS / 2;
            }
        }
        // 1,200 draws never below half a ceiling would mean it is not full jitter.
        assert!(below_half, "full jitter reaches below half the ceiling");
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half_of_each_ceiling() {
        let mut b = Backoff::new(300 * MS, Duration::from_secs(8), Jitter::Equal);
        let mut draws = std::collections::HashSet::new();
        for ceiling_ms in [300, 600, 1200, 2400, 4800, 8000, 8000, 8000] {
            let w = b.next_delay();
            assert!(
                (ceiling_ms * MS / 2..=ceiling_ms * MS).contains(&w),
                "{w:?} outside [{}, {ceiling_ms}] ms",
                ceiling_ms / 2
            );
            draws.insert(w);
        }
        assert!(draws.len() > 1, "equal jitter draws differ: {draws:?}");
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), jitter);
            for _ in 0..100 {
                assert!(b.next_delay() <= Duration::from_secs(30));
            }
            assert_eq!(b.ceiling(), Duration::from_secs(30));
        }
    }

    #[test]
    fn a_cap_below_the_first_wait_is_raised_to_it() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1), Jitter::None);
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }
}
