//! What the server sends: JSON text, encoded once per message.
//!
//! Ticks are written by hand ([`encode_tick`]): every field is a number or a
//! string that needs no escaping (symbols are restricted to safe ASCII), so
//! the encoder is a handful of appends with no intermediate values.

use std::fmt::Write as _;

use serde::Serialize;

use crate::candle::Interval;
use crate::stream::Epoch;
use crate::symbol::Symbol;
use crate::tick::Tick;

/// Machine-readable error codes of `{"type":"error","code":...}` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON.
    InvalidJson,
    /// Valid JSON, but not a request this server accepts (a field's type or range).
    InvalidRequest,
    /// An `action` this server does not know.
    UnknownAction,
    /// A symbol that is not a valid symbol.
    InvalidSymbol,
    /// A subscribe past the socket's, the address's or the node's subscription bound.
    TooManySubscriptions,
    /// More client frames per second than the socket may send.
    RateLimited,
    /// A binary or otherwise unsupported frame.
    UnsupportedFrame,
    /// Not allowed for this socket (e.g. `identify` while authentication is on).
    Forbidden,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

/// Where a symbol's stream stands for a subscriber: one entry of the
/// `subscribed` reply's `streams`, `"AAPL":{"epoch":"k3f9","seq":135,"recovered":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// The symbol whose stream this is.
    pub symbol: Symbol,
    /// The life of the symbol's sequence the subscriber is in.
    pub epoch: Epoch,
    /// The symbol's last assigned `seq` when the subscribe was served (0: none yet).
    pub seq: u64,
    /// Whether the position the client sent in `since` is served (every tick
    /// after it follows); `None` when it sent none for this symbol.
    pub recovered: Option<bool>,
}

