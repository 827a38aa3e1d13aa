//! The Redis edge bus (fred): how gateway nodes share ticks and latest prices.
//!
//! - [`keys`]: [`KeySpace`], key and channel names (`price:SYMBOL`, `ticks:SYMBOL`, a prefix).
//! - [`codec`]: the tick JSON stored in `price:SYMBOL` and published on channels.
//! - [`script`]: the Lua script that accepts a tick: drops a redelivery,
//!   numbers it, sets the latest price only if newer, keeps it in history, publishes.
//! - [`candles`]: [`RedisCandles`], a symbol's candles (built by the accept
//!   script) read a page at a time.
//! - [`streams`]: [`RedisStreams`], a symbol's stream for a new subscriber
//!   (head, latest, replay) and history pages, one script call each.
//! - [`publisher`]: [`RedisPublisher`], a batch of ticks in one pipeline.
//! - [`store`]: [`RedisPriceStore`], `price:SYMBOL`, concurrent reads batched in `MGET`s.
//! - [`subscriber`]: [`RedisSubscriber`], one subscriber connection per node,
//!   following the symbols its clients follow, with a linger on unsubscribe.
//! - [`health`]: readiness (connections up, answering a PING each second,
//!   channels subscribed) and one log line per change.
//! - [`alerts`]: fired alerts from the alerts role to every gateway node.
//!
//! [`RedisBus`] puts them together for a gateway node.

pub mod alerts;
pub mod candles;
pub mod codec;
pub mod health;
pub mod keys;
pub mod publisher;
pub mod script;
pub mod store;
pub mod streams;
pub mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use marketmux_core::{CandleConfig, Interval, Position, Symbol, Tick};
use tokio::sync::watch;

pub use candles::RedisCandles;
pub use health::RedisHealth;
pub use keys::KeySpace;
pub use publisher::RedisPublisher;
pub use store::RedisPriceStore;
pub use streams::RedisStreams;
pub use subscriber::{RedisSubscriber, StillNeeded, SubscriberStats};

use crate::candles::CandlePage;
use crate::stream::{HistoryConfig, HistoryPage, Origin, StreamOpen};
use crate::{BusError, PriceStore, Readiness, TickBatchHandler, TickPublisher};
use marketmux_metrics::errors::{self, Component};
use tracing::Instrument as _;

/// The operations whose Redis failures `/metrics` counts.
pub const REDIS_OPS: &[&str] = &[
    "publish",
    "read",
    "subscribe",
    "unsubscribe",
    "decode",
    "lagged",
];

