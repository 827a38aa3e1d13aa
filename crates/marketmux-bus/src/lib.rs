//! Where accepted ticks go, and where the latest price of each symbol lives.
//!
//! - [`TickPublisher`]: accepts ticks (from `POST /api/v1/ticks`, the synthetic
//!   feed, an ingestor) and returns once the bus has them.
//! - [`PriceStore`]: the latest price per symbol; an older tick never replaces
//!   a newer one.
//! - [`TickHandler`], [`TickBatchHandler`]: the callbacks through which a bus
//!   delivers ticks to a node (the gateway wires them to the hub).
//! - [`metrics`]: failures of Redis, Kafka, the database, counted for `/metrics`.
//! - [`in_process`]: both, in memory, for the `dev` role and tests.
//! - [`redis`]: the Redis edge bus (fred) of gateway nodes: latest price and
//!   per-symbol pub/sub, one interest-following subscriber per node.
//! - [`testing`]: a `redis-server` of a test's own.

pub mod in_process;
pub mod latest;
pub mod metrics;
pub mod redis;
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use marketmux_core::{Symbol, Tick};

pub use in_process::InProcessBus;
pub use latest::LatestPrices;
pub use redis::{RedisBus, RedisConfig};

/// Receives every tick the bus delivers to this node. Must not block.
pub type TickHandler = Arc<dyn Fn(&Tick) + Send + Sync>;

/// Receives the ticks a bus delivers to this node, in arrival order, as many
/// at once as arrived together. Must not block.
pub type TickBatchHandler = Arc<dyn Fn(&[Tick]) + Send + Sync>;

/// Why a bus or store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus rejected the request: {0}")]
    Rejected(String),
}

/// Accepts ticks into the bus.
#[async_trait]
pub trait TickPublisher: Send + Sync {
    /// Publishes `ticks` in order; returns once the bus acknowledged all of them.
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError>;
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
