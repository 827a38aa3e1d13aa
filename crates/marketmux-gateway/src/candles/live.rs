//! [`CandleHub`]: live candles on a node, once per symbol and interval,
//! however many sockets follow them.
//!
//! Candles are built where `seq` is assigned (the bus); the node keeps a
//! copy of each followed symbol's current candles and moves it with the
//! ticks the bus delivers, exactly as the bus did: a tick updates an
//! interval unless the bus marked it late for it ([`Tick::candles_late`])
//! or the copy already has it (its `seq`). So every node sends the numbers
//! the bus stored. The copy starts from the stored candles, read when the
//! symbol gets its first candle subscriber on the node
//! ([`CandleHub::join`] then [`CandleHub::loaded`]); ticks that arrive
//! during the read wait, then apply.
//!
//! Each change is encoded once and queued to every subscriber of that
//! interval in a conflation slot of its own ([`ClientQueue::push_update`]):
//! a slow client gets the newest state of each candle, a client with a rate
//! cap on that interval at most one update per its interval. A candle that
//! closes (a tick of a later interval, or the clock at its end plus the
//! grace, [`CandleHub::close_due`]) is sent once more with `closed:true`,
//! never conflated away nor skipped by a cap: it replaces the unsent update
//! of that candle ([`ClientQueue::push_update_final`]).
//!
//! Bounds: ticks waiting for a read, [`MAX_PENDING`] per symbol (past it the
//! read's result is refused and the symbol's subscribers get an error).
//! Subscriptions are bounded per socket, and the symbols followed per node
//! (`max_topics`), by the caller ([`super::session`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use indexmap::IndexMap;
use marketmux_bus::CandlePage;
use marketmux_core::candle::encode_candle;
use marketmux_core::{Candle, Epoch, ErrorCode, Interval, ServerMessage, Symbol, Tick, Timestamp};
use marketmux_hub::{ClientId, ClientQueue, Interest, InterestListener};
use parking_lot::Mutex;

use crate::ws::frame;
use tracing::Instrument as _;

/// Most ticks of one symbol held while its stored candles are read.
pub const MAX_PENDING: usize = 65_536;

/// How often the clock closes candles whose interval ended plus the grace.
pub const CLOCK_PERIOD: Duration = Duration::from_millis(100);

/// The conflation stream of `interval` in a client queue (ticks are 0).
pub fn stream_of(interval: Interval) -> u8 {
    1 + interval.index() as u8
}

/// What [`CandleHub::join`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The symbol's candles are followed already: the current ones were queued.
    Ready,
    /// First candle subscriber of the symbol on this node: read the stored
    /// candles and hand them to [`CandleHub::loaded`] (or
    /// [`CandleHub::abandon`] on failure).
    Load,
}

/// One interval's copy and its subscribers.
#[derive(Default)]
struct LiveSeries {
    /// The newest candle (open unless `closed`).
    current: Option<Candle>,
    /// `current` was sent with `closed:true` (the clock closed it).
    closed: bool,
    /// `seq` of the newest tick this interval took.
    seen: u64,
    subscribers: IndexMap<ClientId, Arc<ClientQueue>>,
}

impl LiveSeries {
    /// Queues `candle` to every subscriber: an update (conflatable) or, when
    /// `closed`, the final state (replacing the unsent update of it).
    fn send(&self, symbol: &Symbol, interval: Interval, candle: &Candle, closed: bool) {
        if self.subscribers.is_empty() {
            return;
        }
        let frame = frame::text_frame(&encode_candle(symbol, interval, candle, closed));
        let stream = stream_of(interval);
        for q in self.subscribers.values() {
            if closed {
                q.push_update_final(*symbol, stream, &frame);
            } else {
                q.push_update(*symbol, stream, &frame);
            }
        }
    }
}

