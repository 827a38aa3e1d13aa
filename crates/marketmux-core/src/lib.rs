//! MarketMux domain types shared by every crate.
//!
//! - [`backoff`]: [`Backoff`], the one capped exponential backoff every retry loop uses.
//! - [`symbol`]: [`Symbol`], a validated, inline (allocation-free) instrument name.
//! - [`tick`]: [`Tick`], one accepted price, and [`Timestamp`].
//! - [`stream`]: [`Epoch`] and [`Position`]: where a tick is in its symbol's stream.
//! - [`options`]: [`SubscribeOptions`] and [`MaxRate`], what a subscriber may ask for.
//! - [`request`]: what a WebSocket client sends ([`ClientRequest`]), parsed with clear errors.
//! - [`response`]: what the server sends back, encoded once ([`encode_tick`], [`ServerMessage`]).
//! - [`candle`]: [`Interval`], [`Candle`] and the rules that build candles from ticks.
//! - [`auth`]: [`auth::AuthenticatedUser`], the user a request was authenticated as.
//! - [`ingest`]: the JSON body of `POST /api/v1/ticks`, validated into ticks.
//! - [`skew`]: [`ClockSkew`], the bound on timestamps in the future, checked at every entrance.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod backoff;
pub mod candle;
pub mod ingest;
pub mod options;
pub mod request;
pub mod response;
pub mod skew;
pub mod stream;
pub mod symbol;
pub mod tick;

pub use backoff::{Backoff, Jitter};
pub use candle::{Candle, CandleConfig, Interval, SymbolCandles};
pub use options::{MaxRate, SubscribeOptions};
pub use request::{ClientRequest, RequestError};
pub use response::{encode_tick, ErrorCode, ServerMessage, StreamState};
pub use skew::{ClockSkew, FutureTimestamp};
pub use stream::{Epoch, EpochError, Position};
pub use symbol::{Symbol, SymbolError};
pub use tick::{Tick, TickError, Timestamp};
