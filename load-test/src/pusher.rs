//! The Pusher side of the comparison (Sockudo speaks it): the socket path,
//! the subscribe and pong messages a client sends, and reading what the
//! server sends, in place.
//!
//! A channel event arrives as `{"event":"tick","channel":"AAPL","data":"..."}`
//! where `data` is the tick JSON as a string, its quotes escaped. The channel
//! names the symbol; the timestamp and `seq` are read from the escaped text
//! without unescaping it.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::message::TickFields;
use crate::ws::{self, opcode};

/// The event name ticks are published under.
pub const TICK_EVENT: &str = "tick";
/// What a client answers `pusher:ping` with.
pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

static EVENT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""event":""#));
static CHANNEL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""channel":""#));
/// `\"timestamp\":\"` inside a string-encoded `data`.
static ESCAPED_TIMESTAMP: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#"\"timestamp\":\""#));
static ESCAPED_SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#"\"seq\":"#));
/// The same keys when `data` is an object rather than a string.
static PLAIN_TIMESTAMP: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#""timestamp":""#));
static PLAIN_SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""seq":"#));

/// The socket path for app `key`: protocol 7, as Pusher's own clients send.
pub fn socket_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=load-test&version=1")
}

/// What a Pusher server message is, as far as the load test cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `pusher:connection_established`: the socket may subscribe now.
    Established,
    /// `pusher_internal:subscription_succeeded`: one channel acknowledged.
    Subscribed,
    /// `pusher:ping`: answer with [`PONG`].
    Ping,
    /// `pusher:error` or `pusher:subscription_error`: the raw message.
    Error(&'a [u8]),
    /// A tick on a channel.
    Tick(TickFields<'a>),
    /// A tick event whose channel, timestamp or seq could not be read.
    Malformed,
    Other,
}

/// Classifies one server text message.
pub fn classify(msg: &[u8]) -> Event<'_> {
    let Some(event) = string_field(msg, &EVENT_KEY) else {
        return Event::Malformed;
    };
    match event {
        b"tick" => tick(msg).map_or(Event::Malformed, Event::Tick),
        b"pusher:connection_established" => Event::Established,
        b"pusher_internal:subscription_succeeded" => Event::Subscribed,
        b"pusher:ping" => Event::Ping,
        b"pusher:error" | b"pusher:subscription_error" => Event::Error(msg),
        _ => Event::Other,
    }
}

/// Reads the symbol (the channel), timestamp and `seq` of a tick event.
fn tick(msg: &[u8]) -> Option<TickFields<'_>> {
    let symbol = string_field(msg, &CHANNEL_KEY)?;
    let (ts, seq) = match escaped_field(msg, &ESCAPED_TIMESTAMP) {
        Some(ts) => (ts, number_field(msg, &ESCAPED_SEQ)?),
        None => (
            string_field(msg, &PLAIN_TIMESTAMP)?,
            number_field(msg, &PLAIN_SEQ)?,
        ),
    };
    Some(TickFields {
        symbol,
        timestamp_ns: crate::rfc3339::parse(ts)?,
        seq,
    })
}

/// The value after `key` up to the closing quote.
fn string_field<'a>(msg: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    let start = key.find(msg)? + key.needle().len();
    let len = memchr::memchr(b'"', &msg[start..])?;
    Some(&msg[start..start + len])
}

/// The value after `key` up to the closing `\"` (a timestamp holds no backslash).
fn escaped_field<'a>(msg: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    let start = key.find(msg)? + key.needle().len();
    let len = memchr::memchr(b'\\', &msg[start..])?;
    Some(&msg[start..start + len])
}

