//! [`RedisSubscriber`]: the node's one subscriber connection, subscribed to
//! exactly the channels of the symbols its own clients follow.
//!
//! - [`RedisSubscriber::follow`] (the hub's first local subscriber of a symbol)
//!   subscribes at once; [`RedisSubscriber::unfollow`] (its last one left)
//!   unsubscribes after a linger, and only if the node still has no
//!   subscriber then, so a client that flaps causes no churn in Redis.
//! - Changes that arrive together go out as one `SUBSCRIBE` (or `SSUBSCRIBE`)
//!   command with many channels, pipelined on the one connection.
//! - After a reconnect every channel still wanted is subscribed again; until
//!   that is done [`RedisSubscriber::is_synced`] is false (`/ready` says 503).
//! - Every drop and every reconnect of the connection starts a new
//!   generation; a publisher that saw one generation subscribed
//!   before publishing and the same one after ([`RedisSubscriber::passed`])
//!   knows the node's own clients got what it published.
//! - Messages are decoded once and handed to the node's [`TickBatchHandler`]:
//!   everything that arrived together in one call, up to [`MAX_BATCH`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use marketmux_core::Symbol;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::redis::codec;
use crate::redis::keys::KeySpace;
use crate::TickBatchHandler;
use marketmux_metrics::errors::{self, Component};
use tracing::Instrument as _;

/// Answers whether the node still has a local subscriber of a symbol; asked
/// when a linger ends, before unsubscribing.
pub type StillNeeded = Arc<dyn Fn(&Symbol) -> bool + Send + Sync>;

/// Most channels named in one `SUBSCRIBE`/`UNSUBSCRIBE` command.
const CHANNELS_PER_COMMAND: usize = 1024;
/// Wait before retrying a failed (un)subscribe while connected.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning per this period for undecodable or lost messages.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest [`RedisSubscriber::settled`] waits (Redis slow or away).
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// No generation is subscribed.
const UNSYNCED: u64 = u64::MAX;

/// The life of the subscriber connection, as publishers see it.
#[derive(Debug, Default)]
struct Link {
    /// Bumped on every drop and every reconnect.
    generation: AtomicU64,
    /// The generation on which every wanted channel is subscribed
    /// ([`UNSYNCED`] while none is).
    synced: AtomicU64,
}

impl Link {
    fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// The connection dropped or was replaced: a new generation, not synced.
    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, SeqCst) + 1
    }

    /// `generation` when every wanted channel is subscribed on it now.
    fn synced(&self) -> Option<u64> {
        let g = self.generation();
        (self.synced.load(SeqCst) == g).then_some(g)
    }
}

/// Counters of the subscriber connection.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    /// Ticks received from Redis and handed to the node.
    pub delivered: AtomicU64,
    /// Messages that were not a valid tick.
    pub undecodable: AtomicU64,
    /// Messages dropped because the node read them too slowly (fred's
    /// broadcast buffer overflowed).
    pub lost: AtomicU64,
    /// `SUBSCRIBE`-family commands sent (batches, not channels).
    pub subscribe_commands: AtomicU64,
    /// Channels currently wanted.
    pub channels: AtomicU64,
}

enum Change {
    Follow(Symbol),
    Unfollow(Symbol),
}

/// Handle to the subscriber connection's tasks. Cheap to clone.
#[derive(Clone)]
pub struct RedisSubscriber {
    changes: mpsc::UnboundedSender<Change>,
    /// Changes sent to the actor so far.
    sent: Arc<AtomicU64>,
    /// Changes the actor has applied and sent its commands for (awaited).
    done: watch::Receiver<u64>,
    link: Arc<Link>,
    /// For [`RedisSubscriber::passed`]'s PING.
    client: SubscriberClient,
    /// Longest [`RedisSubscriber::passed`] waits for its PING.
    ping_timeout: Duration,
    stats: Arc<SubscriberStats>,
}

impl RedisSubscriber {
    /// Starts following interest changes and delivering messages from the
    /// connected `client`, until `stop` changes or is dropped.
    pub fn start(
        client: SubscriberClient,
        keys: KeySpace,
        linger: Duration,
        handler: TickBatchHandler,
        still_needed: StillNeeded,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
        // Connected, and nothing wanted yet: generation 0 is synced.
        let link = Arc::new(Link::default());
        let (resync_tx, resync_rx) = watch::channel(0);
        let stats = Arc::new(SubscriberStats::default());
        tokio::spawn(
            watch_link(
                client.error_rx(),
                client.reconnect_rx(),
                link.clone(),
                resync_tx,
                stop.clone(),
            )
            .in_current_span(),
        );
        // Not in the caller's span: this task hands every message to the
        // hub, and a span entered per message is work on the tick path.
        tokio::spawn(deliver(
            client.message_rx(),
            handler,
            stats.clone(),
            stop.clone(),
        ));
        let ping_timeout = client.perf_config().default_command_timeout;
        let actor = Actor {
            reconnects: resync_rx,
            client: client.clone(),
            keys,
            linger,
            still_needed,
            wanted: HashSet::new(),
            stray: HashSet::new(),
            lingering: HashMap::new(),
            expiries: VecDeque::new(),
            link: link.clone(),
            resync_at: None,
            stats: stats.clone(),
            processed: 0,
            done: done_tx,
        };
        tokio::spawn(actor.run(rx, stop).in_current_span());
        Self {
            changes: tx,
            sent: Arc::new(AtomicU64::new(0)),
            done,
            link,
            client,
            ping_timeout,
            stats,
        }
    }

