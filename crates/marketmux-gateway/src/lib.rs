//! The MarketMux edge gateway: WebSocket delivery and REST beside it.
//!
//! - [`server`]: routes, the accept loop (connection limits, HTTP/1.1 with
//!   upgrades), the admin listener, heartbeat, drain.
//! - [`conn`]: one client connection under hyper: JSON bodies on hyper's own errors.
//! - [`guard`]: what every request passes on its head: `Host`, `Origin` and
//!   `Content-Type` of writes, the body deadline.
//! - [`ws`]: the WebSocket upgrade, framing, and the per-socket reader and writer.
//! - [`rest`]: `/health`, `/ready`, `/price/{symbol}`, `POST /api/v1/ticks`, `/debug/vars`.
//! - [`candles`]: `GET /candles/{symbol}`, candles as the bus built them.
//! - [`state`]: [`GatewayState`], what a node's requests and sockets share.
//! - [`auth`]: JWT for sockets and user APIs, the ingest token, the Origin allow-list.
//! - [`config`]: [`GatewayConfig`], every limit with its default.
//! - [`error`]: [`ApiError`], JSON error bodies.
//! - [`metrics`]: `/metrics`: the node's series, written with `marketmux-metrics`.
//! - [`limits`]: counters of refusals and limits hit; a connection's slot under the limits.
//! - [`debug`]: `/debug/pprof/profile`, CPU profiles on demand; who may reach `/debug/*`.
//! - [`web`]: the live page at `/`.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod candles;
pub mod config;
pub mod conn;
pub mod debug;
pub mod error;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod state;
pub mod web;
// The socket's direct write (ws/socket.rs) is a send(2) on the raw descriptor.
#[allow(unsafe_code)]
pub mod ws;

pub use config::GatewayConfig;
pub use error::ApiError;
pub use server::{router, serve, serve_admin};
pub use state::GatewayState;
