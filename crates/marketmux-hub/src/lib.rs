//! The symbol hub: who follows which symbol, and each client's outgoing queue.
//!
//! - [`hub`]: [`SymbolHub`], topics sharded by symbol. Publishing a tick encodes it
//!   once and hands the same [`bytes::Bytes`] to every subscriber's queue.
//! - [`queue`]: [`ClientQueue`], one client's bounded outgoing queue. When full it
//!   conflates (keeps only the newest tick per symbol) and closes a client that
//!   stays behind past its bound. It never blocks the publisher.
//! - [`stats`]: counters the metrics endpoint reads.
//!
//! Nothing here touches a socket, Redis or Kafka: the gateway drains queues into
//! sockets, and bus adapters feed [`SymbolHub::publish`].

pub mod hub;
pub mod queue;
pub mod stats;

pub use hub::{HubConfig, Interest, SymbolHub, TickEncoder};
pub use queue::{Batch, ClientId, ClientQueue, CloseReason, PushOutcome, QueueLimits};
pub use stats::HubStats;
