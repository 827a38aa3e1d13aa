//! `load-test`: many WebSocket clients against a MarketMux gateway (or NATS),
//! the publishing side of the scenario, and one report.
//!
//! - [`cli`]: flags and the validated [`cli::Config`].
//! - [`plan`]: which client follows which symbols (uniform or Zipf), who reads slowly.
//! - [`ws`]: a minimal WebSocket client (upgrade, masked frames, in-place decoding).
//! - [`client`]: one simulated client: setup, counting ticks, reconnects.
//! - [`recovery`]: each symbol's position `{seq, epoch}` across reconnects, and
//!   what replays, gaps and duplicates count as.
//! - [`message`], [`rfc3339`]: reading a tick's symbol, timestamp and seq, fast.
//! - [`nats`]: the NATS text protocol (subscriber parsing, TCP publisher).
//! - [`pusher`], [`pusher_api`]: the Pusher protocol (Sockudo): subscriber
//!   messages, and publishing through the signed HTTP API.
//! - [`publisher`]: ticks at a fixed rate, via `POST /api/v1/ticks`, NATS `PUB`
//!   or Pusher `batch_events`.
//! - [`stats`]: shared counters, latency histograms.
//! - [`proc`]: RLIMIT_NOFILE, and the server's CPU and memory from `/proc`.
//! - [`runner`]: one scenario from connect to report; [`report`]: its result.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod client;
pub mod message;
pub mod nats;
pub mod plan;
pub mod pool;
pub mod proc;
pub mod publisher;
pub mod pusher;
pub mod pusher_api;
pub mod recovery;
pub mod report;
pub mod rfc3339;
pub mod runner;
pub mod stats;
pub mod ws;

pub use cli::{Cli, Config};
pub use report::Report;
pub use runner::run;
