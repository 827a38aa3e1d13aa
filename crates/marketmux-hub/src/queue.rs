//! [`ClientQueue`]: one client's outgoing frames, bounded, with conflation.
//!
//! Bound and policy:
//! - Ticks are queued while the queue holds at most [`QueueLimits::max_bytes`].
//!   Past that each new tick replaces the unsent tick of the same symbol in a
//!   per-symbol slot (conflation), so the client always gets the newest price
//!   of every symbol it follows and never a stale backlog.
//! - A client is *behind* when its oldest unsent frame (queued, or in the
//!   write the writer is blocked on) reached the node more than
//!   [`QueueLimits::max_lag`] ago, however little is queued: it is closed with
//!   [`CloseCause::SlowConsumer`] and what it had queued is freed. The check
//!   runs on every push and, for a socket nothing is pushed to, as the
//!   writer's deadline ([`ClientQueue::lag_deadline`]).
//! - Control frames (acks, errors, pongs, alerts) are never conflated nor dropped;
//!   past [`QueueLimits::max_control_bytes`] of them the client is closed instead.
//!
//! - A capped stream (`max_rate` on a symbol's ticks, or on one of its candle
//!   intervals) sends at most one update per interval; the updates in between
//!   wait in its cap slot, newest only, closed candles never replaced
//!   ([`crate::rate`]). They do not count as unsent for the lag bound until
//!   they are due.
//! - A final update ([`ClientQueue::push_update_final`]: a closed candle) is
//!   never conflated nor dropped: it is queued like a control frame (and
//!   counts against the same bound) after the unsent update it supersedes
//!   was dropped.
//!
//! Per-symbol order holds: queued frames are written before conflated slots, and
//! once a client is lagging every tick goes to the slots until the writer drains;
//! a capped symbol's held tick is newer than any of its queued frames and goes last.
//!
//! Who writes the queued frames to the socket, the client's writer task or
//! the hub's direct path ([`ClientQueue::flush_or_wake`]), and whether the
//! client is closing, is one state (`owner::SocketOwner`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use marketmux_core::Symbol;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::close::CloseCause;
use crate::direct::{prefetch, write_front, DirectSocket};
use crate::owner::{SocketOwner, WriterTurn};
use crate::rate::{Offer, RateCaps, Update};
use crate::stats::HubStats;

/// Identifies a client within one node.
pub type ClientId = u64;

/// Which conflation slot an update takes: a symbol's ticks (stream 0) or
/// another stream of updates about it (a candle interval: 1 and up), so
/// that a conflated candle never replaces a tick, nor one interval another.
/// Rate caps ([`crate::rate`]) are keyed the same way.
pub(crate) type SlotKey = (Symbol, u8);

/// The slot stream of ticks.
pub(crate) const TICKS: u8 = 0;

/// The bounds of one client queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Bytes of ticks queued before the client counts as lagging and ticks conflate.
    pub max_bytes: usize,
    /// Age of the oldest unsent frame past which the client is closed.
    pub max_lag: Duration,
    /// Bytes of unsent control frames before the client is closed.
    pub max_control_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_lag: Duration::from_secs(5),
            max_control_bytes: 256 * 1024,
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued behind the frames before it.
    Queued,
    /// Stored in the symbol's slot.
    Conflated {
        /// An older unsent tick was dropped.
        replaced: bool,
    },
    /// Held by the symbol's rate cap until its interval passes.
    Held {
        /// An older held tick was dropped (skipped).
        replaced: bool,
    },
    /// The client is closed; the frame was discarded.
    Closed,
}

/// Everything the writer should send next, in order: `frames` then `conflated`.
#[derive(Debug, Default)]
pub struct Batch {
    /// Frames in the order they were queued.
    pub frames: VecDeque<Bytes>,
    /// The newest update of each conflated symbol and stream, then the
    /// rate-capped updates that came due.
    pub conflated: Vec<Bytes>,
    /// When the oldest frame of the batch reached this node: the bus handing
    /// its tick over, or a control frame being queued (for delivery latency);
    /// for a batch of rate-capped updates only, when they came due.
    pub queued_at: Option<Instant>,
    /// When an update held by a rate cap comes due: the writer must take a
    /// batch again then, even if nothing wakes it (None: nothing is held).
    pub next_due: Option<Instant>,
}