    /// Follows and unfollows handed to the actor so far ([`Self::settled`]
    /// waits for the ones made before it).
    pub fn changes_sent(&self) -> u64 {
        self.sent.load(SeqCst)
    }

    /// The node got its first local subscriber of `symbol`.
    pub fn follow(&self, symbol: Symbol) {
        self.sent.fetch_add(1, SeqCst);
        let _ = self.changes.send(Change::Follow(symbol));
    }

    /// The node lost its last local subscriber of `symbol`.
    pub fn unfollow(&self, symbol: Symbol) {
        self.sent.fetch_add(1, SeqCst);
        let _ = self.changes.send(Change::Unfollow(symbol));
    }

    /// Waits (at most [`SETTLE_MAX`]) until every follow and unfollow made
    /// before this call has been sent to Redis and answered. A snapshot read
    /// after a first subscriber's follow then cannot miss a tick published
    /// between the read and the SUBSCRIBE: from here on, the channel delivers.
    /// Returns false when it gave up waiting (or the subscriber stopped).
    pub async fn settled(&self) -> bool {
        let target = self.sent.load(SeqCst);
        let mut done = self.done.clone();
        // An ended actor (shutdown) closes the channel: nothing to wait for.
        let waited = tokio::time::timeout(SETTLE_MAX, done.wait_for(|d| *d >= target)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// False while the connection is down, or a (re)subscription failed or
    /// is pending after a reconnect.
    pub fn is_synced(&self) -> bool {
        self.serving().is_some()
    }

    /// The connection's generation, when it is up and every wanted channel
    /// is subscribed on it: what a message published now reaches.
    pub fn serving(&self) -> Option<u64> {
        self.link.synced().filter(|_| self.client.is_connected())
    }

    /// Whether everything published before this call reached the node on
    /// connection `generation`: a PING on the subscriber connection is
    /// answered after every message Redis queued for it before, so an answer
    /// on the same, still synced generation means those messages arrived.
    pub async fn passed(&self, generation: u64) -> bool {
        // Never sent again on a new connection, never queued while down.
        let once = Options {
            fail_fast: true,
            max_attempts: Some(1),
            timeout: Some(self.ping_timeout),
            ..Options::default()
        };
        let pong = self.client.with_options(&once).ping::<Value>(None).await;
        pong.is_ok() && self.serving() == Some(generation)
    }

    /// The counters.
    pub fn stats(&self) -> &SubscriberStats {
        &self.stats
    }
}

/// Logs at most once per [`WARN_EVERY`], with the count since the last line.
struct Throttle {
    last: Option<Instant>,
    pending: u64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            last: None,
            pending: 0,
        }
    }

    /// Counts `n` events; returns how many to report if a line is due now.
    fn hit(&mut self, n: u64) -> Option<u64> {
        self.pending += n;
        let due = self.last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        due.then(|| {
            self.last = Some(Instant::now());
            std::mem::take(&mut self.pending)
        })
    }
}

/// Most ticks handed to the node in one call.
pub const MAX_BATCH: usize = 1024;

