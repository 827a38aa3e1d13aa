//! The stream types of the bus: where a tick came from ([`Origin`]), what a
//! new subscriber finds ([`StreamOpen`]), one page of history ([`HistoryPage`]),
//! and how much history is kept ([`HistoryConfig`]).

use std::time::Duration;

use marketmux_core::{Epoch, Position, Tick};

/// Most ticks one history page returns.
pub const MAX_HISTORY_PAGE: usize = 1_000;

/// Where a tick came from, so a redelivery is recognised where `seq` is
/// assigned: a Kafka record's producer and that producer's per-symbol
/// sequence number (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The producer: a random id it drew once per process.
    pub producer_id: u64,
    /// The tick's number in that producer's sequence for its symbol.
    pub sequence: u64,
}

/// A symbol's stream as a new subscriber finds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOpen {
    /// The symbol's epoch (created by this call when the symbol had none)
    /// and its last assigned seq (0 when none).
    pub head: Position,
    /// The newest tick, if any (what a subscriber without a served `since` gets).
    pub latest: Option<Tick>,
    /// `Some(every kept tick with seq > since.seq, in increasing seq)` when
    /// `since` was given and can be served (same epoch, `since.seq <= head.seq`,
    /// and every tick after `since.seq` still kept); `None` otherwise.
    pub replay: Option<Vec<Tick>>,
}

/// One page of a symbol's history.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryPage {
    /// No epoch and no tick known for this symbol.
    Unknown,
    /// The tick after `since` is no longer kept.
    Gone {
        /// The symbol's epoch.
        epoch: Epoch,
    },
    /// The first `limit` kept ticks after `since`, or the last `limit`
    /// without it, in increasing seq.
    Ticks {
        /// The symbol's epoch.
        epoch: Epoch,
        /// The ticks, in increasing seq.
        ticks: Vec<Tick>,
    },
}

/// How much history each symbol keeps where `seq` is assigned. Either bound
/// at 0 turns history off (a `since` is then served only when nothing
/// happened after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The newest this many ticks of each symbol (`--history-size`).
    pub size: usize,
    /// None older than this (`--history-ttl-secs`).
    pub ttl: Duration,
}

impl HistoryConfig {
    /// No history.
    pub const OFF: HistoryConfig = HistoryConfig {
        size: 0,
        ttl: Duration::ZERO,
    };

    /// Whether any tick is kept.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

impl Default for HistoryConfig {
    /// 1,000 ticks, none older than 10 minutes.
    fn default() -> Self {
        Self {
            size: 1_000,
            ttl: Duration::from_secs(600),
        }
    }
}
