//! The Kafka half of MarketMux: ticks on the topic `market_ticks`, key = symbol,
//! value = a protobuf `Tick` (`proto/stock.proto`).
//!
//! - [`codec`]: the protobuf message ([`codec::pb::Tick`]) and its conversion
//!   to and from [`marketmux_core::Tick`] plus the metadata ([`TickMeta`]).
//! - [`config`]: broker list and topic ([`KafkaConfig`]), turned into librdkafka settings.
//! - [`publisher`]: [`KafkaPublisher`], a [`marketmux_bus::TickPublisher`] with
//!   idempotence and `acks=all` that returns only after the delivery reports.
//! - [`consumer`]: [`TickConsumer`], a consumer-group reader handing out
//!   [`TickBatch`]es whose offsets are committed only when the caller says so.
//! - [`sequence`]: [`SequenceTracker`], counts gaps and duplicates per producer and symbol.
//! - [`bridge`]: [`Bridge`], Kafka → any `TickPublisher` (Redis in the `bridge`
//!   role), committing after the sink accepted each batch.
//! - [`error`]: what can fail, as [`KafkaError`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bridge;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod error;
pub mod publisher;
pub mod sequence;

pub use bridge::{Bridge, BridgeStats};
pub use codec::{ConsumedTick, TickMeta};
pub use config::{KafkaConfig, StartFrom, DEFAULT_TOPIC};
pub use consumer::{ConsumerStats, TickBatch, TickConsumer};
pub use error::KafkaError;
pub use publisher::KafkaPublisher;
pub use sequence::SequenceTracker;