/// Decodes every message once and hands the ticks to the node: each wait
/// for a message is followed by taking whatever else already arrived, so
/// under load the node gets batches (one socket write per client and batch)
/// and when idle a single tick goes through at once.
async fn deliver(
    mut messages: broadcast::Receiver<Message>,
    handler: TickBatchHandler,
    stats: Arc<SubscriberStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut bad = Throttle::new();
    let mut lost = Throttle::new();
    let mut ticks = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut received = tokio::select! {
            m = messages.recv() => m,
            _ = stop.changed() => return,
        };
        let closed = loop {
            match received {
                Ok(msg) => match msg.value.as_bytes().map(codec::decode) {
                    Some(Ok(tick)) => ticks.push(tick),
                    other => {
                        stats.undecodable.fetch_add(1, Relaxed);
                        errors::error(Component::Redis, "decode");
                        if let Some(n) = bad.hit(1) {
                            let error = match other {
                                Some(Err(e)) => e.to_string(),
                                _ => "not a string".to_owned(),
                            };
                            tracing::warn!(channel = %msg.channel, %error, count = n, "Dropping undecodable Redis messages");
                        }
                    }
                },
                Err(RecvError::Lagged(n)) => {
                    stats.lost.fetch_add(n, Relaxed);
                    errors::errors(Component::Redis, "lagged", n);
                    if let Some(n) = lost.hit(n) {
                        tracing::warn!(
                            lost = n,
                            "Redis messages arrive faster than this node handles them; some were dropped"
                        );
                    }
                }
                Err(RecvError::Closed) => break true,
            }
            if ticks.len() >= MAX_BATCH {
                break false;
            }
            received = match messages.try_recv() {
                Ok(msg) => Ok(msg),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => break false,
            };
        };
        if !ticks.is_empty() {
            handler(&ticks);
            stats.delivered.fetch_add(ticks.len() as u64, Relaxed);
            ticks.clear();
        }
        if closed {
            return;
        }
    }
}

/// Follows the connection's drops and reconnects as generations: a drop
/// ends the current one at once (publishers stop trusting it), a reconnect
/// starts one and asks the actor to resubscribe on it. Awaits nothing else,
/// so it sees a drop before fred has reconnected.
async fn watch_link(
    mut errors: broadcast::Receiver<(Error, Option<fred::types::config::Server>)>,
    mut reconnects: broadcast::Receiver<fred::types::config::Server>,
    link: Arc<Link>,
    resync: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            e = errors.recv() => match e {
                Err(RecvError::Closed) => return,
                _ => {
                    link.bump();
                }
            },
            r = reconnects.recv() => {
                if matches!(r, Err(RecvError::Closed)) {
                    return;
                }
                // A drop is announced before its reconnect: count it first.
                while !matches!(errors.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {
                    link.bump();
                }
                resync.send_replace(link.bump());
            }
        }
    }
}

#[derive(Default)]
struct Batch {
    subscribe: Vec<Symbol>,
    unsubscribe: Vec<Symbol>,
}

/// Owns the subscription state; the only task that sends (un)subscribe commands.
struct Actor {
    client: SubscriberClient,
    /// The generation of each new connection, from [`watch_link`].
    reconnects: watch::Receiver<u64>,
    keys: KeySpace,
    linger: Duration,
    still_needed: StillNeeded,
    /// Symbols whose channel this connection should be subscribed to.
    wanted: HashSet<Symbol>,
    /// Channels whose unsubscribe failed: dropped again on the next resync.
    stray: HashSet<Symbol>,
    /// Symbols with no local subscriber left, and when their linger ends.
    lingering: HashMap<Symbol, Instant>,
    /// Linger deadlines in order (the linger is constant, so this is FIFO);
    /// an entry no longer in `lingering` with the same deadline is stale.
    expiries: VecDeque<(Instant, Symbol)>,
    link: Arc<Link>,
    /// When to retry a full resync, after a failure.
    resync_at: Option<Instant>,
    stats: Arc<SubscriberStats>,
    /// Changes received so far; published on `done` once their commands ran.
    processed: u64,
    done: watch::Sender<u64>,
}

