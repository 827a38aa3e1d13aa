//! [`ClockSkew`]: how far ahead of this node's clock a tick's timestamp may
//! be. Every entrance (REST ingest, the Kafka bridge, the Finnhub feed)
//! checks it: a price dated in the future would otherwise stay the "newest"
//! of its symbol (latest-price stores keep the newest timestamp) until that
//! date, freezing the symbol for every reader.

use std::time::Duration;

use crate::tick::{Tick, Timestamp};

/// The bound on future timestamps. Ticks from the past are always accepted
/// (late data is normal); only the future is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSkew {
    max_ahead: Duration,
}

impl Default for ClockSkew {
    /// 60 seconds: far more than NTP-synchronised clocks drift apart.
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// A tick dated further in the future than [`ClockSkew`] allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp {timestamp} is {}s ahead of this node's clock (at most {}s allowed)",
    ahead.as_secs(),
    max_ahead.as_secs()
)]
pub struct FutureTimestamp {
    /// The refused timestamp.
    pub timestamp: Timestamp,
    /// How far ahead of the clock it was.
    pub ahead: Duration,
    /// The bound it broke.
    pub max_ahead: Duration,
}

impl ClockSkew {
    /// Timestamps at most `max_ahead` in the future are accepted.
    pub fn new(max_ahead: Duration) -> Self {
        Self { max_ahead }
    }

    /// The bound.
    pub fn max_ahead(&self) -> Duration {
        self.max_ahead
    }

    /// Checks `tick` against the wall clock now.
    pub fn check(&self, tick: &Tick) -> Result<(), FutureTimestamp> {
        self.check_at(tick.timestamp, Timestamp::now())
    }

    /// Checks `timestamp` against `now`.
    pub fn check_at(&self, timestamp: Timestamp, now: Timestamp) -> Result<(), FutureTimestamp> {
        let ahead_ns = timestamp.0.saturating_sub(now.0);
        if ahead_ns <= 0 {
            return Ok(());
        }
        let ahead = Duration::from_nanos(ahead_ns as u64);
        if ahead <= self.max_ahead {
            return Ok(());
        }
        Err(FutureTimestamp {
            timestamp,
            ahead,
            max_ahead: self.max_ahead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_the_future_only() {
        let skew = ClockSkew::new(Duration::from_secs(60));
        let now = Timestamp(1_700_000_000_000_000_000);
        let secs = |s: i64| Timestamp(now.0 + s * 1_000_000_000);
        assert!(skew.check_at(secs(-86_400 * 365), now).is_ok());
        assert!(skew.check_at(secs(60), now).is_ok());
        let err = skew.check_at(secs(61), now).unwrap_err();
        assert_eq!(err.ahead, Duration::from_secs(61));
        assert!(err.to_string().contains("61s ahead"), "{err}");
        let far = Timestamp::parse_rfc3339("2262-04-11T23:47:16Z").unwrap();
        assert!(ClockSkew::default().check_at(far, now).is_err());
        assert!(ClockSkew::default()
            .check_at(Timestamp(i64::MIN), now)
            .is_ok());
    }
}
