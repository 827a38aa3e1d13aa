//! [`RedisPriceStore`]: the latest price of a symbol, read from `price:SYMBOL`.
//!
//! Reads that wait at the same time go out together, as one `MGET` of up to
//! [`KEYS_PER_READ`] keys (one per hash slot on a cluster): a burst of
//! subscribes to symbols new to the node costs Redis a few commands, not one
//! per symbol. At most `max_pending` reads wait; past that a read fails at
//! once. A read whose caller gave up before its turn is never sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use marketmux_core::{CandleConfig, Interval, Position, Symbol, Tick};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::candles::CandlePage;
use crate::redis::candles::RedisCandles;
use crate::redis::keys::KeySpace;
use crate::redis::streams::RedisStreams;
use crate::redis::{codec, unavailable};
use crate::stream::{HistoryConfig, HistoryPage, StreamOpen};
use crate::{BusError, PriceStore};
use marketmux_metrics::errors::{self, Component};
use tracing::Instrument as _;

/// Most keys in one `MGET`.
pub const KEYS_PER_READ: usize = 512;
/// Most `MGET`s in flight at once.
const READS_IN_FLIGHT: usize = 4;
/// Reads that may wait by default.
const DEFAULT_MAX_PENDING: usize = 64 * 1024;

type Reply = oneshot::Sender<Result<Option<Tick>, BusError>>;

/// One waiting read.
struct Read {
    key: String,
    reply: Reply,
}

/// Reads the latest tick of a symbol from Redis, and its stream
/// ([`RedisStreams`]). The batching task ends when the store is dropped.
pub struct RedisPriceStore {
    keys: KeySpace,
    client: Client,
    streams: RedisStreams,
    candles: RedisCandles,
    reads: mpsc::Sender<Read>,
    /// Longest a read waits, in the queue and in Redis together.
    deadline: Duration,
}

impl RedisPriceStore {
    /// A store over a connected `client`, with the default bound on waiting reads.
    pub fn new(client: Client, keys: KeySpace) -> Self {
        Self::bounded(client, keys, DEFAULT_MAX_PENDING)
    }

    /// A store over a connected `client` that lets at most `max_pending`
    /// reads wait for Redis.
    pub fn bounded(client: Client, keys: KeySpace, max_pending: usize) -> Self {
        let deadline = client.perf_config().default_command_timeout;
        let (reads, rx) = mpsc::channel(max_pending.max(1));
        tokio::spawn(batch_reads(client.clone(), rx).in_current_span());
        Self {
            streams: RedisStreams::new(client.clone(), keys.clone(), HistoryConfig::default()),
            candles: RedisCandles::new(client.clone(), keys.clone(), CandleConfig::default()),
            client,
            keys,
            reads,
            deadline: if deadline.is_zero() {
                Duration::from_secs(3)
            } else {
                deadline
            },
        }
    }

    /// Serves no kept tick older than `history.ttl`.
    pub fn with_history(mut self, history: HistoryConfig) -> Self {
        self.streams = RedisStreams::new(self.client.clone(), self.keys.clone(), history);
        self
    }

    /// Closes candles by the clock with `candles`' grace, keeping its count.
    pub fn with_candles(mut self, candles: CandleConfig) -> Self {
        self.candles = RedisCandles::new(self.client.clone(), self.keys.clone(), candles);
        self
    }
}

#[async_trait]
impl PriceStore for RedisPriceStore {
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        let (reply, answer) = oneshot::channel();
        let read = Read {
            key: self.keys.price_key(symbol),
            reply,
        };
        if self.reads.try_send(read).is_err() {
            errors::error(Component::Redis, "read");
            return Err(BusError::Unavailable(
                "redis: too many latest-price reads waiting".into(),
            ));
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BusError::Unavailable("redis: store stopped".into())),
            Err(_) => {
                errors::error(Component::Redis, "read");
                Err(BusError::Unavailable(format!(
                    "redis: no answer within {:?}",
                    self.deadline
                )))
            }
        }
    }

    async fn open(&self, symbol: &Symbol, since: Option<Position>) -> Result<StreamOpen, BusError> {
        let opened = self.streams.open(symbol, since).await;
        if opened.is_err() {
            errors::error(Component::Redis, "read");
        }
        opened
    }

    async fn history(
        &self,
        symbol: &Symbol,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        let page = self.streams.history(symbol, since, limit).await;
        if page.is_err() {
            errors::error(Component::Redis, "read");
        }
        page
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Result<Option<CandlePage>, BusError> {
        let page = self.candles.page(symbol, interval, limit).await;
        if page.is_err() {
            errors::error(Component::Redis, "read");
        }
        page
    }
}

/// Takes every read waiting, sends them as `MGET`s, answers each; ends when
/// the store is dropped.
async fn batch_reads(client: Client, mut reads: mpsc::Receiver<Read>) {
    let in_flight = Arc::new(Semaphore::new(READS_IN_FLIGHT));
    // A read that cannot be sent now fails now, rather than wait for a reconnect.
    let client = client.with_options(&Options {
        fail_fast: true,
        ..Options::default()
    });
    let mut batch = Vec::with_capacity(KEYS_PER_READ);
    while let Some(first) = reads.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        batch.push(first);
        while batch.len() < KEYS_PER_READ {
            match reads.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Callers that timed out while waiting: nothing to send for them.
        batch.retain(|r| !r.reply.is_closed());
        let mut groups: HashMap<u16, Vec<Read>> = HashMap::new();
        if client.is_clustered() {
            for r in batch.drain(..) {
                let slot = fred::util::redis_keyslot(r.key.as_bytes());
                groups.entry(slot).or_default().push(r);
            }
        } else if !batch.is_empty() {
            groups.insert(0, std::mem::take(&mut batch));
        }
        let client = client.clone();
        tokio::spawn(
            async move {
                for group in groups.into_values() {
                    mget(&client, group).await;
                }
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

/// One `MGET` for `reads` (all in one hash slot); answers every read.
async fn mget<C: KeysInterface + Sync>(client: &C, reads: Vec<Read>) {
    let keys: Vec<&str> = reads.iter().map(|r| r.key.as_str()).collect();
    let result: Result<Vec<Value>, Error> = if keys.len() == 1 {
        client.get::<Value, _>(keys[0]).await.map(|v| vec![v])
    } else {
        client.mget(keys).await
    };
    match result {
        Ok(values) if values.len() == reads.len() => {
            for (r, v) in reads.into_iter().zip(values) {
                let tick = v
                    .as_bytes()
                    .map(codec::decode)
                    .transpose()
                    .map_err(|e| BusError::Rejected(format!("{}: {e}", r.key)));
                let _ = r.reply.send(tick);
            }
        }
        Ok(values) => {
            let why = format!(
                "redis: MGET of {} keys answered {} values",
                reads.len(),
                values.len()
            );
            errors::error(Component::Redis, "read");
            for r in reads {
                let _ = r.reply.send(Err(BusError::Unavailable(why.clone())));
            }
        }
        Err(e) => {
            errors::error(Component::Redis, "read");
            for r in reads {
                let _ = r.reply.send(Err(unavailable(e.clone())));
            }
        }
    }
}