impl Actor {
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let wake = match (self.expiries.front().map(|e| e.0), self.resync_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                r = self.reconnects.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // A new connection starts with no subscription at all.
                    // fred announces it before marking the client connected;
                    // the commands queue behind the reconnect, so send now.
                    self.stray.clear();
                    self.resync(true).await;
                }
                c = changes.recv() => {
                    let Some(c) = c else { return };
                    let mut batch = Batch::default();
                    self.apply(c, &mut batch);
                    self.processed += 1;
                    while let Ok(c) = changes.try_recv() {
                        self.apply(c, &mut batch);
                        self.processed += 1;
                    }
                    self.expire(&mut batch);
                    self.send(batch).await;
                    self.done.send_replace(self.processed);
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => {
                    let mut batch = Batch::default();
                    self.expire(&mut batch);
                    self.send(batch).await;
                    if self.resync_at.is_some_and(|t| t <= Instant::now()) {
                        self.resync(false).await;
                    }
                }
            }
            self.stats.channels.store(self.wanted.len() as u64, Relaxed);
        }
    }

    fn apply(&mut self, change: Change, batch: &mut Batch) {
        match change {
            Change::Follow(s) => {
                self.lingering.remove(&s);
                if self.wanted.insert(s) {
                    self.stray.remove(&s);
                    batch.subscribe.push(s);
                }
            }
            Change::Unfollow(s) => {
                if self.wanted.contains(&s) {
                    let at = Instant::now() + self.linger;
                    self.lingering.insert(s, at);
                    self.expiries.push_back((at, s));
                }
            }
        }
    }

    /// Unsubscribes the symbols whose linger ended and that nobody follows now.
    fn expire(&mut self, batch: &mut Batch) {
        let now = Instant::now();
        while let Some(&(at, s)) = self.expiries.front() {
            if at > now {
                break;
            }
            self.expiries.pop_front();
            if self.lingering.get(&s) != Some(&at) {
                continue;
            }
            self.lingering.remove(&s);
            // A subscriber that came back is also announced by a Follow; this
            // check covers the one still on its way.
            if !(self.still_needed)(&s) {
                self.wanted.remove(&s);
                batch.unsubscribe.push(s);
            }
        }
    }

    async fn send(&mut self, batch: Batch) {
        if batch.subscribe.is_empty() && batch.unsubscribe.is_empty() {
            return;
        }
        if let Err(e) = self.command(true, &batch.subscribe).await {
            self.failed("subscribe", &e);
        }
        if let Err(e) = self.command(false, &batch.unsubscribe).await {
            self.stray.extend(batch.unsubscribe.iter().copied());
            self.failed("unsubscribe", &e);
        }
    }

    fn failed(&mut self, what: &'static str, e: &Error) {
        errors::error(Component::Redis, what);
        if self.link.synced.swap(UNSYNCED, SeqCst) != UNSYNCED {
            tracing::warn!(op = what, error = %e, "Redis call failed; retrying");
        }
        self.resync_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// Makes the connection's subscriptions match `wanted` again. Unless
    /// `now`, waits for the connection (the reconnect event resyncs).
    async fn resync(&mut self, now: bool) {
        if !now && !self.client.is_connected() {
            self.resync_at = Some(Instant::now() + RETRY_AFTER);
            return;
        }
        // Synced is claimed for the generation seen before the commands: if
        // the connection changed meantime, its reconnect resyncs again.
        let generation = self.link.generation();
        let stray: Vec<Symbol> = self.stray.iter().copied().collect();
        let wanted: Vec<Symbol> = self.wanted.iter().copied().collect();
        let result = match self.command(false, &stray).await {
            Ok(()) => self.command(true, &wanted).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.stray.clear();
                self.resync_at = None;
                if self.link.synced.swap(generation, SeqCst) != generation {
                    tracing::debug!(channels = wanted.len(), "Redis subscriptions restored");
                }
            }
            Err(e) => {
                self.resync_at = Some(Instant::now() + RETRY_AFTER);
                tracing::debug!(error = %e, "Redis resubscribe failed; retrying");
            }
        }
    }

    /// `SUBSCRIBE` (or `UNSUBSCRIBE`) the channels of `symbols`, in chunks;
    /// sharded mode uses `SSUBSCRIBE`, one command per cluster slot.
    async fn command(&self, subscribe: bool, symbols: &[Symbol]) -> Result<(), Error> {
        // Never send an empty UNSUBSCRIBE: Redis reads it as "all channels".
        if symbols.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = symbols.iter().map(|s| self.keys.channel(s)).collect();
        let groups: Vec<Vec<String>> = if self.keys.sharded() && self.client.is_clustered() {
            let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
            for c in channels {
                by_slot
                    .entry(fred::util::redis_keyslot(c.as_bytes()))
                    .or_default()
                    .push(c);
            }
            by_slot.into_values().collect()
        } else {
            vec![channels]
        };
        for group in groups {
            for chunk in group.chunks(CHANNELS_PER_COMMAND) {
                let chunk = chunk.to_vec();
                self.stats.subscribe_commands.fetch_add(1, Relaxed);
                match (self.keys.sharded(), subscribe) {
                    (false, true) => self.client.subscribe(chunk).await?,
                    (false, false) => self.client.unsubscribe(chunk).await?,
                    (true, true) => self.client.ssubscribe(chunk).await?,
                    (true, false) => self.client.sunsubscribe(chunk).await?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_synced_only_once_its_channels_are_subscribed() {
        let link = Link::default();
        assert_eq!(
            link.synced(),
            Some(0),
            "nothing wanted on the first connection"
        );
        // A drop: publishers stop trusting generation 0 at once.
        assert_eq!(link.bump(), 1);
        assert_eq!(link.synced(), None);
        // The reconnect starts generation 2; its resync claims it.
        let fresh = link.bump();
        link.synced.store(fresh, SeqCst);
        assert_eq!(link.synced(), Some(2));
        // A resync that read generation 2 but finished after another drop
        // does not make generation 3 synced.
        link.bump();
        link.synced.store(fresh, SeqCst);
        assert_eq!(link.synced(), None);
    }
}