/// How to reach Redis and name things in it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]`, `redis-cluster://host:port`, or a
    /// bare `host:port` (the conventional `REDIS_ADDR`).
    pub url: String,
    /// Put in front of every key and channel name (default empty: `price:SYMBOL`).
    pub prefix: String,
    /// Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) for Redis Cluster.
    pub sharded: bool,
    /// How long a symbol stays subscribed after its last local subscriber left.
    pub unsubscribe_linger: Duration,
    /// Every command fails after this long (a `POST` then answers 503 rather than hang).
    pub command_timeout: Duration,
    /// The first connection must succeed within this long.
    pub connect_timeout: Duration,
    /// Reconnect backoff: from 100 ms, doubling, up to this.
    pub reconnect_max_delay: Duration,
    /// Messages fred buffers for the node's reader; past it the oldest are lost
    /// (counted in [`SubscriberStats::lost`]).
    pub message_buffer: usize,
    /// Latest-price reads waiting for Redis; past it a read fails at once.
    pub max_pending_reads: usize,
    /// How much history each symbol keeps (publishing), and how old a kept
    /// tick may be (reading).
    pub history: HistoryConfig,
    /// How many closed candles each symbol keeps per interval (publishing),
    /// and the grace after which the clock closes a candle (both).
    pub candles: CandleConfig,
    /// How often both connections are PINGed for readiness.
    pub ping_interval: Duration,
    /// A PING not answered within this long makes the node unready.
    pub ping_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: String::new(),
            sharded: false,
            unsubscribe_linger: Duration::from_secs(5),
            command_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(5),
            message_buffer: 16 * 1024,
            max_pending_reads: 64 * 1024,
            history: HistoryConfig::default(),
            candles: CandleConfig::default(),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                format!("{}://***@{}", &self.url[..s], &self.url[at + 1..])
            }
            (None, Some(at)) => format!("***@{}", &self.url[at + 1..]),
            _ => self.url.clone(),
        }
    }

    /// A fred builder; `events` is the capacity of each of fred's event
    /// channels (messages, errors, reconnects), allocated up front.
    fn builder(&self, events: usize) -> Result<Builder, BusError> {
        let url = if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("redis://{}", self.url)
        };
        let mut config = Config::from_url(&url).map_err(|e| {
            BusError::Rejected(format!("invalid redis url {}: {e}", self.redacted_url()))
        })?;
        config.fail_fast = true;
        let mut b = Builder::from_config(config);
        let max_ms = u32::try_from(self.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
        b.set_policy(ReconnectPolicy::new_exponential(0, 100, max_ms.max(100), 2));
        let (timeout, buffer, connect) =
            (self.command_timeout, events.max(16), self.connect_timeout);
        b.with_performance_config(move |p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = buffer;
        });
        b.with_connection_config(move |c| {
            c.connection_timeout = connect;
            // fred's queue stays unbounded: fred 10 flushes the socket after a
            // command only when it counts no command queued behind it, and a
            // command refused by a full bounded queue (backpressure) is never
            // taken off that count. After one overflow every later lone command
            // waited unsent until something else flushed. Bounds live here
            // instead (waiting reads, see `store`).
            c.max_command_buffer_len = 0;
            // A command the connection lost is not sent again after the
            // reconnect: its caller gets the error (a POST answers 503).
            c.max_command_attempts = 1;
        });
        Ok(b)
    }

    /// A connected command client (publishing, latest prices).
    pub async fn connect_client(&self) -> Result<Client, BusError> {
        // No messages on this connection: fred's default event buffers.
        let client = self.builder(32)?.build().map_err(unavailable)?;
        self.init(&client).await?;
        Ok(client)
    }

    /// A connected subscriber client.
    pub async fn connect_subscriber(&self) -> Result<SubscriberClient, BusError> {
        let client = self
            .builder(self.message_buffer)?
            .build_subscriber_client()
            .map_err(unavailable)?;
        self.init(&client).await?;
        Ok(client)
    }

    async fn init<C: ClientLike>(&self, client: &C) -> Result<(), BusError> {
        let cannot = |why: String| {
            BusError::Unavailable(format!(
                "cannot connect to Redis at {}: {why}",
                self.redacted_url()
            ))
        };
        match tokio::time::timeout(self.connect_timeout, client.init()).await {
            Ok(Ok(_task)) => Ok(()),
            Ok(Err(e)) => Err(cannot(e.to_string())),
            Err(_) => Err(cannot(format!(
                "no answer within {:?}",
                self.connect_timeout
            ))),
        }
    }
}

/// A fred error as a bus error.
pub(crate) fn unavailable(e: Error) -> BusError {
    BusError::Unavailable(format!("redis: {e}"))
}

/// Everything a gateway node needs from Redis: publishing, latest prices,
/// the interest-following subscriber, and readiness.
pub struct RedisBus {
    publisher: RedisPublisher,
    store: RedisPriceStore,
    subscriber: RedisSubscriber,
    health: Arc<RedisHealth>,
    client: Client,
    subscriber_client: SubscriberClient,
    stop: watch::Sender<bool>,
}

impl RedisBus {
    /// Connects both connections (commands, subscriber) and starts delivering
    /// ticks of followed symbols to `handler`. `still_needed` tells whether
    /// the node has a local subscriber of a symbol (asked when a linger ends).
    pub async fn connect(
        config: RedisConfig,
        handler: TickBatchHandler,
        still_needed: StillNeeded,
    ) -> Result<Arc<Self>, BusError> {
        let keys = KeySpace::new(&config.prefix, config.sharded)?;
        errors::register(Component::Redis, REDIS_OPS);
        let client = config.connect_client().await?;
        let subscriber_client = config.connect_subscriber().await?;
        crate::candles::register();
        let publisher = RedisPublisher::new(client.clone(), keys.clone())
            .with_history(config.history)
            .with_candles(config.candles);
        publisher.load_script().await?;
        let store =
            RedisPriceStore::bounded(client.clone(), keys.clone(), config.max_pending_reads)
                .with_history(config.history)
                .with_candles(config.candles);
        let (stop, stop_rx) = watch::channel(false);
        let subscriber = RedisSubscriber::start(
            subscriber_client.clone(),
            keys,
            config.unsubscribe_linger,
            handler,
            still_needed,
            stop_rx.clone(),
        );
        let health = Arc::new(RedisHealth::new(
            client.clone(),
            subscriber_client.clone(),
            Some(subscriber.clone()),
            config.ping_interval,
            config.ping_timeout,
        ));
        tokio::spawn(
            health::probe(health.clone(), config.ping_interval, stop_rx.clone()).in_current_span(),
        );
        tokio::spawn(
            health::log_changes(health.clone(), config.redacted_url(), stop_rx).in_current_span(),
        );
        tracing::info!(url = %config.redacted_url(), prefix = %config.prefix, sharded = config.sharded, "Redis edge bus connected");
        Ok(Arc::new(Self {
            publisher,
            store,
            subscriber,
            health,
            client,
            subscriber_client,
            stop,
        }))
    }

