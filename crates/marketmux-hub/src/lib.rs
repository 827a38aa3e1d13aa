//! The symbol hub: who follows which symbol, and each client's outgoing queue.
//!
//! - [`hub`]: [`SymbolHub`], topics sharded by symbol. Publishing a tick encodes it
//!   once and hands the same [`bytes::Bytes`] to every subscriber's queue.
//! - [`queue`]: [`ClientQueue`], one client's bounded outgoing queue. When full it
//!   conflates (keeps only the newest tick per symbol) and closes a client that
//!   stays behind past its bound. It never blocks the publisher.
//! - `owner`: who may write to a client's socket (its writer task, the
//!   hub's direct path, nobody once it closes), one state with its transitions.
//! - [`close`]: [`CloseCause`], every way a client's session ends, typed;
//!   the gateway maps each to its WebSocket close code and reason.
//! - [`deflated`]: a tick's frame with its compressed variant, made once per
//!   tick the first time a compressing subscriber needs it ([`FrameDeflater`]).
//! - [`direct`]: [`DirectSocket`], how a batch reaches an idle client's socket
//!   from the fan-out itself, without waking its writer task.
//! - [`rate`]: a client's rate caps (`max_rate`): per capped stream of a
//!   symbol (its ticks, one candle interval), when it may next be sent and
//!   the newest update held until then (closed candles never replaced); no
//!   timer of its own.
//! - [`subscription`]: one client's subscription to one symbol: the last `seq`
//!   sent to it (no tick twice), and the live ticks held while it opens.
//! - [`stats`]: counters the metrics endpoint reads.
//!
//! Nothing here opens a socket, Redis or Kafka, but the hub does write: the
//! fan-out hands a batch to an idle client's socket itself, through the
//! [`DirectSocket`] the gateway lends it, and the client's writer task takes
//! over when that socket would block. Bus adapters feed
//! [`SymbolHub::publish_batch`].

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod close;
pub mod deflated;
pub mod direct;
pub mod hub;
mod owner;
pub mod queue;
pub mod rate;
pub mod stats;
pub mod subscription;

pub use close::{CloseCause, ProtocolViolation};
pub use deflated::FrameDeflater;
pub use direct::DirectSocket;
pub use hub::{
    ControlEncoder, HubConfig, Interest, InterestListener, Started, StreamStart, Subscribed,
    SymbolHub, TickEncoder, TopicLimit,
};
pub use queue::{Batch, ClientId, ClientQueue, PushOutcome, QueueLimits};
pub use stats::HubStats;
