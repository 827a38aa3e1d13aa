//! Reads the few fields the load test needs from a server message, in place:
//! no JSON tree, no allocation per tick.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The keys read from every tick, their searchers built once.
static SYMBOL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""symbol":""#));
static TIMESTAMP_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#""timestamp":""#));
static SEQ_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""seq":"#));

/// The fields of a tick that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickFields<'a> {
    pub symbol: &'a [u8],
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    pub seq: u64,
}

/// What a MarketMux server message is, as far as the load test cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    Tick(TickFields<'a>),
    /// `{"type":"candle",...}`; `closed`: its interval ended.
    Candle {
        closed: bool,
    },
    /// `{"type":"subscribed",...}`: the raw message, read by [`crate::recovery`].
    Subscribed(&'a [u8]),
    /// `{"type":"error",...}`: the raw message, for the report.
    Error(&'a [u8]),
    /// A tick whose symbol, timestamp or seq could not be read.
    Malformed,
    Other,
}

/// Classifies a MarketMux server text message.
pub fn classify(msg: &[u8]) -> ServerMessage<'_> {
    if msg.starts_with(br#"{"type":"tick""#) || find(msg, br#""type":"tick""#).is_some() {
        return tick_fields(msg).map_or(ServerMessage::Malformed, ServerMessage::Tick);
    }
    if msg.starts_with(br#"{"type":"candle""#) || find(msg, br#""type":"candle""#).is_some() {
        return ServerMessage::Candle {
            closed: find(msg, br#""closed":true"#).is_some(),
        };
    }
    if find(msg, br#""type":"subscribed""#).is_some() {
        ServerMessage::Subscribed(msg)
    } else if find(msg, br#""type":"error""#).is_some() {
        ServerMessage::Error(msg)
    } else {
        ServerMessage::Other
    }
}

/// Reads `symbol`, `timestamp` and `seq` from a tick object (the same payload
/// for MarketMux frames and NATS messages).
pub fn tick_fields(msg: &[u8]) -> Option<TickFields<'_>> {
    let symbol = string_field(msg, &SYMBOL_KEY)?;
    let ts = string_field(msg, &TIMESTAMP_KEY)?;
    let seq = number_field(msg, &SEQ_KEY)?;
    Some(TickFields {
        symbol,
        timestamp_ns: crate::rfc3339::parse(ts)?,
        seq,
    })
}

fn string_field<'a>(msg: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    let start = key.find(msg)? + key.needle().len();
    let len = msg[start..].iter().position(|&c| c == b'"')?;
    Some(&msg[start..start + len])
}

fn number_field(msg: &[u8], key: &Finder<'_>) -> Option<u64> {
    let start = key.find(msg)? + key.needle().len();
    let digits = msg[start..].iter().take_while(|c| c.is_ascii_digit());
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// Position of `needle` in `hay` (memchr's SIMD search).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: &[u8] = br#"{"type":"tick","symbol":"AAPL","price":150.25,"timestamp":"2026-05-12T15:04:05.123456Z","volume":3,"seq":42}"#;

    #[test]
    fn reads_a_tick() {
        let ServerMessage::Tick(t) = classify(TICK) else {
            panic!("not a tick");
        };
        assert_eq!(t.symbol, b"AAPL");
        assert_eq!(t.seq, 42);
        assert_eq!(
            t.timestamp_ns,
            crate::rfc3339::parse(b"2026-05-12T15:04:05.123456Z").unwrap()
        );
    }

    #[test]
    fn field_order_does_not_matter() {
        let m = br#"{"seq":7,"timestamp":"1970-01-01T00:00:01Z","symbol":"X","type":"tick"}"#;
        assert_eq!(
            classify(m),
            ServerMessage::Tick(TickFields {
                symbol: b"X",
                timestamp_ns: 1_000_000_000,
                seq: 7
            })
        );
    }

    #[test]
    fn candles() {
        let open = br#"{"type":"candle","symbol":"AAPL","interval":"1m","start":"2026-12-02T15:04:00Z","open":1,"high":2,"low":0.5,"close":1.5,"volume":3,"ticks":4,"closed":false}"#;
        assert_eq!(classify(open), ServerMessage::Candle { closed: false });
        let closed = br#"{"interval":"1m","closed":true,"type":"candle","symbol":"AAPL"}"#;
        assert_eq!(classify(closed), ServerMessage::Candle { closed: true });
    }

    #[test]
    fn other_messages() {
        let s = br#"{"type":"subscribed","symbols":["AAPL"]}"#;
        assert_eq!(classify(s), ServerMessage::Subscribed(s));
        let e = br#"{"type":"error","code":"invalid_symbol","message":"x"}"#;
        assert_eq!(classify(e), ServerMessage::Error(e));
        assert_eq!(classify(br#"{"type":"pong"}"#), ServerMessage::Other);
        assert_eq!(
            classify(br#"{"type":"tick","symbol":"A","timestamp":"bad","seq":1}"#),
            ServerMessage::Malformed
        );
        assert_eq!(
            classify(br#"{"type":"tick","symbol":"A","timestamp":"1970-01-01T00:00:01Z"}"#),
            ServerMessage::Malformed
        );
    }

    #[test]
    fn find_edges() {
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"abc", b"c"), Some(2));
        assert_eq!(find(b"abc", b""), None);
    }
}
