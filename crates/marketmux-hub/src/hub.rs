//! [`SymbolHub`]: topics sharded by symbol, each with its subscribers.
//!
//! Publishing takes a shard's read lock only to find the topic, then the
//! topic's own lock for the fan-out, so publishes of different symbols run in
//! parallel and ticks of one symbol reach every client in one order. The
//! fan-out never waits on a client: [`ClientQueue::push_tick`] is a short,
//! non-blocking critical section.
//!
//! Ticks carry the `seq` and epoch the bus assigned them; the hub keeps, per
//! subscription, the last `seq` sent (see [`crate::subscription`]) so that no
//! client gets a tick twice, and lets a subscription open in two steps:
//! [`SymbolHub::subscribe_held`] follows the symbol at once but holds its live
//! ticks, and [`SymbolHub::start`] queues the subscription's first frames (a
//! replay of what the client missed, or the latest tick), then the held ticks
//! above them: no gap and no duplicate where the two meet.
//!
//! A subscription may carry a rate cap ([`SymbolHub::set_rate`]): its live
//! ticks then go through the client queue's cap slot, which holds the newest
//! until the cap's interval passes ([`crate::rate`]). Uncapped subscribers of
//! the same symbol take the usual path; a replay is never capped.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use marketmux_core::{Position, ServerMessage, StreamState, Symbol, Tick};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::deflated::{FrameDeflater, SharedFrame};
use crate::queue::{ClientId, ClientQueue, PushOutcome};
use crate::stats::HubStats;
use crate::subscription::{Admit, Subscription};

/// How many queues ahead the fan-out prefetches (see [`ClientQueue::prefetch`]).
const PREFETCH_AHEAD: usize = 2;

/// Encodes a tick (with the `seq` the bus assigned it) into the exact bytes
/// written to every subscriber. Called once per tick per node.
pub type TickEncoder = Arc<dyn Fn(&Tick) -> Bytes + Send + Sync>;

/// Encodes a control message (the notice that a symbol's stream started
/// again) into the bytes written to one client.
pub type ControlEncoder = Arc<dyn Fn(&ServerMessage<'_>) -> Bytes + Send + Sync>;

/// A change in the set of symbols this node's clients follow, for bus adapters
/// that subscribe upstream only to what is needed. Per symbol, events arrive in
/// the order they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// The symbol got its first local subscriber.
    Added(Symbol),
    /// The symbol lost its last local subscriber.
    Removed(Symbol),
}

/// Hears every [`Interest`] change, under the hub's lock for that symbol:
/// must not block (hand the event on, e.g. into a channel).
pub type InterestListener = Arc<dyn Fn(Interest) + Send + Sync>;

/// How the hub is laid out.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Number of shards (rounded up to a power of two).
    pub shards: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { shards: 64 }
    }
}

/// A subscribe that would create a topic past the node's bound
/// ([`SymbolHub::set_max_topics`]). Symbols that already have a topic can
/// still be subscribed to, and every existing topic keeps flowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node follows its limit of {max} symbols; subscribe to one already followed, or try another node")]
pub struct TopicLimit {
    /// The bound that was reached.
    pub max: usize,
}

struct Topic {
    inner: Mutex<TopicInner>,
}

struct TopicInner {
    subscribers: IndexMap<ClientId, Subscription>,
    /// The newest tick of this symbol and its frame, sent as the snapshot on
    /// subscribe.
    latest: Option<(Tick, Bytes)>,
    /// The compressed variant of `latest`'s frame, once a compressing
    /// subscriber asked for it (see [`SharedFrame`]).
    latest_deflated: Option<Option<Bytes>>,
    /// Set when the topic left its shard; a subscriber that raced must retry.
    removed: bool,
}

/// Whether `tick` is newer than `than` in the symbol's stream: a higher
/// `seq` in the same epoch, or a new epoch; by timestamp for ticks the bus
/// did not number.
fn is_newer(tick: &Tick, than: &Tick) -> bool {
    if tick.seq == 0 || than.seq == 0 {
        return tick.timestamp >= than.timestamp;
    }
    tick.epoch != than.epoch || tick.seq > than.seq
}

type Shard = RwLock<HashMap<Symbol, Arc<Topic>>>;

/// Maps each symbol to its local subscribers and fans ticks out to them.
pub struct SymbolHub {
    shards: Box<[Shard]>,
    mask: usize,
    hasher: std::collections::hash_map::RandomState,
    encoder: TickEncoder,
    control: ControlEncoder,
    /// Compresses frames for clients that negotiated it (None: nobody does).
    deflater: Option<FrameDeflater>,
    interest: Mutex<Option<InterestListener>>,
    stats: Arc<HubStats>,
    /// Most topics at once (unbounded until [`SymbolHub::set_max_topics`]).
    max_topics: AtomicU64,
}

/// Result of [`SymbolHub::subscribe`] and [`SymbolHub::subscribe_held`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subscribed {
    /// False if the client already followed the symbol (nothing changed).
    pub new: bool,
    /// The newest tick this node has of the symbol. `subscribe` queued it to
    /// the client; `subscribe_held` leaves that to [`SymbolHub::start`].
    pub latest: Option<Tick>,
}

