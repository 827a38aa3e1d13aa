//! Where ticks enter MarketMux from the outside world.
//!
//! - [`finnhub`]: [`FinnhubClient`], the Finnhub trade WebSocket: subscribes
//!   per symbol, turns batched trades into ticks, answers pings, reconnects
//!   with jittered backoff and subscribes again; ticks go to any
//!   [`marketmux_bus::TickPublisher`] (Kafka in the `ingest` role).
//! - [`protocol`]: the Finnhub messages, parsed and built.
//! - [`backoff`]: [`Backoff`], exponential delays with full jitter.

pub mod backoff;
pub mod finnhub;
pub mod protocol;

pub use backoff::Backoff;
pub use finnhub::{FinnhubClient, FinnhubConfig, FinnhubStats, DEFAULT_FINNHUB_URL};
