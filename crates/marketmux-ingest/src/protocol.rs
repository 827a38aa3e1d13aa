//! The Finnhub trade WebSocket protocol.
//!
//! Server to client: `{"type":"trade","data":[{"s":"AAPL","p":150.2,"v":10,"t":1715526245123},…]}`
//! (trades batched, `t` in milliseconds), `{"type":"ping"}`, and
//! `{"type":"error","msg":"…"}`. Client to server: `{"type":"subscribe","symbol":"AAPL"}`.

use marketmux_core::{Symbol, Tick, Timestamp};
use serde::Deserialize;

/// One trade in a `trade` message.
#[derive(Debug, Clone, Deserialize)]
pub struct Trade {
    /// Symbol.
    pub s: String,
    /// Price.
    pub p: f64,
    /// Volume.
    #[serde(default)]
    pub v: Option<f64>,
    /// Milliseconds since the epoch.
    pub t: i64,
}

/// A message from the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// A batch of trades.
    Trade {
        /// The trades, oldest first.
        #[serde(default)]
        data: Vec<Trade>,
    },
    /// Keep-alive; answered with `{"type":"pong"}`.
    Ping,
    /// The server refused something (bad token, bad symbol).
    Error {
        /// What the server said.
        #[serde(default)]
        msg: String,
    },
    /// Anything else (news, future types): ignored.
    #[serde(other)]
    Other,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

/// The frame subscribing to `symbol`.
pub fn subscribe(symbol: &Symbol) -> String {
    // A symbol holds only `A-Z a-z 0-9 . : - _ /`: nothing to escape in JSON.
    format!(r#"{{"type":"subscribe","symbol":"{symbol}"}}"#)
}

/// The answer to a server ping.
pub const PONG: &str = r#"{"type":"pong"}"#;

/// Converts a trade; `Err` says why it is not a valid tick.
pub fn trade_to_tick(trade: &Trade) -> Result<Tick, String> {
    let symbol = Symbol::new(&trade.s).map_err(|e| format!("symbol {:?}: {e}", trade.s))?;
    let timestamp = Timestamp(trade.t.saturating_mul(1_000_000));
    Tick::new(symbol, trade.p, timestamp, trade.v).map_err(|e| format!("{}: {e}", trade.s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_batched_trades() {
        let m = parse(r#"{"type":"trade","data":[{"s":"AAPL","p":150.25,"v":10,"t":1715526245123,"c":["1"]},{"s":"BINANCE:BTCUSDT","p":64000.5,"v":0.01,"t":1715526245124}]}"#).unwrap();
        let ServerMessage::Trade { data } = m else {
            panic!("{m:?}")
        };
        let ticks: Vec<Tick> = data.iter().map(|t| trade_to_tick(t).unwrap()).collect();
        assert_eq!(ticks[0].symbol.as_str(), "AAPL");
        assert_eq!(ticks[0].price, 150.25);
        assert_eq!(ticks[0].volume, Some(10.0));
        assert_eq!(ticks[0].timestamp.to_rfc3339(), "2024-05-12T15:04:05.123Z");
        assert_eq!(ticks[1].symbol.as_str(), "BINANCE:BTCUSDT");
    }

    #[test]
    fn parses_ping_error_and_unknown() {
        assert!(matches!(
            parse(r#"{"type":"ping"}"#).unwrap(),
            ServerMessage::Ping
        ));
        assert!(
            matches!(parse(r#"{"type":"error","msg":"Invalid token"}"#).unwrap(), ServerMessage::Error { msg } if msg == "Invalid token")
        );
        assert!(matches!(
            parse(r#"{"type":"news","data":[]}"#).unwrap(),
            ServerMessage::Other
        ));
        assert!(parse("not json").is_err());
    }

    #[test]
    fn rejects_bad_trades() {
        let bad = Trade {
            s: "AAPL".into(),
            p: -1.0,
            v: None,
            t: 0,
        };
        assert!(trade_to_tick(&bad).is_err());
        let bad = Trade {
            s: "A B".into(),
            p: 1.0,
            v: None,
            t: 0,
        };
        assert!(trade_to_tick(&bad).is_err());
    }

    #[test]
    fn builds_subscribe_frames() {
        let s = Symbol::new("AAPL").unwrap();
        assert_eq!(subscribe(&s), r#"{"type":"subscribe","symbol":"AAPL"}"#);
    }
}
