//! Where ticks enter MarketMux from the outside world.
//!
//! - [`finnhub`]: [`FinnhubClient`], the Finnhub trade WebSocket: subscribes
//!   per symbol, turns batched trades into ticks, answers pings, reconnects
//!   with jittered backoff and subscribes again; ticks go to any
//!   [`marketmux_bus::TickPublisher`] (Kafka in the `ingest` role).
//! - [`protocol`]: the Finnhub messages, parsed and built.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod finnhub;
pub mod protocol;

pub use finnhub::{FinnhubClient, FinnhubConfig, FinnhubStats, DEFAULT_FINNHUB_URL};
