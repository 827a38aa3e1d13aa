//! Where each symbol a client follows stands, across its reconnects: the
//! position `{seq, epoch}` it resubscribes from (`since`), and what each
//! `subscribed` reply and each tick mean for the counts (replayed, skipped,
//! duplicated).
//!
//! A server that names no epoch (an older gateway, NATS) numbers ticks per
//! connection: the tracker then only counts `seq` jumps, as before, and
//! never asks for recovery.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;

/// Longest epoch kept; a longer one is not a position this client resends.
pub const MAX_EPOCH_LEN: usize = 64;

/// One symbol's entry in a `subscribed` reply's `streams`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamInfo {
    pub epoch: String,
    /// The symbol's last assigned `seq` when the subscribe was served.
    pub seq: u64,
    /// Present when the subscribe carried a position for this symbol.
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// The parts of `{"type":"subscribed",...}` the load test reads.
#[derive(Debug, Default, Deserialize)]
pub struct SubscribedReply {
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub streams: HashMap<String, StreamInfo>,
}

/// Parses a `subscribed` reply (a few per connection: a full parse is fine here).
pub fn parse_subscribed(msg: &[u8]) -> Option<SubscribedReply> {
    serde_json::from_slice(msg).ok()
}

/// What a `subscribed` reply did to one stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resubscribed {
    /// The subscribe carried this stream's position.
    pub resumed: bool,
    /// The server will replay every tick after it.
    pub recovered: bool,
    /// A position was sent and not served (`recovered:false`, or no answer to it).
    pub refused: bool,
    /// The epoch differs from the one the position was in: the stream started again.
    pub new_epoch: bool,
    /// The reply named no epoch: `seq` is numbered per connection.
    pub unnumbered: bool,
}

/// What one received `seq` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than anything seen in this epoch.
    New {
        /// Ticks skipped between the previous `seq` and this one.
        gap: u64,
        /// The gap lies where a resubscribe's replay should have covered it
        /// (between the position and the first live tick): ticks missing
        /// across a reconnect, not conflated by a slow socket.
        seam: bool,
        /// Part of a replay (at or below the `seq` the `subscribed` reply named).
        replayed: bool,
    },
    /// At or below a `seq` already seen in this epoch.
    Duplicate,
}

#[derive(Debug, Clone, Default)]
struct Stream {
    /// None until a server names one.
    epoch: Option<Box<str>>,
    /// Highest `seq` seen (or, after a fresh subscribe, the one the reply named).
    last: u64,
    /// Ticks up to this `seq` are the replay of a recovered subscribe.
    replay_until: u64,
    /// After a fresh subscribe: the snapshot may be at or below `last`.
    fresh: bool,
    /// From a resubscribe until the first live tick.
    seam: bool,
    /// The subscribe in flight carries this stream's position.
    resuming: bool,
}

/// One client's streams, by slot (the index of the symbol in its subscription).
#[derive(Debug, Clone)]
pub struct StreamTracker {
    streams: Vec<Stream>,
}

impl StreamTracker {
    /// `slots` streams, none with a position yet.
    pub fn new(slots: usize) -> Self {
        Self {
            streams: vec![Stream::default(); slots],
        }
    }

    /// The position to resubscribe `slot` from, once a server named its epoch.
    pub fn position(&self, slot: usize) -> Option<(u64, &str)> {
        let s = &self.streams[slot];
        s.epoch.as_deref().map(|e| (s.last, e))
    }

    /// Notes that the subscribe being sent carries `slot`'s position.
    pub fn resuming(&mut self, slot: usize) {
        self.streams[slot].resuming = true;
    }

    /// A new connection whose server numbers ticks per connection: start over.
    pub fn reset(&mut self, slot: usize) {
        self.streams[slot] = Stream::default();
    }

    /// Applies `slot`'s entry of a `subscribed` reply (None: the reply has none).
    pub fn subscribed(&mut self, slot: usize, info: Option<&StreamInfo>) -> Resubscribed {
        let s = &mut self.streams[slot];
        let resumed = std::mem::take(&mut s.resuming);
        let Some(info) = info.filter(|i| i.epoch.len() <= MAX_EPOCH_LEN) else {
            *s = Stream::default();
            return Resubscribed {
                resumed,
                refused: resumed,
                unnumbered: true,
                ..Resubscribed::default()
            };
        };
        let same_epoch = s.epoch.as_deref() == Some(info.epoch.as_str());
        let recovered = resumed && same_epoch && info.recovered == Some(true);
        let out = Resubscribed {
            resumed,
            recovered,
            refused: resumed && !recovered,
            new_epoch: s.epoch.is_some() && !same_epoch,
            unnumbered: false,
        };
        if recovered {
            // The replay runs from `last + 1` to `info.seq`, then live ticks.
            s.replay_until = info.seq;
            s.seam = true;
            s.fresh = false;
        } else if same_epoch {
            // Refused in the same epoch (too old for the history), or asked
            // without a position (`--no-recovery`): the latest tick comes
            // next, and the jump to it is what this client missed.
            s.replay_until = 0;
            s.seam = true;
            s.fresh = false;
        } else {
            // A first subscribe, or a new life of the stream: it starts here.
            *s = Stream {
                epoch: Some(info.epoch.as_str().into()),
                last: info.seq,
                fresh: true,
                ..Stream::default()
            };
        }
        out
    }