/// How a held subscription starts ([`SymbolHub::start`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamStart {
    /// Replays `ticks` (those after `since`, in increasing `seq`) before the
    /// live ticks: the client resumes exactly where it was.
    Replay {
        /// The position the client resumes from.
        since: Position,
        /// The ticks after it, in increasing `seq`.
        ticks: Vec<Tick>,
    },
    /// Sends `latest` (when None, this node's newest tick, if any) before the
    /// live ticks above it; `head` names the stream the client was told of
    /// (a tick of another epoch is then not sent).
    Latest {
        /// The tick to start with (None: this node's newest, if any).
        latest: Option<Tick>,
        /// The stream position the client was told of.
        head: Option<Position>,
    },
}

/// What [`SymbolHub::start`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Started {
    /// Ticks of the replay queued.
    pub replayed: usize,
    /// A replay was asked for but more live ticks arrived while opening than
    /// could be held: the client got a `subscribed` notice with
    /// `recovered:false` and the newest tick instead.
    pub replay_abandoned: bool,
}

impl SymbolHub {
    /// A hub whose ticks are encoded by `encoder`.
    pub fn new(config: HubConfig, encoder: TickEncoder) -> Self {
        let n = config.shards.max(1).next_power_of_two();
        Self {
            shards: (0..n).map(|_| RwLock::new(HashMap::new())).collect(),
            mask: n - 1,
            hasher: Default::default(),
            encoder,
            control: Arc::new(|m: &ServerMessage<'_>| Bytes::from(m.encode())),
            deflater: None,
            interest: Mutex::new(None),
            stats: Arc::default(),
            max_topics: AtomicU64::new(u64::MAX),
        }
    }

    /// Encodes the control messages the hub sends itself (a stream's new
    /// epoch) with `control` (plain JSON by default).
    pub fn with_control_encoder(mut self, control: ControlEncoder) -> Self {
        self.control = control;
        self
    }

    /// Compresses tick frames with `deflater` for clients whose queue takes
    /// compressed frames ([`ClientQueue::set_deflate`]): once per tick per
    /// node, the first time such a subscriber needs it, and shared by all.
    pub fn with_deflater(mut self, deflater: FrameDeflater) -> Self {
        self.deflater = Some(deflater);
        self
    }

    /// Bounds the topics (symbols with a local subscriber) this hub holds at
    /// once: a subscribe that would create one more fails with [`TopicLimit`].
    pub fn set_max_topics(&self, max: usize) {
        self.max_topics.store(max as u64, Relaxed);
    }

    /// Calls `listener` with every [`Interest`] change from now on, inside
    /// the subscribe or unsubscribe that made it: when `subscribe` returns,
    /// the listener has heard of a new topic (a bus can then tell whether
    /// following it took effect).
    pub fn set_interest_listener(&self, listener: InterestListener) {
        *self.interest.lock() = Some(listener);
    }

    /// The counters, shared with every queue made by [`SymbolHub::new_client`].
    pub fn stats(&self) -> &Arc<HubStats> {
        &self.stats
    }

    /// A new client queue that reports into this hub's counters.
    pub fn new_client(&self, id: ClientId, limits: crate::QueueLimits) -> Arc<ClientQueue> {
        ClientQueue::new(id, limits, self.stats.clone())
    }

    fn shard(&self, symbol: &Symbol) -> &Shard {
        &self.shards[(self.hasher.hash_one(symbol) as usize) & self.mask]
    }

    fn notify_interest(&self, event: Interest) {
        let listener = self.interest.lock().clone();
        if let Some(listener) = listener {
            listener(event);
        }
    }

    /// Adds `client` to `symbol`'s subscribers and queues the newest known
    /// tick. Fails only when `symbol` has no topic yet and the hub holds its
    /// bound of topics.
    pub fn subscribe(
        &self,
        symbol: Symbol,
        client: &Arc<ClientQueue>,
    ) -> Result<Subscribed, TopicLimit> {
        self.join(symbol, client, false)
    }

    /// Adds `client` to `symbol`'s subscribers, holding its live ticks (at
    /// most [`crate::subscription::MAX_HELD`]) until [`SymbolHub::start`]:
    /// the caller queues its reply in between. Fails as `subscribe` does.
    pub fn subscribe_held(
        &self,
        symbol: Symbol,
        client: &Arc<ClientQueue>,
    ) -> Result<Subscribed, TopicLimit> {
        self.join(symbol, client, true)
    }

    fn join(
        &self,
        symbol: Symbol,
        client: &Arc<ClientQueue>,
        held: bool,
    ) -> Result<Subscribed, TopicLimit> {
        let shard = self.shard(&symbol);
        loop {
            let existing = shard.read().get(&symbol).cloned();
            let topic = match existing {
                Some(t) => t,
                None => {
                    let mut map = shard.write();
                    match map.get(&symbol) {
                        Some(t) => t.clone(),
                        None => {
                            self.take_topic_slot()?;
                            let t = Arc::new(Topic {
                                inner: Mutex::new(TopicInner {
                                    // Most topics have one subscriber: room for
                                    // one (the map would reserve three).
                                    subscribers: IndexMap::with_capacity(1),
                                    latest: None,
                                    latest_deflated: None,
                                    removed: false,
                                }),
                            });
                            map.insert(symbol, t.clone());
                            // Sent under the shard lock: per-symbol event order holds.
                            self.notify_interest(Interest::Added(symbol));
                            t
                        }
                    }
                }
            };
            let mut inner = topic.inner.lock();
            if inner.removed {
                continue;
            }
            let latest = inner.latest.as_ref().map(|(t, _)| *t);
            if inner.subscribers.contains_key(&client.id()) {
                return Ok(Subscribed { new: false, latest });
            }
            let mut sub = if held {
                Subscription::holding(client.clone())
            } else {
                Subscription::live(client.clone())
            };
            if let (false, Some((tick, _))) = (held, &inner.latest) {
                let tick = *tick;
                sub.admit(&tick);
                let plain = inner
                    .latest
                    .as_ref()
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default();
                let frame = self.frame_for(plain, &mut inner.latest_deflated, sub.deflate_max);
                client.push_tick(symbol, &frame);
                self.stats.deliveries.fetch_add(1, Relaxed);
            }
            inner.subscribers.insert(client.id(), sub);
            self.stats.subscriptions.fetch_add(1, Relaxed);
            return Ok(Subscribed { new: true, latest });
        }
    }

    /// How many more topics the bound allows now.
    pub fn topics_free(&self) -> u64 {
        let max = self.max_topics.load(Relaxed);
        max.saturating_sub(self.stats.topics.load(Relaxed))
    }

    /// Whether `symbol` has a topic here (at least one local subscriber).
    pub fn has_topic(&self, symbol: &Symbol) -> bool {
        self.shard(symbol).read().contains_key(symbol)
    }

    /// Counts one more topic if the bound allows (exact across shards).
    fn take_topic_slot(&self) -> Result<(), TopicLimit> {
        let max = self.max_topics.load(Relaxed);
        self.stats
            .topics
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .map(|_| ())
            .map_err(|_| TopicLimit {
                max: usize::try_from(max).unwrap_or(usize::MAX),
            })
    }

    /// Removes `client` from `symbol`. Once this returns, no further tick of
    /// `symbol` is pushed to that client. Returns false if it was not subscribed.
    pub fn unsubscribe(&self, symbol: &Symbol, client: ClientId) -> bool {
        let shard = self.shard(symbol);
        let Some(topic) = shard.read().get(symbol).cloned() else {
            return false;
        };
        let now_empty = {
            let mut inner = topic.inner.lock();
            if inner.subscribers.swap_remove(&client).is_none() {
                return false;
            }
            self.stats.subscriptions.fetch_sub(1, Relaxed);
            inner.subscribers.is_empty()
        };
        if now_empty {
            let mut map = shard.write();
            if let Some(t) = map.get(symbol) {
                let mut inner = t.inner.lock();
                // Someone may have subscribed between our two locks.
                if inner.subscribers.is_empty() && !inner.removed {
                    inner.removed = true;
                    drop(inner);
                    map.remove(symbol);
                    self.stats.topics.fetch_sub(1, Relaxed);
                    self.notify_interest(Interest::Removed(*symbol));
                }
            }
        }
        true
    }

    /// Fans out a batch of ticks in order: each encoded once, the same bytes
    /// to every subscriber. Then each affected client is written to or woken
    /// once, so a client following several of them gets one write for the
    /// batch rather than one per tick. Returns the number of deliveries (0
    /// for a tick nobody follows here). Call it as the bus hands the ticks
    /// over: the call time is their arrival, from which the delivery latency
    /// is measured.
    ///
    /// Clients whose writer is idle get the batch in one direct socket write
    /// from this thread ([`crate::DirectSocket`]), the others' writers are woken.
    pub fn publish_batch(&self, ticks: &[Tick]) -> usize {
        let received = Instant::now();
        let mut wake = Vec::new();
        let n = ticks
            .iter()
            .map(|t| self.fan_out(t, received, &mut wake))
            .sum();
        // Writes from this thread: spreading them over tasks costs more in
        // wake-ups and cross-core traffic than it saves (benches/README.md).
        for (i, q) in wake.iter().enumerate() {
            if let Some(ahead) = wake.get(i + PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            q.flush_or_wake();
        }
        n
    }

    /// Queues `tick` for every subscriber; queues that need their writer woken
    /// are added to `wake` (each at most once per batch: after its first push
    /// a queue is no longer empty). `received` is when the bus handed it over.
    fn fan_out(&self, tick: &Tick, received: Instant, wake: &mut Vec<Arc<ClientQueue>>) -> usize {
        self.stats.ticks_in.fetch_add(1, Relaxed);
        let Some(topic) = self.shard(&tick.symbol).read().get(&tick.symbol).cloned() else {
            return 0;
        };
        let mut inner = topic.inner.lock();
        if inner.removed {
            return 0;
        }
        let mut frame = SharedFrame::new((self.encoder)(tick), self.deflater.as_ref());
        let (mut sent, mut stale) = (0u64, 0u64);
        let subscribers = inner.subscribers.as_mut_slice();
        for i in 0..subscribers.len() {
            if let Some((_, ahead)) = subscribers.get_index(i + PREFETCH_AHEAD) {
                ahead.queue.prefetch();
            }
            let Some((_, sub)) = subscribers.get_index_mut(i) else {
                break;
            };
            let out = frame.for_subscriber(sub.deflate_max);
            if sub.hold(tick, out) {
                continue;
            }
            match sub.admit(tick) {
                Admit::Send => {}
                Admit::Stale => {
                    stale += 1;
                    continue;
                }
                Admit::NewEpoch => self.announce(sub, tick),
            }
            let (outcome, woke) = if sub.capped {
                sub.queue.push_capped_deferred(tick.symbol, out, received)
            } else {
                sub.queue.push_tick_deferred(tick.symbol, out, received)
            };
            if !matches!(outcome, PushOutcome::Held { .. }) {
                sent += 1;
            }
            if woke {
                wake.push(sub.queue.clone());
            }
        }
        let (made, saved) = (frame.made, frame.saved);
        if inner.latest.as_ref().is_none_or(|(t, _)| is_newer(tick, t)) {
            let (plain, deflated) = frame.into_parts();
            inner.latest = Some((*tick, plain));
            inner.latest_deflated = deflated;
        }
        drop(inner);
        self.stats.ticks_encoded.fetch_add(1, Relaxed);
        if made > 0 || saved > 0 {
            self.stats.deflated_frames.fetch_add(made, Relaxed);
            self.stats.deflate_bytes_saved.fetch_add(saved, Relaxed);
        }
        self.stats.deliveries.fetch_add(sent, Relaxed);
        if stale > 0 {
            self.stats.stale_dropped.fetch_add(stale, Relaxed);
        }
        sent as usize
    }

    /// The frame of `plain` for a subscriber taking compressed frames up to
    /// `deflate_max` bytes: the compressed variant in `cache`, made and kept
    /// there if it was not yet, or `plain`.
    fn frame_for(
        &self,
        plain: Bytes,
        cache: &mut Option<Option<Bytes>>,
        deflate_max: usize,
    ) -> Bytes {
        let mut shared = SharedFrame::with_deflated(plain, cache.take(), self.deflater.as_ref());
        let out = shared.for_subscriber(deflate_max).clone();
        self.stats.deflated_frames.fetch_add(shared.made, Relaxed);
        self.stats
            .deflate_bytes_saved
            .fetch_add(shared.saved, Relaxed);
        *cache = shared.into_parts().1;
        out
    }

    /// Tells `sub`'s client that `tick` starts a new life of its symbol's
    /// stream: a `subscribed` notice naming the new epoch, `recovered:false`.
    fn announce(&self, sub: &Subscription, tick: &Tick) {
        let symbols = [tick.symbol];
        let streams = [StreamState {
            symbol: tick.symbol,
            epoch: tick.epoch,
            seq: tick.seq,
            recovered: Some(false),
        }];
        let notice = (self.control)(&ServerMessage::Subscribed {
            symbols: &symbols,
            streams: &streams,
            id: None,
        });
        sub.queue.push_control(notice);
        self.stats.stream_restarts.fetch_add(1, Relaxed);
    }

    /// Whether `client`'s held subscription to `symbol` received more live
    /// ticks than it can hold (it will start from the newest, not recover).
    pub fn hold_overflowed(&self, symbol: &Symbol, client: ClientId) -> bool {
        let Some(topic) = self.shard(symbol).read().get(symbol).cloned() else {
            return false;
        };
        let inner = topic.inner.lock();
        inner
            .subscribers
            .get(&client)
            .is_some_and(Subscription::overflowed)
    }

    /// Starts `client`'s subscription to `symbol` made by
    /// [`SymbolHub::subscribe_held`]: queues its first ticks (`start`), then
    /// the live ticks held meanwhile that are newer, and from then on every
    /// live tick. Nothing happens if the subscription is gone or already live.
    pub fn start(&self, symbol: &Symbol, client: &Arc<ClientQueue>, start: StreamStart) -> Started {
        let mut started = Started::default();
        let Some(topic) = self.shard(symbol).read().get(symbol).cloned() else {
            return started;
        };
        let mut guard = topic.inner.lock();
        let inner = &mut *guard;
        let Some(sub) = inner.subscribers.get_mut(&client.id()) else {
            return started;
        };
        let Some(held) = sub.take_held() else {
            return started;
        };
        let mut delivered = 0u64;
        let start = match start {
            StreamStart::Replay { since, ticks } if held.overflowed => {
                started.replay_abandoned = true;
                let newest = held.ticks.last().map(|(t, _)| *t);
                let head = newest.and_then(|t| t.position()).unwrap_or(Position {
                    epoch: since.epoch,
                    seq: ticks.last().map_or(since.seq, |t| t.seq),
                });
                let symbols = [*symbol];
                let streams = [StreamState {
                    symbol: *symbol,
                    epoch: head.epoch,
                    seq: head.seq,
                    recovered: Some(false),
                }];
                client.push_control((self.control)(&ServerMessage::Subscribed {
                    symbols: &symbols,
                    streams: &streams,
                    id: None,
                }));
                StreamStart::Latest {
                    latest: newest,
                    head: Some(head),
                }
            }
            other => other,
        };
        match start {
            StreamStart::Replay { since, ticks } => {
                sub.set_position(since);
                let deflate_max = sub.deflate_max;
                let frames: Vec<Bytes> = ticks
                    .iter()
                    .filter(|t| {
                        t.symbol == *symbol && t.epoch == since.epoch && sub.admit(t) == Admit::Send
                    })
                    .map(|t| self.frame_for((self.encoder)(t), &mut None, deflate_max))
                    .collect();
                started.replayed = frames.len();
                delivered += frames.len() as u64;
                client.push_replay(*symbol, frames);
            }
            StreamStart::Latest { latest, head } => {
                let max = sub.deflate_max;
                let newest = match (latest, &inner.latest) {
                    (Some(t), Some((own, frame))) if t == *own => Some((
                        t,
                        self.frame_for(frame.clone(), &mut inner.latest_deflated, max),
                    )),
                    (Some(t), _) => Some((t, self.frame_for((self.encoder)(&t), &mut None, max))),
                    (None, Some((own, frame))) => Some((
                        *own,
                        self.frame_for(frame.clone(), &mut inner.latest_deflated, max),
                    )),
                    (None, None) => None,
                };
                if let Some(head) = head {
                    sub.set_position(Position {
                        epoch: head.epoch,
                        seq: 0,
                    });
                }
                // A tick of another life of the stream than the one named is not sent.
                let newest = newest.filter(|(t, _)| {
                    head.is_none_or(|h| t.position().is_none_or(|p| p.epoch == h.epoch))
                });
                if let Some((tick, frame)) = newest {
                    // Without a named head the client learns the stream here.
                    let admitted = sub.admit(&tick);
                    if admitted == Admit::NewEpoch {
                        self.announce(sub, &tick);
                    }
                    if admitted != Admit::Stale {
                        client.push_tick(*symbol, &frame);
                        if sub.capped {
                            client.capped_sent(symbol);
                        }
                        delivered += 1;
                    }
                }
            }
        }
        for (tick, frame) in held.ticks {
            match sub.admit(&tick) {
                Admit::Send => {}
                Admit::Stale => continue,
                Admit::NewEpoch => self.announce(sub, &tick),
            }
            if sub.capped {
                let (outcome, woke) = client.push_capped_deferred(*symbol, &frame, Instant::now());
                if woke {
                    client.wake();
                }
                if matches!(outcome, PushOutcome::Held { .. }) {
                    continue;
                }
            } else {
                client.push_tick(*symbol, &frame);
            }
            delivered += 1;
        }
        drop(guard);
        self.stats.deliveries.fetch_add(delivered, Relaxed);
        started
    }

    /// Caps `client`'s subscription to `symbol` at one tick per `interval`
    /// (None: every tick), or changes its cap; the client's queue holds the
    /// ticks in between ([`ClientQueue::set_cap`]). Works on a subscription
    /// still opening (set it before [`SymbolHub::start`] so its held ticks are
    /// capped too). Returns false if `client` does not follow `symbol`.
    pub fn set_rate(
        &self,
        symbol: &Symbol,
        client: &Arc<ClientQueue>,
        interval: Option<std::time::Duration>,
    ) -> bool {
        let Some(topic) = self.shard(symbol).read().get(symbol).cloned() else {
            return false;
        };
        let mut inner = topic.inner.lock();
        let Some(sub) = inner.subscribers.get_mut(&client.id()) else {
            return false;
        };
        if !sub.capped && interval.is_none() {
            return true;
        }
        sub.capped = interval.is_some();
        // Under the topic's lock: no tick of `symbol` is pushed meanwhile.
        client.set_cap(*symbol, interval);
        true
    }

    /// Where `client`'s stream of `symbol` stands (the last tick sent to it),
    /// once its epoch is known.
    pub fn position(&self, symbol: &Symbol, client: ClientId) -> Option<Position> {
        let topic = self.shard(symbol).read().get(symbol).cloned()?;
        let inner = topic.inner.lock();
        inner.subscribers.get(&client)?.position()
    }

    /// The newest frame of `symbol` seen by this node, if it has subscribers.
    pub fn latest_frame(&self, symbol: &Symbol) -> Option<Bytes> {
        let topic = self.shard(symbol).read().get(symbol).cloned()?;
        let inner = topic.inner.lock();
        inner.latest.as_ref().map(|(_, f)| f.clone())
    }

    /// Number of subscribers of `symbol` on this node.
    pub fn subscriber_count(&self, symbol: &Symbol) -> usize {
        self.shard(symbol)
            .read()
            .get(symbol)
            .map_or(0, |t| t.inner.lock().subscribers.len())
    }

    /// Every symbol with at least one local subscriber.
    pub fn symbols(&self) -> Vec<Symbol> {
        self.shards
            .iter()
            .flat_map(|s| s.read().keys().copied().collect::<Vec<_>>())
            .collect()
    }

    /// Number of topics, counted from the shards themselves (for leak checks).
    pub fn topic_count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use marketmux_core::{encode_tick, Timestamp};

    use super::*;
    use crate::QueueLimits;

    fn hub() -> SymbolHub {
        SymbolHub::new(
            HubConfig { shards: 4 },
            Arc::new(|t: &Tick| Bytes::from(encode_tick(t))),
        )
    }

    fn tick(s: &str, price: f64) -> Tick {
        Tick::new(Symbol::new(s).unwrap(), price, Timestamp::now(), None).unwrap()
    }

    fn drain(q: &ClientQueue) -> Vec<serde_json::Value> {
        let b = q.take_batch(VecDeque::new()).unwrap();
        b.frames
            .iter()
            .chain(&b.conflated)
            .map(|f| serde_json::from_slice(f).unwrap())
            .collect()
    }

    #[test]
    fn publish_reaches_subscribers_only_with_one_encoding() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let b = hub.new_client(2, QueueLimits::default());
        hub.subscribe(Symbol::new("AAPL").unwrap(), &a).unwrap();
        hub.subscribe(Symbol::new("AAPL").unwrap(), &b).unwrap();
        hub.subscribe(Symbol::new("MSFT").unwrap(), &b).unwrap();
        assert_eq!(hub.publish_batch(&[tick("AAPL", 1.0)]), 2);
        assert_eq!(hub.publish_batch(&[tick("MSFT", 2.0)]), 1);
        assert_eq!(hub.publish_batch(&[tick("TSLA", 3.0)]), 0);
        assert_eq!(drain(&a).len(), 1);
        let got = drain(&b);
        assert_eq!(got[0]["symbol"], "AAPL");
        assert_eq!(got[1]["symbol"], "MSFT");
        let s = hub.stats().snapshot();
        assert_eq!((s.ticks_in, s.ticks_encoded, s.deliveries), (3, 2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_subscriber_gets_the_newest_at_its_rate_and_the_uncapped_every_tick() {
        use std::time::Duration;
        let hub = hub();
        let aapl = Symbol::new("AAPL").unwrap();
        let capped = hub.new_client(1, QueueLimits::default());
        let plain = hub.new_client(2, QueueLimits::default());
        hub.subscribe(aapl, &capped).unwrap();
        hub.subscribe(aapl, &plain).unwrap();
        assert!(hub.set_rate(&aapl, &capped, Some(Duration::from_millis(250))));
        // 100 ticks per second for one second; the capped writer takes a
        // batch whenever one is due, as the gateway's writer does.
        let mut got = Vec::new();
        let mut next_due = None;
        for seq in 1..=100u64 {
            hub.publish_batch(&[numbered("AAPL", seq as f64, 7, seq)]);
            let batch = capped.take_batch(VecDeque::new()).unwrap();
            // The first tick names the stream (a `subscribed` notice) first.
            got.extend(batch.frames.iter().chain(&batch.conflated).filter_map(|f| {
                let v: serde_json::Value = serde_json::from_slice(f).unwrap();
                Some((tokio::time::Instant::now(), v["seq"].as_u64()?))
            }));
            next_due = batch.next_due;
            if let Some(due) = next_due {
                assert!(due <= tokio::time::Instant::now() + Duration::from_millis(250));
            }
            if seq < 100 {
                tokio::time::advance(Duration::from_millis(10)).await;
            }
        }
        // The last tick (seq 100) is held; it is due within one interval.
        let due = next_due.expect("seq 100 is held");
        assert!(due <= tokio::time::Instant::now() + Duration::from_millis(250));
        tokio::time::advance(due - tokio::time::Instant::now()).await;
        let last = drain(&capped);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["seq"], 100, "the final price is sent");
        let seqs: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        assert!(
            (4..=5).contains(&seqs.len()),
            "about 4 per second: {seqs:?}"
        );
        for w in got.windows(2) {
            assert!(w[1].0 - w[0].0 >= Duration::from_millis(250), "{seqs:?}");
        }
        let all = drain(&plain).iter().filter(|v| v["type"] == "tick").count();
        assert_eq!(all, 100, "the uncapped client gets every tick");
        let s = hub.stats().snapshot();
        assert_eq!(s.capped_skipped as usize, 100 - seqs.len() - 1);
        assert_eq!(s.deliveries as usize, 100 + seqs.len() + 1);
    }

    #[test]
    fn removing_a_cap_sends_the_held_tick_and_every_later_one() {
        use std::time::Duration;
        let hub = hub();
        let aapl = Symbol::new("AAPL").unwrap();
        let a = hub.new_client(1, QueueLimits::default());
        hub.subscribe(aapl, &a).unwrap();
        assert!(hub.set_rate(&aapl, &a, Some(Duration::from_secs(10))));
        for seq in 1..=3 {
            hub.publish_batch(&[numbered("AAPL", 1.0, 7, seq)]);
        }
        let ticks = |q: &ClientQueue| -> Vec<u64> {
            drain(q).iter().filter_map(|v| v["seq"].as_u64()).collect()
        };
        assert_eq!(ticks(&a), [1], "seq 1 at once, 3 held");
        assert!(hub.set_rate(&aapl, &a, None));
        hub.publish_batch(&[numbered("AAPL", 1.0, 7, 4)]);
        assert_eq!(ticks(&a), [3, 4]);
        let b = hub.new_client(2, QueueLimits::default());
        assert!(!hub.set_rate(&aapl, &b, None), "not subscribed");
    }

    #[test]
    fn a_capped_subscription_starts_with_the_latest_tick_and_holds_what_came_meanwhile() {
        use std::time::Duration;
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe_held(aapl, &a).unwrap();
        assert!(hub.set_rate(&aapl, &a, Some(Duration::from_secs(1))));
        hub.publish_batch(&[numbered("AAPL", 13.0, 7, 13)]);
        hub.publish_batch(&[numbered("AAPL", 14.0, 7, 14)]);
        let head = Some(Position {
            epoch: marketmux_core::Epoch::from_raw(7),
            seq: 12,
        });
        let latest = Some(numbered("AAPL", 12.0, 7, 12));
        hub.start(&aapl, &a, StreamStart::Latest { latest, head });
        let seqs: Vec<u64> = drain(&a).iter().filter_map(|v| v["seq"].as_u64()).collect();
        assert_eq!(seqs, [12], "13 and 14 wait for the interval: {seqs:?}");
    }

    #[test]
    fn a_replay_is_never_thinned_by_a_cap() {
        use std::time::Duration;
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe_held(aapl, &a).unwrap();
        assert!(hub.set_rate(&aapl, &a, Some(Duration::from_secs(1))));
        hub.publish_batch(&[numbered("AAPL", 9.0, 7, 9)]);
        hub.publish_batch(&[numbered("AAPL", 10.0, 7, 10)]);
        let since = Position {
            epoch: marketmux_core::Epoch::from_raw(7),
            seq: 0,
        };
        let ticks = (1..=8).map(|i| numbered("AAPL", i as f64, 7, i)).collect();
        hub.start(&aapl, &a, StreamStart::Replay { since, ticks });
        let seqs: Vec<u64> = drain(&a)
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        // The whole replay, then the first held live tick; the newest waits.
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(a.queued_bytes() > 0, "seq 10 is held for the cap");
    }

    #[tokio::test]
    async fn a_batch_wakes_each_writer_once_and_keeps_order() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        hub.subscribe(Symbol::new("AAPL").unwrap(), &a).unwrap();
        hub.subscribe(Symbol::new("MSFT").unwrap(), &a).unwrap();
        let ticks = [tick("AAPL", 1.0), tick("MSFT", 2.0), tick("AAPL", 3.0)];
        assert_eq!(hub.publish_batch(&ticks), 3);
        // One wake-up carries the whole batch.
        tokio::time::timeout(std::time::Duration::from_secs(1), a.wait_ready())
            .await
            .unwrap();
        let got = drain(&a);
        let prices: Vec<f64> = got.iter().map(|v| v["price"].as_f64().unwrap()).collect();
        assert_eq!(prices, [1.0, 2.0, 3.0]);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), a.wait_ready())
                .await
                .is_err(),
            "no second wake-up is pending"
        );
    }

    #[test]
    fn topics_are_bounded_and_existing_ones_stay_open() {
        let hub = hub();
        hub.set_max_topics(2);
        let a = hub.new_client(1, QueueLimits::default());
        let b = hub.new_client(2, QueueLimits::default());
        let [x, y, z] = ["X", "Y", "Z"].map(|s| Symbol::new(s).unwrap());
        hub.subscribe(x, &a).unwrap();
        hub.subscribe(y, &a).unwrap();
        assert_eq!(hub.subscribe(z, &b), Err(TopicLimit { max: 2 }));
        assert_eq!(hub.subscriber_count(&z), 0);
        // An existing topic takes more subscribers at the bound.
        assert!(hub.subscribe(x, &b).unwrap().new);
        assert_eq!(hub.stats().snapshot().topics, 2);
        // A topic that closes frees its place.
        hub.unsubscribe(&y, 1);
        assert!(hub.subscribe(z, &b).is_ok());
        assert_eq!(hub.stats().snapshot().topics, 2);
    }

    #[test]
    fn snapshot_on_subscribe_and_nothing_after_unsubscribe() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let b = hub.new_client(2, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe(aapl, &a).unwrap();
        hub.publish_batch(&[tick("AAPL", 1.0)]);
        hub.publish_batch(&[tick("AAPL", 2.0)]);
        let sub = hub.subscribe(aapl, &b).unwrap();
        assert!(sub.new && sub.latest.is_some_and(|t| t.price == 2.0));
        assert_eq!(drain(&b)[0]["price"], 2.0);
        assert!(hub.unsubscribe(&aapl, 2));
        assert!(!hub.unsubscribe(&aapl, 2));
        hub.publish_batch(&[tick("AAPL", 3.0)]);
        assert!(drain(&b).is_empty());
        assert_eq!(drain(&a).len(), 3);
    }

    #[test]
    fn topics_and_interest_follow_subscribers() {
        let hub = hub();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        hub.set_interest_listener(Arc::new(move |event| {
            let _ = tx.send(event);
        }));
        let aapl = Symbol::new("AAPL").unwrap();
        let a = hub.new_client(1, QueueLimits::default());
        let b = hub.new_client(2, QueueLimits::default());
        hub.subscribe(aapl, &a).unwrap();
        hub.subscribe(aapl, &b).unwrap();
        hub.unsubscribe(&aapl, 1);
        assert_eq!(hub.topic_count(), 1);
        hub.unsubscribe(&aapl, 2);
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(rx.try_recv().unwrap(), Interest::Added(aapl));
        assert_eq!(rx.try_recv().unwrap(), Interest::Removed(aapl));
        assert!(rx.try_recv().is_err());
        let s = hub.stats().snapshot();
        assert_eq!((s.topics, s.subscriptions), (0, 0));
    }

    fn numbered(s: &str, price: f64, epoch: u64, seq: u64) -> Tick {
        tick(s, price).sequenced(Position {
            epoch: marketmux_core::Epoch::from_raw(epoch),
            seq,
        })
    }

    #[test]
    fn a_held_subscription_replays_then_sends_only_newer_held_ticks() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe_held(aapl, &a).unwrap();
        // Live ticks 5 and 6 arrive while the store is read; 5 is in the replay too.
        hub.publish_batch(&[numbered("AAPL", 5.0, 7, 5)]);
        hub.publish_batch(&[numbered("AAPL", 6.0, 7, 6)]);
        assert!(drain(&a).is_empty(), "held until the start");
        let since = Position {
            epoch: marketmux_core::Epoch::from_raw(7),
            seq: 2,
        };
        let replay = (3..=5).map(|i| numbered("AAPL", i as f64, 7, i)).collect();
        let started = hub.start(
            &aapl,
            &a,
            StreamStart::Replay {
                since,
                ticks: replay,
            },
        );
        assert_eq!(
            started,
            Started {
                replayed: 3,
                replay_abandoned: false
            }
        );
        hub.publish_batch(&[numbered("AAPL", 6.0, 7, 6)]);
        hub.publish_batch(&[numbered("AAPL", 7.0, 7, 7)]);
        let seqs: Vec<u64> = drain(&a)
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_hold_that_overflows_abandons_the_replay_for_the_newest_tick() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe_held(aapl, &a).unwrap();
        let n = crate::subscription::MAX_HELD as u64 + 10;
        for seq in 1..=n {
            hub.publish_batch(&[numbered("AAPL", 1.0, 7, seq)]);
        }
        assert!(hub.hold_overflowed(&aapl, 1));
        let since = Position {
            epoch: marketmux_core::Epoch::from_raw(7),
            seq: 0,
        };
        let started = hub.start(
            &aapl,
            &a,
            StreamStart::Replay {
                since,
                ticks: vec![],
            },
        );
        assert!(started.replay_abandoned);
        let got = drain(&a);
        assert_eq!(got[0]["type"], "subscribed");
        assert_eq!(got[0]["streams"]["AAPL"]["recovered"], false);
        assert_eq!(got[0]["streams"]["AAPL"]["seq"], n);
        assert_eq!(got[1]["seq"], n);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_start_without_a_named_stream_announces_it_with_the_latest_tick() {
        let hub = hub();
        let a = hub.new_client(1, QueueLimits::default());
        let aapl = Symbol::new("AAPL").unwrap();
        hub.subscribe_held(aapl, &a).unwrap();
        hub.publish_batch(&[numbered("AAPL", 4.0, 7, 4)]);
        // The store did not answer: no head was named in the reply.
        let started = hub.start(
            &aapl,
            &a,
            StreamStart::Latest {
                latest: None,
                head: None,
            },
        );
        assert_eq!(started, Started::default());
        let got = drain(&a);
        assert_eq!(got[0]["type"], "subscribed");
        assert_eq!(got[0]["streams"]["AAPL"]["seq"], 4);
        assert_eq!(
            (got[1]["seq"].as_u64(), got.len()),
            (Some(4), 2),
            "the tick once"
        );
        // A named head: the latest tick follows the reply without a notice.
        let b = hub.new_client(2, QueueLimits::default());
        hub.subscribe_held(aapl, &b).unwrap();
        let head = Some(Position {
            epoch: marketmux_core::Epoch::from_raw(7),
            seq: 4,
        });
        hub.start(&aapl, &b, StreamStart::Latest { latest: None, head });
        let got = drain(&b);
        assert_eq!((got.len(), got[0]["seq"].as_u64()), (1, Some(4)));
    }

    #[test]
    fn concurrent_churn_leaves_nothing_behind() {
        let hub = Arc::new(hub());
        let syms: Vec<Symbol> = (0..16)
            .map(|i| Symbol::new(&format!("S{i}")).unwrap())
            .collect();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let hub = hub.clone();
                let syms = syms.clone();
                s.spawn(move || {
                    for i in 0..2_000u64 {
                        let q = hub.new_client(t * 1_000_000 + i, QueueLimits::default());
                        for sym in &syms[(i as usize % 8)..(i as usize % 8) + 4] {
                            hub.subscribe(*sym, &q).unwrap();
                        }
                        hub.publish_batch(&[tick(syms[i as usize % 16].as_str(), 1.0)]);
                        for sym in &syms[(i as usize % 8)..(i as usize % 8) + 4] {
                            hub.unsubscribe(sym, q.id());
                        }
                    }
                });
            }
        });
        assert_eq!(hub.topic_count(), 0);
        let s = hub.stats().snapshot();
        assert_eq!((s.topics, s.subscriptions), (0, 0));
    }
}
