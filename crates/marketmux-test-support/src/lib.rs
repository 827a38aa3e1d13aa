//! What MarketMux's tests share, kept out of the libraries the binary ships
//! (a dev-dependency only; `publish = false`).
//!
//! - [`poll`]: [`eventually`], [`wait_for`], [`wait_for_value`]: a condition
//!   polled until it holds, failing with what was awaited after a deadline
//!   (never a fixed sleep before an assertion).
//! - [`tick`]: [`tick()`] and [`tick_at`], a valid [`Tick`](marketmux_core::Tick) in one call.
//! - [`exposition`]: [`exposition::parse`], Prometheus text read back and
//!   its shape checked, for tests that scrape `/metrics`.
//! - [`redis`]: [`OwnRedis`], [`OwnRedisCluster`]: `redis-server`s of a
//!   test's own; [`free_port`].
//! - [`temp_dir`]: [`TempDir`], a directory of a test's own, removed after it.
//! - [`socket`]: [`FakeSocket`], a client socket for the hub's direct
//!   writes that takes a set number of bytes, then would block.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod exposition;
pub mod poll;
pub mod redis;
pub mod socket;
pub mod temp_dir;
pub mod tick;

pub use poll::{eventually, wait_for, wait_for_value};
pub use redis::{free_port, OwnRedis, OwnRedisCluster};
pub use socket::FakeSocket;
pub use temp_dir::TempDir;
pub use tick::{tick, tick_at};