    /// Whether a server named `slot`'s epoch.
    pub fn has_epoch(&self, slot: usize) -> bool {
        self.streams[slot].epoch.is_some()
    }

    /// Where live ticks resume without an epoch (the snapshot after subscribe).
    pub fn baseline(&mut self, slot: usize, seq: u64) {
        self.streams[slot].last = seq;
    }

    /// Records a tick of `slot`.
    pub fn observe(&mut self, slot: usize, seq: u64) -> Verdict {
        let s = &mut self.streams[slot];
        if std::mem::take(&mut s.fresh) && seq <= s.last {
            // The snapshot sent after a fresh subscribe.
            return Verdict::New {
                gap: 0,
                seam: false,
                replayed: false,
            };
        }
        if seq <= s.last {
            return Verdict::Duplicate;
        }
        let gap = seq - s.last - 1;
        let seam = s.seam;
        let replayed = seq <= s.replay_until;
        if !replayed {
            s.seam = false;
        }
        s.last = seq;
        Verdict::New {
            gap,
            seam,
            replayed,
        }
    }
}

/// One member of a subscribe's `since` object: `"SYMBOL":{"seq":N,"epoch":"E"}`.
pub fn since_entry(symbol: &str, seq: u64, epoch: &str) -> String {
    // Symbols are validated by the CLI; the epoch came from the network: escape it.
    let epoch = serde_json::to_string(epoch).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(symbol.len() + epoch.len() + 32);
    let _ = write!(out, r#""{symbol}":{{"seq":{seq},"epoch":{epoch}}}"#);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(epoch: &str, seq: u64, recovered: Option<bool>) -> StreamInfo {
        StreamInfo {
            epoch: epoch.into(),
            seq,
            recovered,
        }
    }

    fn new(gap: u64, seam: bool, replayed: bool) -> Verdict {
        Verdict::New {
            gap,
            seam,
            replayed,
        }
    }

    /// A tracker whose one stream has seen 1..=`upto` in epoch "e1".
    fn seen(upto: u64) -> StreamTracker {
        let mut t = StreamTracker::new(1);
        t.subscribed(0, Some(&info("e1", 0, None)));
        for seq in 1..=upto {
            assert_eq!(t.observe(0, seq), new(0, false, false));
        }
        t
    }

    #[test]
    fn a_jump_on_a_live_socket_is_a_gap() {
        let mut t = seen(2);
        assert_eq!(t.observe(0, 5), new(2, false, false));
        assert_eq!(t.position(0), Some((5, "e1")));
    }

    #[test]
    fn a_seq_at_or_below_the_last_is_a_duplicate() {
        let mut t = seen(3);
        assert_eq!(t.observe(0, 3), Verdict::Duplicate);
        assert_eq!(t.observe(0, 1), Verdict::Duplicate);
        assert_eq!(t.observe(0, 4), new(0, false, false));
    }

    #[test]
    fn the_snapshot_after_a_fresh_subscribe_is_neither_gap_nor_duplicate() {
        let mut t = StreamTracker::new(1);
        assert_eq!(t.position(0), None, "no epoch yet: nothing to resume");
        let r = t.subscribed(0, Some(&info("e1", 40, None)));
        assert_eq!(r, Resubscribed::default());
        assert_eq!(t.position(0), Some((40, "e1")));
        assert_eq!(t.observe(0, 40), new(0, false, false));
        assert_eq!(t.observe(0, 40), Verdict::Duplicate, "only once");
        assert_eq!(t.observe(0, 41), new(0, false, false));
        // Without a snapshot, the first live tick follows the reply's seq.
        let mut t = StreamTracker::new(1);
        t.subscribed(0, Some(&info("e1", 40, None)));
        assert_eq!(t.observe(0, 43), new(2, false, false));
    }

    #[test]
    fn a_replay_fills_the_gap_of_a_reconnect() {
        let mut t = seen(5);
        // Disconnected while 6..=9 were published; resubscribe from 5.
        assert_eq!(t.position(0), Some((5, "e1")));
        t.resuming(0);
        let r = t.subscribed(0, Some(&info("e1", 9, Some(true))));
        assert_eq!(
            r,
            Resubscribed {
                resumed: true,
                recovered: true,
                ..Resubscribed::default()
            }
        );
        for seq in 6..=9 {
            assert_eq!(t.observe(0, seq), new(0, true, true));
        }
        // The first live tick closes the seam; later jumps are conflation.
        assert_eq!(t.observe(0, 10), new(0, true, false));
        assert_eq!(t.observe(0, 12), new(1, false, false));
    }

    #[test]
    fn a_hole_in_the_replay_or_at_the_seam_is_missing() {
        let mut t = seen(5);
        t.resuming(0);
        t.subscribed(0, Some(&info("e1", 9, Some(true))));
        assert_eq!(t.observe(0, 6), new(0, true, true));
        assert_eq!(t.observe(0, 8), new(1, true, true));
        assert_eq!(t.observe(0, 8), Verdict::Duplicate);
        assert_eq!(t.observe(0, 11), new(2, true, false), "9 and 10 skipped");
    }

    #[test]
    fn a_refused_position_leaves_the_jump_to_the_latest_tick_missing() {
        let mut t = seen(5);
        t.resuming(0);
        let r = t.subscribed(0, Some(&info("e1", 2000, Some(false))));
        assert!(r.resumed && r.refused && !r.recovered && !r.new_epoch);
        assert_eq!(t.observe(0, 2000), new(1994, true, false));
        assert_eq!(t.observe(0, 2001), new(0, false, false));
    }

    #[test]
    fn without_since_the_jump_after_a_reconnect_is_missing() {
        let mut t = seen(5);
        let r = t.subscribed(0, Some(&info("e1", 9, None)));
        assert_eq!(r, Resubscribed::default(), "nothing asked, nothing refused");
        assert_eq!(t.observe(0, 9), new(3, true, false));
        assert_eq!(t.observe(0, 10), new(0, false, false));
    }

    #[test]
    fn a_new_epoch_starts_the_stream_again() {
        let mut t = seen(500);
        t.resuming(0);
        let r = t.subscribed(0, Some(&info("e2", 3, Some(false))));
        assert!(r.resumed && r.refused && r.new_epoch);
        assert_eq!(t.position(0), Some((3, "e2")));
        // seq 3 is the new epoch's latest tick, not a duplicate of the old 3.
        assert_eq!(t.observe(0, 3), new(0, false, false));
        assert_eq!(t.observe(0, 4), new(0, false, false));
        // Even when the server claims recovery, another epoch is not ours.
        let mut t = seen(5);
        t.resuming(0);
        let r = t.subscribed(0, Some(&info("e9", 7, Some(true))));
        assert!(r.refused && r.new_epoch && !r.recovered);
    }

    #[test]
    fn a_stream_restarting_under_a_live_subscription_counts_from_one() {
        // The node announces it with a `subscribed` of that symbol alone.
        let mut t = seen(7);
        let r = t.subscribed(0, Some(&info("e2", 0, None)));
        assert!(r.new_epoch && !r.resumed && !r.refused);
        assert_eq!(t.observe(0, 1), new(0, false, false));
        assert_eq!(t.observe(0, 2), new(0, false, false));
        assert_eq!(t.position(0), Some((2, "e2")));
    }

    #[test]
    fn a_reply_without_streams_falls_back_to_per_connection_numbering() {
        let mut t = seen(5);
        t.resuming(0);
        let r = t.subscribed(0, None);
        assert!(r.resumed && r.refused && r.unnumbered);
        assert_eq!(t.position(0), None);
        assert!(!t.has_epoch(0));
        t.baseline(0, 10);
        assert_eq!(t.observe(0, 12), new(1, false, false));
        // Without any reply (NATS): from 0, a first tick 4 means 3 skipped.
        let mut t = StreamTracker::new(2);
        assert_eq!(t.observe(1, 4), new(3, false, false));
        t.reset(1);
        assert_eq!(t.observe(1, 1), new(0, false, false));
    }

    #[test]
    fn an_overlong_epoch_is_not_a_position() {
        let mut t = StreamTracker::new(1);
        t.subscribed(0, Some(&info(&"x".repeat(MAX_EPOCH_LEN + 1), 1, None)));
        assert_eq!(t.position(0), None);
    }

    #[test]
    fn parses_the_reply_and_writes_since() {
        let m = br#"{"type":"subscribed","symbols":["AAPL","MSFT"],"id":3,
            "streams":{"AAPL":{"epoch":"k3f9","seq":135,"recovered":true},"MSFT":{"epoch":"k3f9","seq":77}}}"#;
        let r = parse_subscribed(m).unwrap();
        assert_eq!(r.symbols, ["AAPL", "MSFT"]);
        assert_eq!(r.streams["AAPL"], info("k3f9", 135, Some(true)));
        assert_eq!(r.streams["MSFT"], info("k3f9", 77, None));
        let old = parse_subscribed(br#"{"type":"subscribed","symbols":["A"]}"#).unwrap();
        assert!(old.streams.is_empty());
        assert!(parse_subscribed(br#"{"type":"subscribed","streams":{"A":{"seq":-1}}}"#).is_none());

        let since = format!(
            "{{{},{}}}",
            since_entry("AAPL", 120, "k3f9"),
            since_entry("B", 0, "q\"x")
        );
        let v: serde_json::Value = serde_json::from_str(&since).unwrap();
        assert_eq!(v["AAPL"]["seq"], 120);
        assert_eq!(v["AAPL"]["epoch"], "k3f9");
        assert_eq!(v["B"]["epoch"], "q\"x");
    }
}
