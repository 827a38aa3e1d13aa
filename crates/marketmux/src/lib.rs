//! The MarketMux binary's library half: flags ([`cli`], with the conventional
//! environment variables in [`conventional`]) and one module per
//! role ([`roles`]). Each role has `start(args) -> Node` (used by tests to run
//! real nodes in-process) and `run(args)` (start, then wait for a signal).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod conventional;
#[cfg(test)]
mod limits_doc;
pub mod node;
pub mod roles;
pub mod shutdown;
pub mod telemetry;