    /// Subscribe in Redis to `symbol` (the node's first local subscriber).
    pub fn follow(&self, symbol: Symbol) {
        self.subscriber.follow(symbol);
    }

    /// `symbol` lost its last local subscriber: unsubscribe after the linger.
    pub fn unfollow(&self, symbol: Symbol) {
        self.subscriber.unfollow(symbol);
    }

    /// The publisher (counts of stored and stale ticks).
    pub fn publisher(&self) -> &RedisPublisher {
        &self.publisher
    }

    /// The subscriber (counters, sync state).
    pub fn subscriber(&self) -> &RedisSubscriber {
        &self.subscriber
    }

    /// Readiness of both connections, to share with other components.
    pub fn health(&self) -> Arc<RedisHealth> {
        self.health.clone()
    }

    /// Stops the tasks and closes both connections.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let wait = Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, self.subscriber_client.quit()).await;
        let _ = tokio::time::timeout(wait, self.client.quit()).await;
    }
}

/// Publishing from a node promises its own clients the ticks: Redis must be
/// serving, the subscriber connection subscribed before the publish and the
/// same connection still subscribed after it ([`RedisSubscriber::passed`]).
/// Otherwise the caller gets `Unavailable` (a POST answers 503), though
/// Redis may have published the ticks to other nodes.
#[async_trait]
impl TickPublisher for RedisBus {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.publish_from(ticks.into_iter().map(|t| (t, None)).collect())
            .await
            .map(|_| ())
    }

    async fn publish_from(&self, ticks: Vec<(Tick, Option<Origin>)>) -> Result<usize, BusError> {
        let refuse = |why: String| {
            errors::error(Component::Redis, "publish");
            Err(BusError::Unavailable(why))
        };
        if let Err(why) = self.health.check() {
            return refuse(why);
        }
        let Some(generation) = self.subscriber.serving() else {
            return refuse("redis: subscriber connection not subscribed".into());
        };
        let duplicates = self.publisher.publish_from(ticks).await?;
        if !self.subscriber.passed(generation).await {
            return refuse(
                "redis: the subscriber connection dropped while publishing; \
                 this node's clients may miss these ticks"
                    .into(),
            );
        }
        Ok(duplicates)
    }
}

#[async_trait]
impl PriceStore for RedisBus {
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        self.store.latest(symbol).await
    }

    /// Reads `price:SYMBOL` once the node's pending (un)subscribes are
    /// answered, so a snapshot taken for a first local subscriber is never
    /// older than what its channel delivers next.
    async fn snapshot(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        let _ = self.subscriber.settled().await;
        self.store.latest(symbol).await
    }

    async fn open(&self, symbol: &Symbol, since: Option<Position>) -> Result<StreamOpen, BusError> {
        // Read only once this node's subscription is in effect: every tick
        // published after the read then reaches the node live. The actor
        // having sent the SUBSCRIBE is not enough (fred may answer before
        // Redis ran it): a PING answered on the same subscriber connection
        // comes after it.
        let refuse = |why: &str| {
            errors::error(Component::Redis, "subscribe");
            Err(BusError::Unavailable(format!(
                "redis: {why}; a replay now could leave a hole"
            )))
        };
        if !self.subscriber.settled().await {
            return refuse("the node's subscription is not in effect yet");
        }
        let Some(generation) = self.subscriber.serving() else {
            return refuse("subscriber connection not subscribed");
        };
        if !self.subscriber.passed(generation).await {
            return refuse("the subscriber connection did not answer");
        }
        self.store.open(symbol, since).await
    }

    async fn history(
        &self,
        symbol: &Symbol,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        self.store.history(symbol, since, limit).await
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Result<Option<CandlePage>, BusError> {
        self.store.candles(symbol, interval, limit).await
    }
}

impl Readiness for RedisBus {
    fn check(&self) -> Result<(), String> {
        self.health.check()
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        let c = |url: &str| RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        };
        assert_eq!(
            c("redis://user:secret@h:6379/0").redacted_url(),
            "redis://***@h:6379/0"
        );
        assert_eq!(c("redis://h:6379").redacted_url(), "redis://h:6379");
        assert_eq!(c("pw@h:6379").redacted_url(), "***@h:6379");
    }

    #[test]
    fn bare_addresses_and_bad_urls() {
        let c = RedisConfig {
            url: "127.0.0.1:6379".into(),
            ..RedisConfig::default()
        };
        assert!(c.builder(32).is_ok());
        let bad = RedisConfig {
            url: "redis://h:notaport".into(),
            ..RedisConfig::default()
        };
        assert!(bad.builder(32).is_err());
    }
}
