//! Synthetic market data: a [`RandomWalk`] per symbol over a default universe
//! of real-looking symbols, and a [`Feed`] that paces them.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod feed;
pub mod walk;

pub use feed::{Feed, FeedConfig};
pub use walk::{RandomWalk, DEFAULT_SYMBOLS};
