//! [`Tick`]: one accepted price of one symbol at one instant.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::stream::{Epoch, Position};
use crate::symbol::Symbol;

/// Nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = Utc::now();
        Self(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Parses an RFC 3339 timestamp such as `2026-05-12T15:04:05.123456Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TickError> {
        let dt =
            DateTime::parse_from_rfc3339(s).map_err(|e| TickError::Timestamp(e.to_string()))?;
        dt.timestamp_nanos_opt()
            .map(Self)
            .ok_or_else(|| TickError::Timestamp("outside the years 1677–2262".into()))
    }

    /// From whole microseconds since the epoch.
    pub fn from_micros(us: i64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    /// Whole microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.0 / 1_000
    }

    /// Formats as RFC 3339 in UTC, with as many fractional digits as needed.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// One price of one symbol. Always valid: built through [`Tick::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// The instrument.
    pub symbol: Symbol,
    /// Positive and finite.
    pub price: f64,
    /// When the price happened.
    pub timestamp: Timestamp,
    /// Traded volume, when the source reports one (finite, not negative).
    pub volume: Option<f64>,
    /// The symbol's sequence number, assigned where the tick entered the bus
    /// (0: not assigned yet).
    pub seq: u64,
    /// The life of the symbol's sequence `seq` belongs to
    /// (`Epoch::default()`: not assigned yet).
    pub epoch: Epoch,
    /// The candle intervals whose candle had already closed when the tick
    /// was accepted (a bit set by [`crate::Interval::index`]): decided
    /// where `seq` is assigned, with that place's clock, so that every node
    /// builds the same candles from the stream. 0: on time for every interval.
    pub candles_late: u8,
}

/// Why a tick was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TickError {
    /// The symbol is not a valid symbol.
    #[error("invalid symbol: {0}")]
    Symbol(#[from] crate::symbol::SymbolError),
    /// The price is not a positive finite number.
    #[error("price must be a positive finite number, got {0}")]
    Price(f64),
    /// The volume is negative or not finite.
    #[error("volume must be a finite number >= 0, got {0}")]
    Volume(f64),
    /// The timestamp cannot be read.
    #[error("invalid timestamp: {0}")]
    Timestamp(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
}

impl Tick {
    /// Builds a tick, checking the price and volume; `seq` and `epoch` are
    /// left unassigned.
    pub fn new(
        symbol: Symbol,
        price: f64,
        timestamp: Timestamp,
        volume: Option<f64>,
    ) -> Result<Self, TickError> {
        if !(price.is_finite() && price > 0.0) {
            return Err(TickError::Price(price));
        }
        if let Some(v) = volume {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TickError::Volume(v));
            }
        }
        Ok(Self {
            symbol,
            price,
            timestamp,
            volume,
            seq: 0,
            epoch: Epoch::default(),
            candles_late: 0,
        })
    }

    /// The same tick at `position` of its symbol's stream.
    pub fn sequenced(self, position: Position) -> Tick {
        Tick {
            seq: position.seq,
            epoch: position.epoch,
            ..self
        }
    }

    /// Where the tick is in its symbol's stream, once assigned.
    pub fn position(&self) -> Option<Position> {
        (self.seq != 0 && self.epoch.is_set()).then_some(Position {
            epoch: self.epoch,
            seq: self.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_with_microseconds() {
        let ts = Timestamp::parse_rfc3339("2026-05-12T15:04:05.123456Z").unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-05-12T15:04:05.123456Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2026-05-12T17:04:05+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-05-12T15:04:05Z"
        );
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn rejects_bad_prices() {
        let s = Symbol::new("AAPL").unwrap();
        let t = Timestamp::now();
        for p in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Tick::new(s, p, t, None).is_err(), "{p}");
        }
        assert!(Tick::new(s, 1.0, t, Some(-1.0)).is_err());
        assert!(Tick::new(s, 1.0, t, Some(3.0)).is_ok());
    }
}