/// One followed symbol.
struct LiveSymbol {
    /// The symbol's epoch (from the read); a tick of another epoch means its
    /// stream started again, and the copy with it.
    epoch: Epoch,
    /// `Some` while the stored candles are being read: ticks that arrived.
    pending: Option<Vec<Tick>>,
    /// Set when `pending` overflowed: the read's result is refused.
    overflowed: bool,
    series: [LiveSeries; 5],
}

impl LiveSymbol {
    fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.subscribers.is_empty())
    }

    /// Moves the copy with `tick`, sending what changed when `send`.
    fn apply(&mut self, tick: &Tick, send: bool) {
        if tick.epoch.is_set() && self.epoch.is_set() && tick.epoch != self.epoch {
            for s in &mut self.series {
                (s.current, s.closed, s.seen) = (None, false, 0);
            }
        }
        if tick.epoch.is_set() {
            self.epoch = tick.epoch;
        }
        for interval in Interval::ALL {
            let s = &mut self.series[interval.index()];
            if tick.candles_late & (1 << interval.index()) != 0 || tick.seq <= s.seen {
                continue;
            }
            let start = interval.start_of(tick.timestamp);
            match s.current.as_mut() {
                Some(c) if start == c.start_ms => c.take(tick),
                // The bus calls such a tick late; nothing to follow.
                Some(c) if start < c.start_ms => continue,
                _ => {
                    if let Some(old) = s.current.filter(|_| !s.closed) {
                        if send {
                            s.send(&tick.symbol, interval, &old, true);
                        }
                    }
                    s.current = Some(Candle::opened_by(tick, start));
                    s.closed = false;
                }
            }
            s.seen = tick.seq;
            if send {
                if let Some(c) = s.current {
                    // A tick the bus took after this node's clock closed the
                    // candle (the clocks differ): the final state again.
                    s.send(&tick.symbol, interval, &c, s.closed);
                }
            }
        }
    }
}

/// Every followed symbol's live candles on this node.
pub struct CandleHub {
    symbols: Mutex<HashMap<Symbol, LiveSymbol>>,
    /// How many symbols are followed (read without the lock on every batch).
    followed: AtomicUsize,
    grace_ms: i64,
    interest: Mutex<Option<InterestListener>>,
}