impl Batch {
    /// Total bytes in the batch.
    pub fn len_bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum::<usize>()
            + self.conflated.iter().map(Bytes::len).sum::<usize>()
    }
    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len() + self.conflated.len()
    }
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.conflated.is_empty()
    }
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<Bytes>,
    tick_bytes: usize,
    control_bytes: usize,
    /// Newest unsent update per symbol and stream while conflating.
    slots: IndexMap<SlotKey, Bytes>,
    /// Arrival of the oldest frame queued since the queue was last empty.
    ready_since: Option<Instant>,
    /// Arrival of the oldest frame of the batch the writer took last: until
    /// it takes the next one, that batch may still be unwritten.
    writing_since: Option<Instant>,
    /// Who may write to the socket (the writer task, the hub's direct path),
    /// and whether the client is closing or closed.
    owner: SocketOwner,
    /// The socket, for direct writes; dropped when the queue closes (held
    /// by the hub, not here, while it writes).
    direct: Option<Arc<dyn DirectSocket>>,
    /// The streams with a rate cap, and the updates they hold.
    caps: RateCaps,
    /// When the writer takes a batch next by itself (the `next_due` of the
    /// batch it took last): an update held until no sooner needs no wake-up.
    armed: Option<Instant>,
}

/// One client's outgoing queue. The hub pushes, the client's writer drains.
pub struct ClientQueue {
    id: ClientId,
    limits: QueueLimits,
    inner: Mutex<Inner>,
    /// Wakes the writer when the queue goes from empty to non-empty.
    ready: Notify,
    /// Cancelled when the queue closes, so a writer blocked on a socket gives up.
    closed: CancellationToken,
    stats: Arc<HubStats>,
    /// Largest tick frame this client takes compressed (0: none); see
    /// [`ClientQueue::set_deflate`].
    deflate_max: AtomicUsize,
}

