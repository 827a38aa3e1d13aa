//! Candles on a gateway node.
//!
//! - [`rest`]: `GET /candles/{symbol}`, the stored candles of one interval.
//! - [`live`]: [`CandleHub`], the node's copy of each followed symbol's
//!   current candles, moved by the ticks the bus delivers and fanned out
//!   once per change to every subscriber.
//! - [`session`]: one socket's candle subscriptions, their bounds and rate caps.
//!
//! Candles are built where `seq` is assigned (the bus); a node only follows
//! them, so every node serves the same numbers.

pub mod live;
pub mod rest;
pub mod session;

pub use live::CandleHub;
pub use session::{CandleRequest, CandleSubscriptions};
