//! [`RedisPublisher`]: accepts ticks into Redis: duplicate check, `seq`,
//! latest price, history and pub/sub in one atomic Lua call per tick
//! ([`super::script`]), a batch in one pipeline.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use marketmux_core::{CandleConfig, Epoch, Tick};

use crate::candles;
use crate::redis::keys::KeySpace;
use crate::redis::{codec, script, unavailable, RedisConfig};
use crate::stream::{HistoryConfig, Origin};
use crate::streams::{MAX_PRODUCERS, PRODUCER_TTL};
use crate::{BusError, TickPublisher};
use marketmux_metrics::errors::{self, Component};

/// Publishes ticks to Redis. A batch is one pipeline of `EVALSHA` calls, sent
/// in order on one connection, so ticks of a symbol keep their order.
pub struct RedisPublisher {
    client: Client,
    keys: KeySpace,
    script: Script,
    history: HistoryConfig,
    candles: CandleConfig,
    stored: AtomicU64,
    stale: AtomicU64,
    duplicates: AtomicU64,
}

/// One tick's script call.
struct Call {
    keys: [String; 9],
    args: Vec<String>,
}

/// What the script did with one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    /// Numbered and published; `latest`: it became the latest price;
    /// `late`: the intervals whose candle had closed (a bit set).
    Published { latest: bool, late: u8 },
    /// Its origin was accepted before: dropped.
    Duplicate,
}

