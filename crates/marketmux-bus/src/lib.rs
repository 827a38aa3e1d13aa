//! Where accepted ticks go, and where the latest price of each symbol lives.
//!
//! - [`TickPublisher`]: accepts ticks (from `POST /api/v1/ticks`, the synthetic
//!   feed, an ingestor, the Kafka bridge) and returns once the bus has them.
//!   Where a tick enters the bus it gets its symbol's next `seq` (one stream
//!   per symbol, the same on every node); a redelivered one is dropped there.
//! - [`PriceStore`]: the latest price per symbol (an older tick never replaces
//!   a newer one), and each symbol's stream: head, history, recovery.
//! - [`stream`]: the stream types ([`Origin`], [`StreamOpen`], [`HistoryPage`],
//!   [`HistoryConfig`]).
//! - [`TickBatchHandler`]: the callback through which a bus delivers ticks
//!   to a node (the gateway wires it to the hub, `dev` also to the alerts).
//! - [`candles`]: candle pages ([`CandlePage`]) and the late-tick count;
//!   candles are built where `seq` is assigned, by both buses.
//! - [`in_process`]: both, in memory, for the `dev` role and tests; its
//!   streams live in [`streams`], saved across a clean restart by [`saved`].
//! - [`redis`]: the Redis edge bus (fred) of gateway nodes: latest price and
//!   per-symbol pub/sub, one interest-following subscriber per node.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod candles;
pub mod in_process;
pub mod latest;
pub mod redis;
pub mod saved;
pub mod stream;
pub mod streams;

use std::sync::Arc;

use async_trait::async_trait;
use marketmux_core::{Interval, Position, Symbol, Tick};

pub use candles::CandlePage;
pub use in_process::InProcessBus;
pub use latest::LatestPrices;
pub use redis::{RedisBus, RedisConfig};
pub use stream::{HistoryConfig, HistoryPage, Origin, StreamOpen, MAX_HISTORY_PAGE};

/// Receives the ticks a bus delivers to this node (with their `seq` and
/// `epoch`), in arrival order, as many at once as arrived together. Must
/// not block.
pub type TickBatchHandler = Arc<dyn Fn(&[Tick]) + Send + Sync>;

/// Why a bus or store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached now; the call may work later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus answered, and refused the request.
    #[error("bus rejected the request: {0}")]
    Rejected(String),
}

/// Accepts ticks into the bus.
#[async_trait]
pub trait TickPublisher: Send + Sync {
    /// Publishes `ticks` in order; returns once the bus acknowledged all of
    /// them. Every accepted tick gets its symbol's next `seq`.
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError>;

    /// Like [`TickPublisher::publish`], but a tick whose origin was already
    /// accepted (at or below the last `sequence` accepted from that producer
    /// for that symbol) is dropped: no `seq`, it reaches no client. Returns
    /// how many were dropped as duplicates.
    ///
    /// The default, for sinks that assign no `seq` (Kafka), forwards every
    /// tick and drops none.
    async fn publish_from(&self, ticks: Vec<(Tick, Option<Origin>)>) -> Result<usize, BusError> {
        self.publish(ticks.into_iter().map(|(t, _)| t).collect())
            .await
            .map(|()| 0)
    }
}

/// The latest price of each symbol.
#[async_trait]
pub trait PriceStore: Send + Sync {
    /// The newest tick of `symbol`, if any is known.
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError>;

    /// The newest tick of `symbol` for a socket that just started following
    /// it: never older than what the bus delivers to it next. The same as
    /// [`PriceStore::latest`] unless following a symbol takes effect later
    /// than the read (Redis: a SUBSCRIBE still on its way).
    async fn snapshot(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        self.latest(symbol).await
    }

    /// Opens `symbol`'s stream for a new subscriber of this node; see
    /// [`StreamOpen`]. Creates the symbol's epoch when it has none. No hole:
    /// every tick after `head` is delivered live to this node (Redis: the
    /// node's subscription is in effect before the read, as for
    /// [`PriceStore::snapshot`]).
    async fn open(&self, symbol: &Symbol, since: Option<Position>) -> Result<StreamOpen, BusError>;

    /// One page of `symbol`'s history: the first `limit` kept ticks after
    /// `since`, or the last `limit` without it (`limit` at most
    /// [`MAX_HISTORY_PAGE`]).
    async fn history(
        &self,
        symbol: &Symbol,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError>;

    /// The last `limit` candles of `symbol` for `interval` (at most
    /// [`marketmux_core::candle::MAX_CANDLE_PAGE`]), oldest first, the
    /// current one last; `None` for a symbol that never had a tick.
    async fn candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Result<Option<CandlePage>, BusError>;
}

/// Whether a component can serve now (backs `/ready`).
pub trait Readiness: Send + Sync {
    /// `Err` names what is down.
    fn check(&self) -> Result<(), String>;

    /// A short, stable name for metrics (`marketmux_component_up{component=...}`).
    fn name(&self) -> &'static str {
        "bus"
    }
}
