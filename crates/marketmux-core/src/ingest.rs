//! The body of `POST /api/v1/ticks`: one tick object or an array of them.

use serde::Deserialize;

use crate::skew::{ClockSkew, FutureTimestamp};
use crate::symbol::Symbol;
use crate::tick::{Tick, TickError, Timestamp};

/// Most ticks accepted in one request body.
pub const MAX_TICKS_PER_REQUEST: usize = 10_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    One(RawTick),
    Many(Vec<RawTick>),
}

/// A tick as it arrives, before validation: every field optional so that a
/// missing one gets its own error rather than a generic parse failure.
#[derive(Deserialize)]
struct RawTick {
    symbol: Option<String>,
    price: Option<f64>,
    timestamp: Option<String>,
    volume: Option<f64>,
}

/// Why an ingest body was refused; `index` is the offending tick in an array.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not JSON of the expected shape.
    #[error("body is not a tick object or an array of ticks: {0}")]
    Json(String),
    /// A tick of the body is invalid.
    #[error("tick {index}: {error}")]
    Tick {
        /// Its place in the body, from 0.
        index: usize,
        /// What is wrong with it.
        error: TickError,
    },
    /// A tick of the body is dated too far in the future.
    #[error("tick {index}: {error}")]
    Future {
        /// Its place in the body, from 0.
        index: usize,
        /// How far ahead it is.
        error: FutureTimestamp,
    },
    /// An empty array.
    #[error("empty array: nothing to ingest")]
    Empty,
    /// More ticks than one request may carry.
    #[error("too many ticks in one request: {0} (at most {MAX_TICKS_PER_REQUEST})")]
    TooMany(usize),
}

/// Parses and validates an ingest body. All ticks are valid or none is
/// taken; a timestamp further in the future than `skew` allows is invalid.
pub fn parse_ticks(body: &[u8], skew: &ClockSkew) -> Result<Vec<Tick>, IngestError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| IngestError::Json(e.to_string()))?;
    let raw = match body {
        Body::One(t) => vec![t],
        Body::Many(v) => v,
    };
    if raw.is_empty() {
        return Err(IngestError::Empty);
    }
    if raw.len() > MAX_TICKS_PER_REQUEST {
        return Err(IngestError::TooMany(raw.len()));
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, r)| {
            let tick = r
                .validate()
                .map_err(|error| IngestError::Tick { index, error })?;
            skew.check(&tick)
                .map_err(|error| IngestError::Future { index, error })?;
            Ok(tick)
        })
        .collect()
}

impl RawTick {
    fn validate(self) -> Result<Tick, TickError> {
        let symbol = Symbol::new(&self.symbol.ok_or(TickError::Missing("symbol"))?)?;
        let price = self.price.ok_or(TickError::Missing("price"))?;
        let timestamp =
            Timestamp::parse_rfc3339(&self.timestamp.ok_or(TickError::Missing("timestamp"))?)?;
        Tick::new(symbol, price, timestamp, self.volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_many() {
        let one = br#"{"symbol":"AAPL","price":150.25,"timestamp":"2026-05-12T15:04:05.123456Z"}"#;
        assert_eq!(parse_ticks(one, &ClockSkew::default()).unwrap().len(), 1);
        let many = br#"[{"symbol":"AAPL","price":1,"timestamp":"2026-05-12T15:04:05Z"},
                        {"symbol":"BINANCE:BTCUSDT","price":2,"timestamp":"2026-05-12T15:04:05Z","volume":0.5}]"#;
        let ticks = parse_ticks(many, &ClockSkew::default()).unwrap();
        assert_eq!(ticks[1].symbol.as_str(), "BINANCE:BTCUSDT");
        assert_eq!(ticks[1].volume, Some(0.5));
    }

    #[test]
    fn each_bad_input_is_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not a tick"),
            (b"[]", "empty"),
            (
                br#"{"price":1,"timestamp":"2026-05-12T15:04:05Z"}"#,
                "missing field `symbol`",
            ),
            (
                br#"{"symbol":"A","timestamp":"2026-05-12T15:04:05Z"}"#,
                "missing field `price`",
            ),
            (br#"{"symbol":"A","price":1}"#, "missing field `timestamp`"),
            (
                br#"{"symbol":"A","price":-1,"timestamp":"2026-05-12T15:04:05Z"}"#,
                "positive",
            ),
            (
                br#"{"symbol":"A","price":0,"timestamp":"2026-05-12T15:04:05Z"}"#,
                "positive",
            ),
            (
                br#"{"symbol":"A","price":1,"timestamp":"noon"}"#,
                "invalid timestamp",
            ),
            (
                br#"{"symbol":"A B","price":1,"timestamp":"2026-05-12T15:04:05Z"}"#,
                "invalid symbol",
            ),
            (
                br#"{"symbol":"A","price":"1","timestamp":"2026-05-12T15:04:05Z"}"#,
                "not a tick",
            ),
            (
                br#"{"symbol":"A","price":1e400,"timestamp":"2026-05-12T15:04:05Z"}"#,
                "not a tick",
            ),
            (
                br#"[{"symbol":"A","price":1,"timestamp":"2026-05-12T15:04:05Z"},
                     {"symbol":"FUT2","price":999,"timestamp":"2262-04-11T23:47:16Z"}]"#,
                "tick 1: timestamp 2262-04-11T23:47:16Z is",
            ),
        ];
        for (body, want) in cases {
            let err = parse_ticks(body, &ClockSkew::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