impl RedisPublisher {
    /// A publisher over a connected `client`.
    /// A publisher over a connected `client`, keeping the default history.
    pub fn new(client: Client, keys: KeySpace) -> Self {
        Self {
            client,
            keys,
            script: script::accept_tick_script(),
            history: HistoryConfig::default(),
            candles: CandleConfig::default(),
            stored: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// Keeps `history` of each symbol it publishes to.
    pub fn with_history(mut self, history: HistoryConfig) -> Self {
        self.history = history;
        self
    }

    /// Keeps candles of each symbol it publishes to as `candles` says.
    pub fn with_candles(mut self, candles: CandleConfig) -> Self {
        self.candles = candles;
        self
    }

    /// Connects a command client for `config` and loads the script: all a
    /// process needs to publish (the bridge, `mock-publisher --redis-url`).
    pub async fn connect(config: &RedisConfig) -> Result<Self, BusError> {
        let keys = KeySpace::new(&config.prefix, config.sharded)?;
        let publisher = Self::new(config.connect_client().await?, keys)
            .with_history(config.history)
            .with_candles(config.candles);
        publisher.load_script().await?;
        Ok(publisher)
    }

    /// Loads the script into Redis (done again by itself after `NOSCRIPT`).
    pub async fn load_script(&self) -> Result<(), BusError> {
        self.script.load(&self.client).await.map_err(unavailable)
    }

    /// (ticks that became the latest price, ticks older than the stored price).
    pub fn counts(&self) -> (u64, u64) {
        (self.stored.load(Relaxed), self.stale.load(Relaxed))
    }

    /// Ticks dropped because their origin was accepted before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }

    fn call(&self, tick: &Tick, origin: Option<Origin>, epoch: Epoch) -> Call {
        let sharded = if self.keys.sharded() { "1" } else { "0" };
        let (producer, sequence) = match origin.filter(|o| o.producer_id != 0 && o.sequence != 0) {
            Some(o) => (o.producer_id.to_string(), o.sequence.to_string()),
            None => (String::new(), String::new()),
        };
        let (size, ttl) = if self.history.enabled() {
            (self.history.size, self.history.ttl.as_millis())
        } else {
            (0, 0)
        };
        Call {
            keys: self.keys.symbol_keys(&tick.symbol),
            args: vec![
                tick.timestamp.0.to_string(),
                codec::encode_open(tick),
                self.keys.channel(&tick.symbol),
                sharded.to_owned(),
                epoch.to_string(),
                size.to_string(),
                ttl.to_string(),
                producer,
                sequence,
                MAX_PRODUCERS.to_string(),
                PRODUCER_TTL.as_millis().to_string(),
                self.candles.history.to_string(),
                self.candles.grace_ms.to_string(),
                tick.timestamp.0.div_euclid(1_000_000).to_string(),
                tick.price.to_string(),
                tick.volume.unwrap_or(0.0).to_string(),
            ],
        }
    }

    /// Sends `calls` as one pipeline; one result per call, in order.
    async fn run(&self, calls: &[&Call]) -> Result<Vec<Result<Accepted, Error>>, BusError> {
        // fred's Pipeline has no Lua methods: EVALSHA as a custom command,
        // routed (in a cluster) by the slot of its keys (all in one slot).
        let pipeline = self.client.pipeline();
        let sha = self.script.sha1().to_string();
        for c in calls {
            let slot = fred::util::redis_keyslot(c.keys[0].as_bytes());
            let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
            let mut args: Vec<&str> = Vec::with_capacity(2 + c.keys.len() + c.args.len());
            args.extend([sha.as_str(), "9"]);
            args.extend(c.keys.iter().map(String::as_str));
            args.extend(c.args.iter().map(String::as_str));
            let () = pipeline.custom(cmd, args).await.map_err(unavailable)?;
        }
        Ok(pipeline
            .try_all::<Vec<i64>>()
            .await
            .into_iter()
            .map(|r| r.and_then(accepted))
            .collect())
    }

    /// Numbers, stores and publishes `ticks` in one pipelined round of script
    /// calls; returns how many were dropped as duplicates.
    async fn publish_in_order(
        &self,
        ticks: Vec<(Tick, Option<Origin>)>,
    ) -> Result<usize, BusError> {
        if ticks.is_empty() {
            return Ok(0);
        }
        // Used only by a symbol that has no epoch yet.
        let epoch = Epoch::random();
        let calls: Vec<Call> = ticks.iter().map(|(t, o)| self.call(t, *o, epoch)).collect();
        let all: Vec<&Call> = calls.iter().collect();
        let mut results = self.run(&all).await?;

        // Redis restarted or flushed its scripts: load, then redo what failed,
        // in order. Known limit: if the scripts vanish in the middle of this
        // pipeline and another publisher reloads them before its later calls
        // run, those later calls are published before the redone ones, so
        // that batch's ticks of a symbol can arrive out of order (the stored
        // latest price still ends up the newest).
        let missing: Vec<usize> = (0..results.len())
            .filter(|&i| matches!(&results[i], Err(e) if is_noscript(e)))
            .collect();
        if !missing.is_empty() {
            self.load_script().await?;
            let redo: Vec<&Call> = missing.iter().map(|&i| &calls[i]).collect();
            for (i, r) in missing.into_iter().zip(self.run(&redo).await?) {
                results[i] = r;
            }
        }

        let (mut stored, mut stale, mut duplicates) = (0, 0, 0);
        for r in results {
            match r {
                Ok(Accepted::Published { latest, late }) => {
                    if latest {
                        stored += 1;
                    } else {
                        stale += 1;
                    }
                    candles::count_late(late);
                }
                Ok(Accepted::Duplicate) => duplicates += 1,
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.stored.fetch_add(stored, Relaxed);
        self.stale.fetch_add(stale, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
        Ok(duplicates as usize)
    }
}

/// Reads the script's `{latest, seq}` reply.
fn accepted(reply: Vec<i64>) -> Result<Accepted, Error> {
    match reply.as_slice() {
        [-1, ..] => Ok(Accepted::Duplicate),
        [latest, seq, late] if *seq > 0 => Ok(Accepted::Published {
            latest: *latest == 1,
            late: u8::try_from(*late).unwrap_or(0),
        }),
        other => Err(Error::new(
            fred::error::ErrorKind::Parse,
            format!("unexpected reply from the accept script: {other:?}"),
        )),
    }
}

fn is_noscript(e: &Error) -> bool {
    e.details().contains("NOSCRIPT")
}

#[async_trait]
impl TickPublisher for RedisPublisher {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.publish_from(ticks.into_iter().map(|t| (t, None)).collect())
            .await
            .map(|_| ())
    }

    async fn publish_from(&self, ticks: Vec<(Tick, Option<Origin>)>) -> Result<usize, BusError> {
        let published = self.publish_in_order(ticks).await;
        if published.is_err() {
            errors::error(Component::Redis, "publish");
        }
        published
    }
}
