//! [`RedisPublisher`]: accepts ticks into Redis: latest price and pub/sub in
//! one atomic Lua call per tick, a batch in one pipeline.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use marketmux_core::Tick;

use crate::metrics::{self, Component};
use crate::redis::keys::KeySpace;
use crate::redis::{codec, script, unavailable, RedisConfig};
use crate::{BusError, TickPublisher};

/// Publishes ticks to Redis. A batch is one pipeline of `EVALSHA` calls, sent
/// in order on one connection, so ticks of a symbol keep their order.
pub struct RedisPublisher {
    client: Client,
    keys: KeySpace,
    script: Script,
    stored: AtomicU64,
    stale: AtomicU64,
}

/// One tick's script call.
struct Call {
    key: String,
    args: Vec<String>,
}

impl RedisPublisher {
    /// A publisher over a connected `client`.
    pub fn new(client: Client, keys: KeySpace) -> Self {
        Self {
            client,
            keys,
            script: script::accept_tick_script(),
            stored: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// Connects a command client for `config` and loads the script: all a
    /// process needs to publish (the bridge, `mock-publisher --redis-url`).
    pub async fn connect(config: &RedisConfig) -> Result<Self, BusError> {
        let keys = KeySpace::new(&config.prefix, config.sharded)?;
        let publisher = Self::new(config.connect_client().await?, keys);
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

    fn call(&self, tick: &Tick) -> Call {
        let sharded = if self.keys.sharded() { "1" } else { "0" };
        Call {
            key: self.keys.price_key(&tick.symbol),
            args: vec![
                tick.timestamp.0.to_string(),
                codec::encode(tick),
                self.keys.channel(&tick.symbol),
                sharded.to_owned(),
            ],
        }
    }

    /// Sends `calls` as one pipeline; one result per call, in order.
    async fn run(&self, calls: &[&Call]) -> Result<Vec<Result<i64, Error>>, BusError> {
        // fred's Pipeline has no Lua methods: EVALSHA as a custom command,
        // routed (in a cluster) by the slot of its one key.
        let pipeline = self.client.pipeline();
        let sha = self.script.sha1().to_string();
        for c in calls {
            let slot = fred::util::redis_keyslot(c.key.as_bytes());
            let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
            let mut args: Vec<&str> = Vec::with_capacity(3 + c.args.len());
            args.extend([sha.as_str(), "1", c.key.as_str()]);
            args.extend(c.args.iter().map(String::as_str));
            let () = pipeline.custom(cmd, args).await.map_err(unavailable)?;
        }
        Ok(pipeline.try_all::<i64>().await)
    }

    /// Stores and publishes `ticks` in one pipelined round of script calls.
    async fn publish_in_order(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        if ticks.is_empty() {
            return Ok(());
        }
        let calls: Vec<Call> = ticks.iter().map(|t| self.call(t)).collect();
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

        let (mut stored, mut stale) = (0, 0);
        for r in results {
            match r {
                Ok(1) => stored += 1,
                Ok(_) => stale += 1,
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.stored.fetch_add(stored, Relaxed);
        self.stale.fetch_add(stale, Relaxed);
        Ok(())
    }
}

fn is_noscript(e: &Error) -> bool {
    e.details().contains("NOSCRIPT")
}

#[async_trait]
impl TickPublisher for RedisPublisher {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        let published = self.publish_in_order(ticks).await;
        if published.is_err() {
            metrics::error(Component::Redis, "publish");
        }
        published
    }
}
