//! The tick as Redis holds it: one JSON object, the same bytes in the
//! `price:SYMBOL` key and on the symbol's channel.
//!
//! `{"symbol":"AAPL","price":150.25,"timestamp":"2026-05-12T15:04:05.123456Z","volume":12.0,"ts_ns":1778598245123456000,"seq":42,"epoch":"k3f9"}`
//!
//! `seq` and `epoch` (and `late`, the intervals whose candle had closed, when
//! any had) are appended by the script that assigns them: the
//! publisher sends the object open ([`encode_open`]), the script closes it.
//! `timestamp` is for people and other readers (redis-cli, plain Redis clients);
//! `ts_ns` (nanoseconds since the epoch) is exact and is what the Lua script
//! compares. A payload without `ts_ns` is read from `timestamp`.

use std::borrow::Cow;

use marketmux_core::{Epoch, EpochError, Position, Symbol, Tick, TickError, Timestamp};
use serde::{Deserialize, Serialize};

/// Why a Redis payload is not a tick.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not JSON of a tick's shape.
    #[error("not a tick JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// A tick's shape, but not a valid tick.
    #[error("invalid tick: {0}")]
    Tick(#[from] TickError),
    /// The epoch is not a valid epoch.
    #[error("invalid epoch: {0}")]
    Epoch(#[from] EpochError),
}

#[derive(Serialize)]
struct WireOut<'a> {
    symbol: &'a str,
    price: f64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<f64>,
    ts_ns: i64,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    price: f64,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    volume: Option<f64>,
    #[serde(default)]
    ts_ns: Option<i64>,
    #[serde(default)]
    seq: u64,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    late: u8,
}

/// Encodes `tick` as the JSON stored in Redis and published on its channel
/// (with `seq` and `epoch` when assigned).
pub fn encode(tick: &Tick) -> String {
    let mut json = encode_open(tick);
    if let Some(p) = tick.position() {
        json.push_str(&position_fields(p));
    }
    if tick.candles_late != 0 {
        json.push_str(&format!(r#","late":{}"#, tick.candles_late));
    }
    json.push('}');
    json
}

/// The tick's JSON without `seq`, `epoch` and the closing brace: what the
/// publishing script completes once it has numbered the tick.
pub fn encode_open(tick: &Tick) -> String {
    let wire = WireOut {
        symbol: tick.symbol.as_str(),
        price: tick.price,
        timestamp: tick.timestamp.to_rfc3339(),
        volume: tick.volume,
        ts_ns: tick.timestamp.0,
    };
    // Serializing plain numbers and strings cannot fail; `{}` would be refused
    // by `decode`, never taken for a tick.
    let mut json = serde_json::to_string(&wire).unwrap_or_else(|_| String::from("{}"));
    json.pop();
    json
}

/// `,"seq":N,"epoch":"E"`, as the script appends them.
fn position_fields(p: Position) -> String {
    format!(r#","seq":{},"epoch":"{}""#, p.seq, p.epoch)
}

/// Decodes and validates a tick read from Redis.
pub fn decode(bytes: &[u8]) -> Result<Tick, CodecError> {
    let wire: WireIn<'_> = serde_json::from_slice(bytes)?;
    let symbol = Symbol::new(&wire.symbol).map_err(TickError::from)?;
    let timestamp = match (wire.ts_ns, wire.timestamp) {
        (Some(ns), _) => Timestamp(ns),
        (None, Some(ts)) => Timestamp::parse_rfc3339(&ts)?,
        (None, None) => return Err(TickError::Missing("timestamp").into()),
    };
    let tick = Tick::new(symbol, wire.price, timestamp, wire.volume)?;
    let epoch = match wire.epoch {
        Some(e) => e.parse::<Epoch>()?,
        None => Epoch::default(),
    };
    let mut tick = tick.sequenced(Position {
        epoch,
        seq: wire.seq,
    });
    tick.candles_late = wire.late;
    Ok(tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let ts = Timestamp::parse_rfc3339("2026-05-12T15:04:05.123456789Z").unwrap();
        let t = Tick::new(Symbol::new("BRK.B").unwrap(), 408.31, ts, Some(12.0)).unwrap();
        let json = encode(&t);
        assert!(json.contains(r#""timestamp":"2026-05-12T15:04:05.123456789Z""#));
        assert_eq!(decode(json.as_bytes()).unwrap(), t);
        let no_volume = Tick { volume: None, ..t };
        assert!(!encode(&no_volume).contains("volume"));
        assert_eq!(decode(encode(&no_volume).as_bytes()).unwrap(), no_volume);
        let numbered = t.sequenced(Position {
            epoch: Epoch::from_raw(1_000),
            seq: 42,
        });
        let json = encode(&numbered);
        assert!(json.ends_with(r#","seq":42,"epoch":"rs"}"#), "{json}");
        assert_eq!(decode(json.as_bytes()).unwrap(), numbered);
        assert_eq!(format!("{}}}", encode_open(&t)), encode(&t));
        let late = Tick {
            candles_late: 0b101,
            ..numbered
        };
        let json = encode(&late);
        assert!(json.ends_with(r#","late":5}"#), "{json}");
        assert_eq!(decode(json.as_bytes()).unwrap(), late);
    }

    #[test]
    fn reads_payloads_without_ts_ns_and_refuses_bad_ones() {
        let t =
            decode(br#"{"symbol":"AAPL","price":1.5,"timestamp":"2026-05-12T15:04:05Z"}"#).unwrap();
        assert_eq!(t.timestamp.to_rfc3339(), "2026-05-12T15:04:05Z");
        for bad in [
            &br#"{"symbol":"AAPL","price":1.5}"#[..],
            br#"{"symbol":"AA PL","price":1.5,"ts_ns":1}"#,
            br#"{"symbol":"AAPL","price":-1,"ts_ns":1}"#,
            br#"{"symbol":"AAPL","price":1,"ts_ns":1,"seq":1,"epoch":"K!"}"#,
            br#"{"symbol":"AAPL","price":1,"ts_ns":1,"seq":-1}"#,
            b"{}",
            b"not json",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