fn number_field(msg: &[u8], key: &Finder<'_>) -> Option<u64> {
    let start = key.find(msg)? + key.needle().len();
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in msg[start..].iter().take_while(|c| c.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// One `pusher:subscribe` frame per channel, written together; the server
/// acknowledges each with `pusher_internal:subscription_succeeded`.
pub fn subscribe_frames(channels: &[&str], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(channels.len() * 72);
    for c in channels {
        let m = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{c}"}}}}"#);
        out.extend(ws::client_frame(opcode::TEXT, m.as_bytes(), mask));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Sockudo 5.2.0 sends for an event published through the HTTP API.
    const TICK: &[u8] = br#"{"event":"tick","channel":"AAPL","data":"{\"type\":\"tick\",\"symbol\":\"AAPL\",\"price\":100.07,\"timestamp\":\"2026-12-06T14:00:05.123456789Z\",\"seq\":7}"}"#;

    #[test]
    fn reads_a_tick_from_string_data() {
        let Event::Tick(t) = classify(TICK) else {
            panic!("not a tick");
        };
        assert_eq!(t.symbol, b"AAPL");
        assert_eq!(t.seq, 7);
        assert_eq!(
            Some(t.timestamp_ns),
            crate::rfc3339::parse(b"2026-12-06T14:00:05.123456789Z")
        );
    }

    #[test]
    fn reads_a_tick_in_any_field_order_and_with_object_data() {
        let m = br#"{"channel":"S0001","data":"{\"seq\":12,\"timestamp\":\"1970-01-01T00:00:01Z\"}","event":"tick"}"#;
        assert_eq!(
            classify(m),
            Event::Tick(TickFields {
                symbol: b"S0001",
                timestamp_ns: 1_000_000_000,
                seq: 12
            })
        );
        let m = br#"{"event":"tick","channel":"X","data":{"timestamp":"1970-01-01T00:00:02Z","seq":3}}"#;
        assert_eq!(
            classify(m),
            Event::Tick(TickFields {
                symbol: b"X",
                timestamp_ns: 2_000_000_000,
                seq: 3
            })
        );
    }

    #[test]
    fn a_tick_without_what_latency_needs_is_malformed() {
        for m in [
            &br#"{"event":"tick","channel":"A","data":"{\"seq\":1}"}"#[..],
            br#"{"event":"tick","channel":"A","data":"{\"timestamp\":\"bad\",\"seq\":1}"}"#,
            br#"{"event":"tick","channel":"A","data":"{\"timestamp\":\"1970-01-01T00:00:01Z\"}"}"#,
            br#"{"event":"tick","data":"{\"timestamp\":\"1970-01-01T00:00:01Z\",\"seq\":1}"}"#,
            br#"{"channel":"A"}"#,
        ] {
            assert_eq!(
                classify(m),
                Event::Malformed,
                "{}",
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn control_events() {
        let est = br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
        assert_eq!(classify(est), Event::Established);
        let ok =
            br#"{"event":"pusher_internal:subscription_succeeded","channel":"AAPL","data":"{}"}"#;
        assert_eq!(classify(ok), Event::Subscribed);
        assert_eq!(
            classify(br#"{"event":"pusher:ping","data":{}}"#),
            Event::Ping
        );
        let err =
            br#"{"event":"pusher:error","data":{"code":4001,"message":"App key x not found"}}"#;
        assert_eq!(classify(err), Event::Error(err));
        assert_eq!(
            classify(br#"{"event":"pusher:cache_miss","channel":"A"}"#),
            Event::Other
        );
    }

    #[test]
    fn subscribe_frames_name_each_channel() {
        let f = subscribe_frames(&["AAPL", "MSFT"], [0; 4]);
        let first = br#"{"event":"pusher:subscribe","data":{"channel":"AAPL"}}"#;
        assert_eq!(f[1] & 0x7f, first.len() as u8);
        assert_eq!(&f[6..6 + first.len()], first);
        let second = &f[6 + first.len()..];
        assert!(second.ends_with(br#"{"channel":"MSFT"}}"#));
        assert_eq!(
            socket_path("k"),
            "/app/k?protocol=7&client=load-test&version=1"
        );
    }
}