impl CandleHub {
    /// A hub closing candles `grace_ms` after their interval ends, with its
    /// clock running on the current tokio runtime while the hub lives.
    pub fn new(grace_ms: i64) -> Arc<Self> {
        let hub = Arc::new(Self {
            symbols: Mutex::new(HashMap::new()),
            followed: AtomicUsize::new(0),
            grace_ms,
            interest: Mutex::new(None),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(run_clock(Arc::downgrade(&hub)).in_current_span());
        }
        hub
    }

    /// Hears when a symbol gets its first candle subscriber on this node and
    /// when it loses its last one (the Redis bus follows it meanwhile).
    /// Called under the hub's lock: must not block.
    pub fn set_interest_listener(&self, listener: InterestListener) {
        *self.interest.lock() = Some(listener);
    }

    fn tell(&self, event: Interest) {
        if let Some(l) = self.interest.lock().as_ref() {
            l(event);
        }
    }

    /// How many symbols' candles this node follows.
    pub fn symbol_count(&self) -> usize {
        self.followed.load(Relaxed)
    }

    /// Whether `client` follows `symbol`'s candles of `interval` (false once
    /// the symbol was abandoned).
    pub fn has(&self, symbol: &Symbol, interval: Interval, client: ClientId) -> bool {
        self.symbols
            .lock()
            .get(symbol)
            .is_some_and(|l| l.series[interval.index()].subscribers.contains_key(&client))
    }

    /// Whether any socket on this node follows candles of `symbol`.
    pub fn follows(&self, symbol: &Symbol) -> bool {
        self.symbols.lock().contains_key(symbol)
    }

    /// Subscribes `queue` to `symbol`'s candles of `intervals`; queues the
    /// current candle of each when the symbol is followed already.
    pub fn join(&self, symbol: Symbol, intervals: &[Interval], queue: &Arc<ClientQueue>) -> Joined {
        let mut symbols = self.symbols.lock();
        let mut joined = Joined::Ready;
        let live = symbols.entry(symbol).or_insert_with(|| {
            joined = Joined::Load;
            LiveSymbol {
                epoch: Epoch::default(),
                pending: Some(Vec::new()),
                overflowed: false,
                series: Default::default(),
            }
        });
        let loaded = live.pending.is_none();
        for &interval in intervals {
            let s = &mut live.series[interval.index()];
            s.subscribers.insert(queue.id(), queue.clone());
            if let Some(c) = s.current.filter(|_| loaded && !s.closed) {
                let frame = frame::text_frame(&encode_candle(&symbol, interval, &c, false));
                queue.push_update(symbol, stream_of(interval), &frame);
            }
        }
        if joined == Joined::Load {
            self.followed.store(symbols.len(), Relaxed);
            self.tell(Interest::Added(symbol));
        }
        joined
    }

    /// The stored candles of `symbol` (in `epoch`), one page per interval
    /// (its last two: the newest closed and the current), read after
    /// [`Joined::Load`]. Applies the ticks that arrived meanwhile, then
    /// queues each current candle to every subscriber. False when too many
    /// ticks arrived meanwhile: the symbol is dropped as by
    /// [`CandleHub::abandon`].
    pub fn loaded(&self, symbol: &Symbol, epoch: Epoch, pages: &[(Interval, CandlePage)]) -> bool {
        let mut symbols = self.symbols.lock();
        let Some(live) = symbols.get_mut(symbol) else {
            return true;
        };
        if live.overflowed {
            drop(symbols);
            self.abandon(symbol, "too many ticks arrived while its candles were read");
            return false;
        }
        live.epoch = epoch;
        for (interval, page) in pages {
            let s = &mut live.series[interval.index()];
            s.seen = page.iter().map(|(c, _)| c.seq).max().unwrap_or(0);
            s.current = page.last().filter(|(_, closed)| !closed).map(|(c, _)| *c);
            s.closed = false;
        }
        for tick in live.pending.take().unwrap_or_default() {
            live.apply(&tick, false);
        }
        for interval in Interval::ALL {
            let s = &live.series[interval.index()];
            if let Some(c) = s.current.filter(|_| !s.closed) {
                s.send(symbol, interval, &c, false);
            }
        }
        true
    }

    /// Drops `symbol` (its stored candles could not be read): each of its
    /// subscribers gets an error and is no longer subscribed.
    pub fn abandon(&self, symbol: &Symbol, why: &str) {
        let mut symbols = self.symbols.lock();
        let Some(live) = symbols.remove(symbol) else {
            return;
        };
        self.followed.store(symbols.len(), Relaxed);
        let message = format!("candles of {symbol} are not available: {why}");
        let frame = frame::text_frame(
            &ServerMessage::Error {
                code: ErrorCode::InvalidRequest,
                message: &message,
                id: None,
            }
            .encode(),
        );
        let mut told = std::collections::HashSet::new();
        for interval in Interval::ALL {
            for q in live.series[interval.index()].subscribers.values() {
                q.forget_update(symbol, stream_of(interval));
                if told.insert(q.id()) {
                    q.push_control(frame.clone());
                }
            }
        }
        self.tell(Interest::Removed(*symbol));
    }

    /// Unsubscribes `client` from `symbol`'s candles of `interval`.
    pub fn leave(&self, symbol: &Symbol, interval: Interval, client: &ClientQueue) {
        let mut symbols = self.symbols.lock();
        let Some(live) = symbols.get_mut(symbol) else {
            return;
        };
        live.series[interval.index()]
            .subscribers
            .shift_remove(&client.id());
        client.forget_update(symbol, stream_of(interval));
        if live.is_empty() {
            symbols.remove(symbol);
            self.followed.store(symbols.len(), Relaxed);
            self.tell(Interest::Removed(*symbol));
        }
    }

    /// Moves the candles of followed symbols with `ticks` (as the bus
    /// delivered them, in order) and sends what changed.
    pub fn on_ticks(&self, ticks: &[Tick]) {
        if self.followed.load(Relaxed) == 0 {
            return;
        }
        let mut symbols = self.symbols.lock();
        for tick in ticks {
            let Some(live) = symbols.get_mut(&tick.symbol) else {
                continue;
            };
            match live.pending.as_mut() {
                Some(p) if p.len() >= MAX_PENDING => live.overflowed = true,
                Some(p) => p.push(*tick),
                None => live.apply(tick, true),
            }
        }
    }

    /// Sends `closed:true` for every current candle whose interval ended
    /// plus the grace by `now_ms`. Returns how many closed.
    pub fn close_due(&self, now_ms: i64) -> usize {
        if self.followed.load(Relaxed) == 0 {
            return 0;
        }
        let mut closed = 0;
        let mut symbols = self.symbols.lock();
        for (symbol, live) in symbols.iter_mut() {
            if live.pending.is_some() {
                continue;
            }
            for interval in Interval::ALL {
                let s = &mut live.series[interval.index()];
                let Some(c) = s.current.filter(|_| !s.closed) else {
                    continue;
                };
                if c.is_due(interval, now_ms, self.grace_ms) {
                    s.closed = true;
                    s.send(symbol, interval, &c, true);
                    closed += 1;
                }
            }
        }
        closed
    }
}

/// Closes due candles every [`CLOCK_PERIOD`] until the hub is dropped.
async fn run_clock(hub: Weak<CandleHub>) {
    let mut every = tokio::time::interval(CLOCK_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.close_due(Timestamp::now().0.div_euclid(1_000_000));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use marketmux_hub::QueueLimits;
    use serde_json::Value;

    use super::*;

    fn queue(id: ClientId) -> Arc<ClientQueue> {
        ClientQueue::new(id, QueueLimits::default(), Arc::default())
    }

    /// The JSON messages queued on `q` (frames carry a short WebSocket header).
    fn sent(q: &ClientQueue) -> Vec<Value> {
        let batch = q.take_batch(VecDeque::new()).unwrap();
        batch
            .frames
            .iter()
            .chain(batch.conflated.iter())
            .map(|f| {
                let start = f.iter().position(|&b| b == b'{').unwrap();
                serde_json::from_slice(&f[start..]).unwrap()
            })
            .collect()
    }

    fn tick(ms: i64, price: f64, seq: u64, late: u8) -> Tick {
        let mut t = Tick::new(
            Symbol::new("AAPL").unwrap(),
            price,
            Timestamp(ms * 1_000_000),
            Some(1.0),
        )
        .unwrap();
        t.seq = seq;
        t.epoch = Epoch::from_raw(7);
        t.candles_late = late;
        t
    }

    #[tokio::test]
    async fn follows_the_bus_once_and_closes_by_tick_and_by_clock() {
        let hub = CandleHub::new(500);
        let events = Arc::new(Mutex::new(Vec::new()));
        let e = events.clone();
        hub.set_interest_listener(Arc::new(move |i| e.lock().push(i)));
        let aapl = Symbol::new("AAPL").unwrap();
        let (a, b) = (queue(1), queue(2));
        let base = 1_764_687_840_000; // a whole minute
        assert_eq!(hub.join(aapl, &[Interval::S1], &a), Joined::Load);
        // A tick during the read waits; the stored page already has seq 1.
        hub.on_ticks(&[tick(base + 100, 10.0, 1, 0), tick(base + 200, 11.0, 2, 0)]);
        assert!(sent(&a).is_empty());
        let stored = Candle::opened_by(&tick(base + 100, 10.0, 1, 0), base);
        assert!(hub.loaded(
            &aapl,
            Epoch::from_raw(7),
            &[(Interval::S1, vec![(stored, false)])]
        ));
        let got = sent(&a);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0]["close"].as_f64(), got[0]["ticks"].as_u64()),
            (Some(11.0), Some(2))
        );
        // A second socket gets the current candle at once.
        assert_eq!(
            hub.join(aapl, &[Interval::S1, Interval::M1], &b),
            Joined::Ready
        );
        assert_eq!(sent(&b)[0]["close"], 11.0);
        // A tick late for 1s changes only 1m.
        hub.on_ticks(&[tick(base + 300, 99.0, 3, 1 << Interval::S1.index())]);
        assert!(sent(&a).is_empty());
        let got = sent(&b);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0]["interval"].as_str(), got[0]["close"].as_f64()),
            (Some("1m"), Some(99.0))
        );
        // A tick of the next second closes the candle, then opens the next.
        hub.on_ticks(&[tick(base + 1_000, 12.0, 4, 0)]);
        let got = sent(&a);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0]["closed"].as_bool(), got[0]["close"].as_f64()),
            (Some(true), Some(11.0))
        );
        assert_eq!(
            (got[1]["closed"].as_bool(), got[1]["open"].as_f64()),
            (Some(false), Some(12.0))
        );
        sent(&b);
        // The clock: nothing before end plus grace, then closed:true once.
        assert_eq!(hub.close_due(base + 2_499), 0);
        assert_eq!(hub.close_due(base + 2_500), 1);
        let got = sent(&a);
        assert_eq!((got.len(), got[0]["closed"].as_bool()), (1, Some(true)));
        assert_eq!(hub.close_due(base + 3_000), 0, "closed once");
        // Leaving: the symbol is followed until its last subscriber left.
        hub.leave(&aapl, Interval::S1, &a);
        hub.leave(&aapl, Interval::S1, &b);
        assert!(hub.follows(&aapl));
        hub.leave(&aapl, Interval::M1, &b);
        assert!(!hub.follows(&aapl));
        assert_eq!(
            *events.lock(),
            [Interest::Added(aapl), Interest::Removed(aapl)]
        );
    }

    #[tokio::test]
    async fn a_new_epoch_starts_the_copy_again_and_an_overflowed_read_is_refused() {
        let hub = CandleHub::new(500);
        let aapl = Symbol::new("AAPL").unwrap();
        let a = queue(1);
        let base = 1_764_687_840_000;
        hub.join(aapl, &[Interval::M1], &a);
        let stored = Candle::opened_by(&tick(base, 10.0, 50, 0), base);
        hub.loaded(
            &aapl,
            Epoch::from_raw(7),
            &[(Interval::M1, vec![(stored, false)])],
        );
        sent(&a);
        let mut fresh = tick(base + 10, 3.0, 1, 0);
        fresh.epoch = Epoch::from_raw(8);
        hub.on_ticks(&[fresh]);
        let got = sent(&a);
        assert_eq!(
            (got[0]["open"].as_f64(), got[0]["ticks"].as_u64()),
            (Some(3.0), Some(1))
        );

        let msft = Symbol::new("MSFT").unwrap();
        hub.join(msft, &[Interval::M1], &a);
        let mut t = tick(base, 1.0, 1, 0);
        t.symbol = msft;
        hub.on_ticks(&vec![t; MAX_PENDING + 1]);
        assert!(hub.has(&msft, Interval::M1, a.id()));
        assert!(!hub.loaded(&msft, Epoch::from_raw(7), &[]));
        assert!(!hub.follows(&msft));
        assert!(
            !hub.has(&msft, Interval::M1, a.id()),
            "dropped: may subscribe again"
        );
        assert_eq!(sent(&a)[0]["type"], "error");
    }
}