/// A non-tick message from server to client. `id` is raw JSON echoed from the request.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage<'a> {
    /// The reply to a subscribe, and the notice that a stream started again
    /// (a new epoch, `recovered:false`). `streams` may be empty (the symbols'
    /// positions are unknown for now); it is then left out.
    Subscribed {
        /// The symbols now subscribed.
        symbols: &'a [Symbol],
        /// Each symbol's position (left out when empty).
        streams: &'a [StreamState],
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// The reply to an unsubscribe.
    Unsubscribed {
        /// The symbols no longer subscribed.
        symbols: &'a [Symbol],
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// The reply to a candle subscribe:
    /// `{"type":"subscribed","symbols":[...],"candles":["1m"]}`.
    CandlesSubscribed {
        /// The symbols whose candles are now followed.
        symbols: &'a [Symbol],
        /// The intervals followed.
        intervals: &'a [Interval],
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// The reply to a candle unsubscribe:
    /// `{"type":"unsubscribed","symbols":[...],"candles":["1m"]}`.
    CandlesUnsubscribed {
        /// The symbols whose candles are no longer followed.
        symbols: &'a [Symbol],
        /// The intervals left.
        intervals: &'a [Interval],
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// A request refused: why, in a code and in words.
    Error {
        /// The machine-readable cause.
        code: ErrorCode,
        /// What was wrong, for people.
        message: &'a str,
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// The reply to an application-level ping.
    Pong {
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// The reply to `identify`: this socket now hears that user's alerts.
    Identified {
        /// The user this socket hears alerts of.
        user_id: i64,
        /// The request's `id`, echoed.
        id: Option<&'a str>,
    },
    /// A fired alert; `alert` is the alert as a JSON object.
    Alert {
        /// The fired alert as a JSON object.
        alert: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Encodes the message as one JSON object.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(96);
        match self {
            ServerMessage::Subscribed {
                symbols,
                streams,
                id,
            } => {
                out.push_str(r#"{"type":"subscribed","symbols":"#);
                push_symbols(&mut out, symbols);
                push_streams(&mut out, streams);
                push_id(&mut out, *id);
            }
            ServerMessage::Unsubscribed { symbols, id } => {
                out.push_str(r#"{"type":"unsubscribed","symbols":"#);
                push_symbols(&mut out, symbols);
                push_id(&mut out, *id);
            }
            ServerMessage::CandlesSubscribed {
                symbols,
                intervals,
                id,
            } => {
                out.push_str(r#"{"type":"subscribed","symbols":"#);
                push_symbols(&mut out, symbols);
                push_intervals(&mut out, intervals);
                push_id(&mut out, *id);
            }
            ServerMessage::CandlesUnsubscribed {
                symbols,
                intervals,
                id,
            } => {
                out.push_str(r#"{"type":"unsubscribed","symbols":"#);
                push_symbols(&mut out, symbols);
                push_intervals(&mut out, intervals);
                push_id(&mut out, *id);
            }
            ServerMessage::Error { code, message, id } => {
                out.push_str(r#"{"type":"error","code":""#);
                out.push_str(code.as_str());
                out.push_str(r#"","message":"#);
                // Messages may quote client input: escape them properly.
                out.push_str(&serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into()));
                push_id(&mut out, *id);
            }
            ServerMessage::Pong { id } => {
                out.push_str(r#"{"type":"pong""#);
                push_id(&mut out, *id);
            }
            ServerMessage::Identified { user_id, id } => {
                let _ = write!(out, r#"{{"type":"identified","user_id":{user_id}"#);
                push_id(&mut out, *id);
            }
            ServerMessage::Alert { alert } => {
                out.push_str(r#"{"type":"alert","alert":"#);
                out.push_str(alert);
            }
        }
        out.push('}');
        out
    }
}

fn push_symbols(out: &mut String, symbols: &[Symbol]) {
    out.push('[');
    for (i, s) in symbols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(s.as_str());
        out.push('"');
    }
    out.push(']');
}

fn push_intervals(out: &mut String, intervals: &[Interval]) {
    out.push_str(r#","candles":["#);
    for (i, interval) in intervals.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(interval.as_str());
        out.push('"');
    }
    out.push(']');
}

fn push_streams(out: &mut String, streams: &[StreamState]) {
    if streams.is_empty() {
        return;
    }
    out.push_str(r#","streams":{"#);
    for (i, s) in streams.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Symbols and epochs are safe ASCII: no escaping needed.
        let _ = write!(
            out,
            r#""{}":{{"epoch":"{}","seq":{}"#,
            s.symbol, s.epoch, s.seq
        );
        if let Some(r) = s.recovered {
            let _ = write!(out, r#","recovered":{r}"#);
        }
        out.push('}');
    }
    out.push('}');
}

fn push_id(out: &mut String, id: Option<&str>) {
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(id);
    }
}

/// Encodes a tick for clients:
/// `{"type":"tick","symbol":"AAPL","price":150.25,"timestamp":"…","seq":7}`.
///
/// `seq` is the symbol's sequence number, the same on every node (omitted
/// while unassigned): a client that sees a jump knows ticks were conflated
/// away (it always has the newest price) and may fetch them from history.
pub fn encode_tick(tick: &Tick) -> String {
    let mut out = String::with_capacity(128);
    out.push_str(r#"{"type":"tick","symbol":""#);
    out.push_str(tick.symbol.as_str());
    out.push_str(r#"","price":"#);
    push_f64(&mut out, tick.price);
    out.push_str(r#","timestamp":""#);
    out.push_str(&tick.timestamp.to_rfc3339());
    out.push('"');
    if let Some(v) = tick.volume {
        out.push_str(r#","volume":"#);
        push_f64(&mut out, v);
    }
    if tick.seq != 0 {
        let _ = write!(out, r#","seq":{}"#, tick.seq);
    }
    out.push('}');
    out
}

/// Writes a finite f64 as a JSON number (Rust's shortest round-trip form).
fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::Timestamp;

    #[test]
    fn tick_is_valid_json_with_every_field() {
        let t = Tick::new(
            Symbol::new("BINANCE:BTCUSDT").unwrap(),
            64_000.5,
            Timestamp::parse_rfc3339("2026-05-12T15:04:05.123456Z").unwrap(),
            Some(0.25),
        )
        .unwrap();
        let unsequenced: serde_json::Value = serde_json::from_str(&encode_tick(&t)).unwrap();
        assert!(unsequenced.get("seq").is_none());
        let t = t.sequenced(crate::Position {
            epoch: crate::Epoch::from_raw(7),
            seq: 9,
        });
        let v: serde_json::Value = serde_json::from_str(&encode_tick(&t)).unwrap();
        assert_eq!(v["type"], "tick");
        assert_eq!(v["symbol"], "BINANCE:BTCUSDT");
        assert_eq!(v["price"], 64_000.5);
        assert_eq!(v["timestamp"], "2026-05-12T15:04:05.123456Z");
        assert_eq!(v["volume"], 0.25);
        assert_eq!(v["seq"], 9);
    }

    #[test]
    fn control_messages_are_valid_json() {
        let syms = [Symbol::new("AAPL").unwrap(), Symbol::new("MSFT").unwrap()];
        let msgs = [
            ServerMessage::Subscribed {
                symbols: &syms,
                streams: &[],
                id: Some("\"a\""),
            },
            ServerMessage::Unsubscribed {
                symbols: &syms[..1],
                id: None,
            },
            ServerMessage::Error {
                code: ErrorCode::InvalidSymbol,
                message: "bad \"x\"\n",
                id: Some("7"),
            },
            ServerMessage::Pong { id: None },
            ServerMessage::CandlesSubscribed {
                symbols: &syms,
                intervals: &[Interval::M1, Interval::D1],
                id: Some("3"),
            },
            ServerMessage::CandlesUnsubscribed {
                symbols: &syms[..1],
                intervals: &[Interval::S1],
                id: None,
            },
            ServerMessage::Identified {
                user_id: 7,
                id: None,
            },
            ServerMessage::Alert {
                alert: r#"{"id":1}"#,
            },
        ];
        for m in msgs {
            let s = m.encode();
            let v: serde_json::Value =
                serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!(v["type"].is_string());
        }
        let epoch: Epoch = "k3f9".parse().unwrap();
        let streams = [
            StreamState {
                symbol: syms[0],
                epoch,
                seq: 135,
                recovered: Some(true),
            },
            StreamState {
                symbol: syms[1],
                epoch,
                seq: 0,
                recovered: None,
            },
        ];
        let v: serde_json::Value = serde_json::from_str(
            &ServerMessage::Subscribed {
                symbols: &syms,
                streams: &streams,
                id: Some("\"a\""),
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(v["symbols"], serde_json::json!(["AAPL", "MSFT"]));
        assert_eq!(
            v["streams"],
            serde_json::json!({
                "AAPL": {"epoch": "k3f9", "seq": 135, "recovered": true},
                "MSFT": {"epoch": "k3f9", "seq": 0},
            })
        );
        assert_eq!(v["id"], "a");
    }
}