impl std::fmt::Debug for ClientQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientQueue")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClientQueue {
    /// A new, empty queue.
    pub fn new(id: ClientId, limits: QueueLimits, stats: Arc<HubStats>) -> Arc<Self> {
        Arc::new(Self {
            id,
            limits,
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            closed: CancellationToken::new(),
            stats,
            deflate_max: AtomicUsize::new(0),
        })
    }

    /// Starts loading the queue's lock and state into cache, one step
    /// before the hub pushes to it or writes it out.
    pub(crate) fn prefetch(&self) {
        prefetch(&self.inner);
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Lets the hub queue compressed tick frames (its
    /// [`crate::SymbolHub::with_deflater`] variant) to this client, for
    /// frames up to `max` bytes (0: none). Set before the first subscribe:
    /// a subscription reads it when it is made.
    pub fn set_deflate(&self, max: usize) {
        self.deflate_max.store(max, Relaxed);
    }

    /// Largest tick frame this client takes compressed (0: none).
    pub fn deflate_max(&self) -> usize {
        self.deflate_max.load(Relaxed)
    }

    /// Queues a tick frame of `symbol`, conflating if the client is lagging.
    pub fn push_tick(&self, symbol: Symbol, frame: &Bytes) -> PushOutcome {
        let (outcome, wake) = self.push_tick_deferred(symbol, frame, Instant::now());
        if wake {
            self.wake();
        }
        outcome
    }

    /// Like [`ClientQueue::push_tick`], but leaves waking the writer to the
    /// caller: returns true when the queue went from empty to non-empty and
    /// [`ClientQueue::wake`] is due. The hub uses it to wake each writer once
    /// per batch of ticks instead of once per tick. `received` is when the
    /// tick reached this node (the start of its delivery latency).
    pub fn push_tick_deferred(
        &self,
        symbol: Symbol,
        frame: &Bytes,
        received: Instant,
    ) -> (PushOutcome, bool) {
        let inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return (PushOutcome::Closed, false);
        }
        self.push_locked(inner, (symbol, TICKS), frame, received)
    }

    /// Queues an update of another stream about `symbol` (`stream` 1 to
    /// 255: a candle interval), under the same bounds as ticks and conflated
    /// in a slot of its own (the newest update of that stream replaces older
    /// unsent ones); held by the stream's rate cap, if it has one
    /// ([`ClientQueue::set_update_cap`]). Wakes the writer when due.
    pub fn push_update(&self, symbol: Symbol, stream: u8, frame: &Bytes) -> PushOutcome {
        debug_assert!(stream != TICKS, "stream 0 is the symbol's ticks");
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return PushOutcome::Closed;
        }
        let key = (symbol, stream);
        let offer = inner.caps.offer(&key, frame, Update::Latest, now);
        let (outcome, wake) = match offer {
            Offer::Uncapped | Offer::SendNow => self.push_locked(inner, key, frame, now),
            Offer::Held { replaced, due } => self.held_locked(inner, replaced, due),
        };
        if wake {
            self.wake();
        }
        outcome
    }

    /// Queues the final update of `symbol`'s `stream` (a closed candle),
    /// which supersedes its unsent update: that one is dropped, and this
    /// one is never conflated nor dropped. It is queued like a control frame
    /// (past [`QueueLimits::max_control_bytes`] of them the client is
    /// closed), or, when the stream has a rate cap and its interval has not
    /// passed, held until due in place of the update the cap held
    /// ([`crate::rate`]). Wakes the writer when due.
    pub fn push_update_final(&self, symbol: Symbol, stream: u8, frame: &Bytes) -> PushOutcome {
        debug_assert!(stream != TICKS, "stream 0 is the symbol's ticks");
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return PushOutcome::Closed;
        }
        let key = (symbol, stream);
        inner.slots.shift_remove(&key);
        let offer = inner.caps.offer(&key, frame, Update::Final, now);
        match offer {
            Offer::Uncapped | Offer::SendNow => {
                if self.push_control_locked(inner, frame.clone(), now) {
                    PushOutcome::Queued
                } else {
                    PushOutcome::Closed
                }
            }
            Offer::Held { replaced, due } => self.held_locked(inner, replaced, due).0,
        }
    }

    /// Accounts for an update a rate cap took to hold until `due`
    /// (`replaced`: it replaced an older held one). The writer wakes at its
    /// own deadline anyway when that is no later: a capped socket costs one
    /// wake-up per due time, not one per held update. Wakes it itself when
    /// needed; the caller's wake flag is always false.
    fn held_locked(
        &self,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        replaced: bool,
        due: Instant,
    ) -> (PushOutcome, bool) {
        if replaced {
            self.stats.capped_skipped.fetch_add(1, Relaxed);
        }
        let wake = inner.armed.is_none_or(|armed| due < armed);
        if wake {
            inner.armed = Some(due);
        }
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        (PushOutcome::Held { replaced }, false)
    }

    /// Like [`ClientQueue::push_tick_deferred`] for a symbol with a rate cap
    /// ([`ClientQueue::set_cap`]): queued if the symbol's interval has passed,
    /// else held in its cap slot (replacing an older held tick) until the
    /// writer takes it when due. A held tick that makes the writer's deadline
    /// earlier wakes the writer itself, so the caller wakes it only on `true`.
    pub fn push_capped_deferred(
        &self,
        symbol: Symbol,
        frame: &Bytes,
        received: Instant,
    ) -> (PushOutcome, bool) {
        let mut inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return (PushOutcome::Closed, false);
        }
        let key = (symbol, TICKS);
        match inner.caps.offer(&key, frame, Update::Latest, received) {
            Offer::Uncapped | Offer::SendNow => self.push_locked(inner, key, frame, received),
            Offer::Held { replaced, due } => self.held_locked(inner, replaced, due),
        }
    }

    /// Caps `symbol`'s ticks at one per `interval` (None: every tick), or
    /// changes the cap. Removing a cap queues the tick it held, if any.
    pub fn set_cap(&self, symbol: Symbol, interval: Option<Duration>) {
        self.set_cap_of((symbol, TICKS), interval);
    }

    /// Caps the updates of `symbol`'s `stream` (1 to 255: a candle
    /// interval) at one per `interval` (None: every update), apart from its
    /// ticks and its other streams, or changes the cap. Removing a cap
    /// queues what it held: the closed candles, then the newest update.
    pub fn set_update_cap(&self, symbol: Symbol, stream: u8, interval: Option<Duration>) {
        debug_assert!(stream != TICKS, "stream 0 is the symbol's ticks");
        self.set_cap_of((symbol, stream), interval);
    }

    fn set_cap_of(&self, key: SlotKey, interval: Option<Duration>) {
        let mut inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return;
        }
        match interval {
            Some(interval) => {
                inner.caps.set(key, interval);
                drop(inner);
                // The writer's deadline may have moved.
                self.ready.notify_one();
            }
            None => {
                let held = inner.caps.remove(&key);
                if held.finals.is_empty() && held.latest.is_none() {
                    return;
                }
                let now = Instant::now();
                // Closed candles, queued as they would have been uncapped
                // (a failure closed the queue: the rest is dropped).
                let queued = held
                    .finals
                    .into_iter()
                    .all(|f| self.push_control_in(&mut inner, f, now));
                if let Some(latest) = held.latest.filter(|_| queued) {
                    if key.1 == TICKS {
                        self.stats.deliveries.fetch_add(1, Relaxed);
                    }
                    self.push_locked(inner, key, &latest, now);
                } else {
                    drop(inner);
                }
                self.ready.notify_one();
            }
        }
    }

    /// Notes that a tick of a capped `symbol` was queued outside
    /// [`ClientQueue::push_capped_deferred`] (a subscription's first tick):
    /// the next one waits a whole interval.
    pub fn capped_sent(&self, symbol: &Symbol) {
        let mut inner = self.inner.lock();
        if !inner.caps.is_empty() {
            inner.caps.sent(&(*symbol, TICKS), Instant::now());
        }
    }

    fn push_locked(
        &self,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        key: SlotKey,
        frame: &Bytes,
        received: Instant,
    ) -> (PushOutcome, bool) {
        let was_empty = inner.frames.is_empty() && inner.slots.is_empty();
        if was_empty {
            inner.ready_since = Some(received);
            // The hub's flush_or_wake writes to it once the batch is queued.
            if let Some(direct) = &inner.direct {
                prefetch(&**direct);
            }
        }
        if self.behind(&inner, received) {
            self.close_slow(inner);
            return (PushOutcome::Closed, false);
        }
        let outcome =
            if inner.slots.is_empty() && inner.tick_bytes + frame.len() <= self.limits.max_bytes {
                inner.tick_bytes += frame.len();
                inner.frames.push_back(frame.clone());
                PushOutcome::Queued
            } else {
                let replaced = inner.slots.insert(key, frame.clone()).is_some();
                if replaced {
                    self.stats.conflated.fetch_add(1, Relaxed);
                }
                PushOutcome::Conflated { replaced }
            };
        (outcome, was_empty)
    }

    /// Queues the replay of a symbol's missed ticks, in order, and wakes the
    /// writer. A replay is never conflated: it is queued whole even past
    /// [`QueueLimits::max_bytes`] (it is bounded by the history a store keeps),
    /// and ticks pushed after it conflate until the writer drained it.
    /// Returns false if the queue is closed.
    pub fn push_replay(&self, symbol: Symbol, frames: Vec<Bytes>) -> bool {
        if frames.is_empty() {
            return !self.is_closed();
        }
        let mut inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return false;
        }
        // A conflated tick of this symbol would be written after the replay.
        debug_assert!(!inner.slots.contains_key(&(symbol, TICKS)));
        let now = Instant::now();
        if inner.frames.is_empty() && inner.slots.is_empty() {
            inner.ready_since = Some(now);
        }
        for f in frames {
            inner.tick_bytes += f.len();
            inner.frames.push_back(f);
        }
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// Whether the oldest unsent frame is older than the lag bound at `now`.
    fn behind(&self, inner: &Inner, now: Instant) -> bool {
        inner
            .writing_since
            .or(inner.ready_since)
            .is_some_and(|oldest| now.saturating_duration_since(oldest) > self.limits.max_lag)
    }

    /// Closes a client that fell behind, freeing what it had queued.
    fn close_slow(&self, mut inner: parking_lot::MutexGuard<'_, Inner>) {
        let cause = CloseCause::SlowConsumer {
            max_lag: self.limits.max_lag,
        };
        self.close_locked(&mut inner, cause);
        self.stats.slow_closed.fetch_add(1, Relaxed);
        drop(inner);
        self.ready.notify_one();
    }

    /// When the writer must give up writing `batch` (whose oldest frame
    /// arrived at `batch.queued_at`): past it the client is behind. Call
    /// [`ClientQueue::close_lagging`] then.
    pub fn lag_deadline(&self, batch: &Batch) -> Option<Instant> {
        batch.queued_at.map(|t| t + self.limits.max_lag)
    }

    /// Closes the client as a slow consumer (its writer's deadline passed).
    pub fn close_lagging(&self) {
        let inner = self.inner.lock();
        if inner.owner.closed_cause().is_none() {
            self.close_slow(inner);
        }
    }

    /// Wakes the writer (after [`ClientQueue::push_tick_deferred`]).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Queues a control frame (ack, error, pong, alert). Never conflated: past
    /// the control bound the client is closed instead. Returns false if closed.
    pub fn push_control(&self, frame: Bytes) -> bool {
        let inner = self.inner.lock();
        if !inner.owner.accepts_pushes() {
            return false;
        }
        self.push_control_locked(inner, frame, Instant::now())
    }

    /// [`ClientQueue::push_control`] on an open queue, under its lock;
    /// wakes the writer when the queue was empty.
    fn push_control_locked(
        &self,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        frame: Bytes,
        now: Instant,
    ) -> bool {
        let was_empty = inner.frames.is_empty() && inner.slots.is_empty();
        let queued = self.push_control_in(&mut inner, frame, now);
        drop(inner);
        if !queued || was_empty {
            self.ready.notify_one();
        }
        queued
    }

    /// Queues a control frame without waking the writer; closes the queue
    /// (false) when the client is behind or past the control bound.
    fn push_control_in(&self, inner: &mut Inner, frame: Bytes, now: Instant) -> bool {
        if self.behind(inner, now) {
            self.close_locked(
                inner,
                CloseCause::SlowConsumer {
                    max_lag: self.limits.max_lag,
                },
            );
            self.stats.slow_closed.fetch_add(1, Relaxed);
            return false;
        }
        if inner.control_bytes + frame.len() > self.limits.max_control_bytes {
            self.close_locked(inner, CloseCause::ControlBacklog);
            return false;
        }
        if inner.frames.is_empty() && inner.slots.is_empty() {
            inner.ready_since = Some(now);
        }
        inner.control_bytes += frame.len();
        inner.frames.push_back(frame);
        true
    }

    /// Drops the unsent conflated tick of `symbol` and its rate cap with the
    /// tick it held (after an unsubscribe, so no tick of it follows the
    /// `unsubscribed` ack).
    pub fn forget_symbol(&self, symbol: &Symbol) {
        self.forget((*symbol, TICKS));
    }

    /// Drops the unsent conflated update of `symbol`'s `stream` and its rate
    /// cap with what it held (after an unsubscribe from it).
    pub fn forget_update(&self, symbol: &Symbol, stream: u8) {
        self.forget((*symbol, stream));
    }

    fn forget(&self, key: SlotKey) {
        let mut inner = self.inner.lock();
        inner.slots.shift_remove(&key);
        if !inner.caps.is_empty() {
            inner.caps.remove(&key);
        }
    }

    /// Takes everything queued, or `Err(cause)` once the queue is closed.
    /// Returns an empty batch when there is nothing to send, or while the
    /// hub writes to the socket itself (the writer is woken when it is done).
    pub fn take_batch(&self, reuse: VecDeque<Bytes>) -> Result<Batch, CloseCause> {
        let mut inner = self.inner.lock();
        match inner.owner.writer_turn() {
            WriterTurn::Take => {}
            WriterTurn::Wait => return Ok(Batch::default()),
            WriterTurn::Closed(cause) => return Err(cause),
            WriterTurn::Drain(cause) => {
                if inner.frames.is_empty() && inner.slots.is_empty() {
                    self.close_locked(&mut inner, cause);
                    return Err(cause);
                }
            }
        }
        let frames = std::mem::replace(&mut inner.frames, reuse);
        let mut conflated = if inner.slots.is_empty() {
            Vec::new()
        } else {
            inner.slots.drain(..).map(|(_, b)| b).collect()
        };
        let mut queued_at = inner.ready_since.take();
        if inner.caps.next_due().is_some() {
            let now = Instant::now();
            let released = inner.caps.take_due(now, &mut conflated);
            if released.all > 0 {
                // Deliveries count ticks; candle updates are counted apart.
                self.stats
                    .deliveries
                    .fetch_add(released.ticks as u64, Relaxed);
                queued_at.get_or_insert(now);
            }
        }
        inner.tick_bytes = 0;
        inner.control_bytes = 0;
        inner
            .owner
            .writer_took(frames.is_empty() && conflated.is_empty());
        inner.writing_since = queued_at;
        let next_due = inner.caps.next_due();
        inner.armed = next_due;
        Ok(Batch {
            frames,
            conflated,
            queued_at,
            next_due,
        })
    }

    /// Lets [`ClientQueue::flush_or_wake`] write to `socket` while the writer
    /// is idle.
    pub fn attach_direct(&self, socket: Arc<dyn DirectSocket>) {
        let mut inner = self.inner.lock();
        if inner.owner.closed_cause().is_none() {
            inner.direct = Some(socket);
        }
    }

    /// Sends what is queued: written directly to the socket when the writer
    /// is idle and the socket takes it all at once, else left to the writer,
    /// which is woken. Used by the hub after queueing a batch.
    ///
    /// The write happens outside the queue's lock: the frames are taken out
    /// and the owner set to `SocketOwner::Direct`, so that pushes meanwhile
    /// queue behind them and the writer task waits; then the lock is taken
    /// again to settle. What the socket did not take goes back to the front
    /// of the queue, ahead of what was queued meanwhile, and the writer owns
    /// the socket from there: per-client order is the order of the queue.
    pub fn flush_or_wake(&self) {
        let mut inner = self.inner.lock();
        if !inner.owner.is_idle() || !inner.slots.is_empty() {
            // A direct write in progress hands what is queued to the writer
            // when it settles; otherwise the writer sends it (or drains).
            let direct = matches!(inner.owner, SocketOwner::Direct { .. });
            drop(inner);
            if !direct {
                self.ready.notify_one();
            }
            return;
        }
        if inner.frames.is_empty() {
            return;
        }
        let Some(socket) = inner.direct.take() else {
            drop(inner);
            self.ready.notify_one();
            return;
        };
        let mut frames = std::mem::take(&mut inner.frames);
        let oldest = inner.ready_since.take();
        let tick_bytes = std::mem::take(&mut inner.tick_bytes);
        let control_bytes = std::mem::take(&mut inner.control_bytes);
        inner.owner.start_direct();
        drop(inner);

        let written = write_front(&*socket, &mut frames);
        if written.bytes > 0 {
            // The batch's age counts only when all of it went out.
            let oldest = oldest.filter(|_| frames.is_empty());
            socket.wrote(written.frames, written.bytes, oldest);
        }

        let mut inner = self.inner.lock();
        if inner.owner.closed_cause().is_none() {
            if frames.is_empty() {
                if inner.frames.is_empty() {
                    // Keep the queue's allocation.
                    inner.frames = frames;
                }
            } else {
                frames.extend(inner.frames.drain(..));
                inner.frames = frames;
                inner.ready_since = oldest.or(inner.ready_since);
                inner.tick_bytes += tick_bytes;
                inner.control_bytes += control_bytes;
            }
            inner.direct = Some(socket);
        }
        let left = !inner.frames.is_empty() || !inner.slots.is_empty();
        let wake = inner.owner.settle_direct(left);
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Waits until there may be something to take (or the queue closed).
    pub async fn wait_ready(&self) {
        self.ready.notified().await
    }

    /// Closes the queue once what is already queued has been written (for
    /// replies that explain the close). Later pushes are refused. No-op if the
    /// queue is already closing or closed.
    pub fn close_after_pending(&self, cause: CloseCause) {
        let mut inner = self.inner.lock();
        if inner.owner.close_after_pending(cause) {
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// Closes the queue now: queued frames are dropped, later pushes are
    /// discarded, and the writer is told why (and stops waiting on its socket).
    /// The first cause wins, including one given to `close_after_pending`.
    pub fn close(&self, cause: CloseCause) {
        let mut inner = self.inner.lock();
        self.close_locked(&mut inner, cause);
        drop(inner);
        self.ready.notify_one();
    }

    fn close_locked(&self, inner: &mut Inner, cause: CloseCause) {
        if inner.owner.close_now(cause).is_some() {
            inner.frames = VecDeque::new();
            inner.slots = IndexMap::new();
            inner.caps = RateCaps::default();
            inner.tick_bytes = 0;
            inner.control_bytes = 0;
            inner.direct = None;
            self.closed.cancel();
        }
    }

    /// Why the queue closed, if it did.
    pub fn close_cause(&self) -> Option<CloseCause> {
        self.inner.lock().owner.closed_cause()
    }

    /// Resolves once the queue is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// True once the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Bytes waiting (queued frames and conflated slots).
    pub fn queued_bytes(&self) -> usize {
        let inner = self.inner.lock();
        inner.tick_bytes
            + inner.control_bytes
            + inner.slots.values().map(Bytes::len).sum::<usize>()
            + inner.caps.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn queue(max_bytes: usize) -> Arc<ClientQueue> {
        let limits = QueueLimits {
            max_bytes,
            max_lag: Duration::from_secs(5),
            max_control_bytes: 64,
        };
        ClientQueue::new(1, limits, Arc::default())
    }

    fn texts(b: &Batch) -> Vec<String> {
        b.frames
            .iter()
            .chain(b.conflated.iter())
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn queues_in_order_under_the_bound() {
        let q = queue(1024);
        for i in 0..3 {
            assert_eq!(
                q.push_tick(sym("A"), &Bytes::from(format!("a{i}"))),
                PushOutcome::Queued
            );
        }
        assert_eq!(
            texts(&q.take_batch(VecDeque::new()).unwrap()),
            ["a0", "a1", "a2"]
        );
        assert!(q.take_batch(VecDeque::new()).unwrap().is_empty());
    }

    #[test]
    fn conflates_to_newest_per_symbol_past_the_bound() {
        let q = queue(4);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        q.push_tick(sym("B"), &Bytes::from_static(b"b1"));
        // Full: from here ticks conflate, newest per symbol.
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a2")),
            PushOutcome::Conflated { replaced: false }
        );
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a3")),
            PushOutcome::Conflated { replaced: true }
        );
        assert!(q.push_control(Bytes::from_static(b"ack")));
        assert_eq!(
            q.push_tick(sym("B"), &Bytes::from_static(b"b2")),
            PushOutcome::Conflated { replaced: false }
        );
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert_eq!(texts(&batch), ["a1", "b1", "ack", "a3", "b2"]);
        assert_eq!(q.stats.conflated.load(Relaxed), 1);
        // Drained: back to plain queueing.
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a4")),
            PushOutcome::Queued
        );
    }

    #[test]
    fn other_streams_conflate_in_slots_of_their_own() {
        let q = queue(2);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        // Full: a tick and two streams of A conflate apart from each other.
        q.push_tick(sym("A"), &Bytes::from_static(b"a2"));
        q.push_update(sym("A"), 1, &Bytes::from_static(b"c1"));
        q.push_update(sym("A"), 2, &Bytes::from_static(b"d1"));
        assert_eq!(
            q.push_update(sym("A"), 1, &Bytes::from_static(b"c2")),
            PushOutcome::Conflated { replaced: true }
        );
        q.push_tick(sym("A"), &Bytes::from_static(b"a3"));
        q.forget_update(&sym("A"), 2);
        assert_eq!(
            texts(&q.take_batch(VecDeque::new()).unwrap()),
            ["a1", "a3", "c2"]
        );
    }

    #[test]
    fn forget_symbol_drops_its_slot() {
        let q = queue(2);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        q.push_tick(sym("A"), &Bytes::from_static(b"a2"));
        q.forget_symbol(&sym("A"));
        q.push_control(Bytes::from_static(b"unsub"));
        assert_eq!(
            texts(&q.take_batch(VecDeque::new()).unwrap()),
            ["a1", "unsub"]
        );
    }

    #[test]
    fn control_backlog_closes() {
        let q = queue(2);
        assert!(q.push_control(Bytes::from(vec![b'x'; 60])));
        assert!(!q.push_control(Bytes::from(vec![b'x'; 10])));
        assert_eq!(
            q.take_batch(VecDeque::new()).unwrap_err(),
            CloseCause::ControlBacklog
        );
        assert!(q.is_closed());
    }

    #[test]
    fn close_after_pending_flushes_first() {
        let q = queue(1024);
        q.push_control(Bytes::from_static(b"error"));
        q.close_after_pending(CloseCause::RateLimited);
        assert!(!q.push_control(Bytes::from_static(b"late")));
        assert!(!q.is_closed());
        assert_eq!(texts(&q.take_batch(VecDeque::new()).unwrap()), ["error"]);
        assert_eq!(
            q.take_batch(VecDeque::new()).unwrap_err(),
            CloseCause::RateLimited
        );
        assert!(q.is_closed());
        // A later hard close keeps the first reason.
        q.close(CloseCause::Normal);
        assert_eq!(q.close_cause(), Some(CloseCause::RateLimited));
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_past_max_lag_closes() {
        let q = queue(2);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        assert!(matches!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a2")),
            PushOutcome::Conflated { .. }
        ));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a3")),
            PushOutcome::Conflated { .. }
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a4")),
            PushOutcome::Closed
        );
        assert_eq!(
            q.take_batch(VecDeque::new()).unwrap_err(),
            CloseCause::SlowConsumer {
                max_lag: Duration::from_secs(5)
            }
        );
        assert_eq!(q.queued_bytes(), 0, "a closed queue holds nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_unsent_frame_closes_however_little_is_queued() {
        // Far under the byte bound: nothing conflates, only age counts.
        let q = queue(1024);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a2")),
            PushOutcome::Queued
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a3")),
            PushOutcome::Closed
        );
        assert_eq!(q.queued_bytes(), 0, "what it had queued is freed");
        assert!(matches!(
            q.close_cause(),
            Some(CloseCause::SlowConsumer { .. })
        ));
        assert_eq!(q.stats.slow_closed.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_writer_is_stuck_on_counts_as_unsent() {
        let q = queue(1024);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        let batch = q.take_batch(VecDeque::new()).unwrap();
        let deadline = q.lag_deadline(&batch).unwrap();
        assert_eq!(deadline, Instant::now() + Duration::from_secs(5));
        // The writer is blocked on a1; pings and ticks pile up behind it.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(q.push_control(Bytes::from_static(b"ping")));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!q.push_control(Bytes::from_static(b"ping")));
        assert!(matches!(
            q.close_cause(),
            Some(CloseCause::SlowConsumer { .. })
        ));

        // A writer that finished its batch (took the next) is not behind.
        let q = queue(1024);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        q.take_batch(VecDeque::new()).unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(q.take_batch(VecDeque::new()).unwrap().is_empty());
        assert_eq!(
            q.push_tick(sym("A"), &Bytes::from_static(b"a2")),
            PushOutcome::Queued
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_writer_is_woken_only_when_its_deadline_moves_earlier() {
        let q = queue(1024);
        let (a, b) = (sym("A"), sym("B"));
        q.set_cap(a, Some(Duration::from_millis(250)));
        q.set_cap(b, Some(Duration::from_millis(250)));
        let idle = |q: &Arc<ClientQueue>| {
            let q = q.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(1), q.wait_ready())
                    .await
                    .is_err()
            }
        };
        let now = Instant::now();
        let push = |s, f: &'static [u8]| q.push_capped_deferred(s, &Bytes::from_static(f), now);
        // Setting a cap wakes the writer (its deadline may move): taken here.
        q.wait_ready().await;
        assert_eq!(push(a, b"a1"), (PushOutcome::Queued, true), "sent at once");
        assert_eq!(push(b, b"b1"), (PushOutcome::Queued, false));
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert_eq!(
            (texts(&batch), batch.next_due),
            (vec!["a1".into(), "b1".into()], None)
        );
        assert!(idle(&q).await);
        // The first held tick sets the writer's deadline: one wake-up.
        assert_eq!(push(a, b"a2").0, PushOutcome::Held { replaced: false });
        assert!(!idle(&q).await, "woken to arm its timer");
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert!(batch.is_empty());
        assert_eq!(batch.next_due, Some(now + Duration::from_millis(250)));
        // Ticks due no sooner than that deadline wake nobody.
        assert_eq!(push(b, b"b2").0, PushOutcome::Held { replaced: false });
        assert_eq!(push(a, b"a3").0, PushOutcome::Held { replaced: true });
        assert!(idle(&q).await);
        tokio::time::advance(Duration::from_millis(250)).await;
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert_eq!(texts(&batch), ["a3", "b2"]);
        assert_eq!(q.stats.capped_skipped.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_candle_stream_holds_its_closed_candle_until_due_and_ticks_flow() {
        let q = queue(1024);
        let a = sym("A");
        let f = |s: &'static str| Bytes::from_static(s.as_bytes());
        q.set_update_cap(a, 1, Some(Duration::from_millis(500)));
        assert_eq!(q.push_update(a, 1, &f("open1")), PushOutcome::Queued);
        assert_eq!(
            q.push_update(a, 1, &f("open1b")),
            PushOutcome::Held { replaced: false }
        );
        // The closed candle supersedes the held open state of it.
        assert_eq!(
            q.push_update_final(a, 1, &f("closed1")),
            PushOutcome::Held { replaced: true }
        );
        assert_eq!(
            q.push_update(a, 1, &f("open2")),
            PushOutcome::Held { replaced: false }
        );
        // The symbol's ticks and its other intervals are not capped.
        assert_eq!(q.push_tick(a, &f("tick")), PushOutcome::Queued);
        assert_eq!(q.push_update(a, 2, &f("minute")), PushOutcome::Queued);
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert_eq!(texts(&batch), ["open1", "tick", "minute"]);
        let due = Instant::now() + Duration::from_millis(500);
        assert_eq!(batch.next_due, Some(due));
        tokio::time::advance(Duration::from_millis(500)).await;
        let batch = q.take_batch(VecDeque::new()).unwrap();
        assert_eq!(
            texts(&batch),
            ["closed1"],
            "alone: the next waits behind it"
        );
        assert_eq!(batch.next_due, Some(due + Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(texts(&q.take_batch(VecDeque::new()).unwrap()), ["open2"]);
        assert_eq!(q.stats.capped_skipped.load(Relaxed), 1);
        assert_eq!(q.stats.deliveries.load(Relaxed), 0, "ticks only");
    }

    #[test]
    fn a_closed_candle_is_never_conflated_and_removing_a_cap_sends_what_it_held() {
        let q = queue(2);
        let a = sym("A");
        let f = |s: &'static str| Bytes::from_static(s.as_bytes());
        q.push_tick(a, &f("t1"));
        // Lagging: the open candle conflates, its closed state replaces it
        // and is queued whole, the next candle conflates behind it.
        assert!(matches!(
            q.push_update(a, 1, &f("o1")),
            PushOutcome::Conflated { .. }
        ));
        assert_eq!(q.push_update_final(a, 1, &f("c1")), PushOutcome::Queued);
        q.push_update(a, 1, &f("o2"));
        assert_eq!(
            texts(&q.take_batch(VecDeque::new()).unwrap()),
            ["t1", "c1", "o2"]
        );

        q.set_update_cap(a, 1, Some(Duration::from_secs(10)));
        q.push_update(a, 1, &f("o3"));
        q.push_update_final(a, 1, &f("c3"));
        q.push_update(a, 1, &f("o4"));
        assert_eq!(texts(&q.take_batch(VecDeque::new()).unwrap()), ["o3"]);
        q.set_update_cap(a, 1, None);
        assert_eq!(texts(&q.take_batch(VecDeque::new()).unwrap()), ["c3", "o4"]);
        // Forgetting a stream drops its cap with what it held.
        q.set_update_cap(a, 1, Some(Duration::from_secs(10)));
        q.push_update(a, 1, &f("o5"));
        q.push_update_final(a, 1, &f("c5"));
        q.forget_update(&a, 1);
        assert_eq!(q.queued_bytes(), 2, "o5 only, already queued");
        assert_eq!(texts(&q.take_batch(VecDeque::new()).unwrap()), ["o5"]);
        assert_eq!(
            q.push_update(a, 1, &f("o6")),
            PushOutcome::Queued,
            "uncapped"
        );
    }

    #[tokio::test]
    async fn writer_is_woken_once_per_empty_to_ready_transition() {
        let q = queue(1024);
        q.push_tick(sym("A"), &Bytes::from_static(b"a1"));
        q.push_tick(sym("A"), &Bytes::from_static(b"a2"));
        tokio::time::timeout(Duration::from_secs(1), q.wait_ready())
            .await
            .unwrap();
        assert_eq!(q.take_batch(VecDeque::new()).unwrap().len(), 2);
    }
}
