//! Price alerts: users set a target on a symbol, ABOVE or BELOW, and are told
//! once when the market reaches it.
//!
//! - [`model`]: [`Alert`], [`Condition`], [`NewAlert`] (validation), [`FiredAlert`].
//! - [`store`]: [`AlertStore`] and its PostgreSQL and embedded (SQLite) implementations.
//! - [`page`]: [`ListQuery`] and [`AlertPage`], listing a user's alerts a page at a time.
//! - [`index`]: [`AlertIndex`], active alerts per symbol sorted by target.
//! - [`evaluator`]: [`Evaluator`], ticks against the index, fired exactly once
//!   through the store's conditional update; failed fires kept pending.
//! - [`follow`]: the store's change feed applied to an evaluator, so every
//!   instance sees every create and delete at once.
//! - [`inbox`]: [`TickInbox`], the non-blocking hand-off from the bus.
//! - [`feed`]: [`TickFeed`], where the evaluation loop reads ticks (the
//!   inbox, or a Kafka consumer group in the `alerts` role).
//! - [`relay`]: fired alerts published for the gateways' sockets behind a
//!   bounded queue, retried with backoff ([`relay::spawn`]).
//! - [`service`]: [`AlertService`], the API the handlers call; [`LocalAlertService`].
//! - [`rest`]: the axum routes `POST/GET /alerts`, `DELETE /alerts/{id}`.
//! - [`grpc`]: the same API over tonic (`proto/alert.proto`): server and client.
//! - [`engine`]: [`AlertEngine`], everything above wired for a role.
//! - [`health`]: [`StoreHealth`], the store's state for `/ready`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod engine;
pub mod evaluator;
pub mod feed;
pub mod follow;
pub mod grpc;
pub mod health;
pub mod inbox;
pub mod index;
pub mod model;
pub mod page;
pub mod relay;
pub mod rest;
pub mod service;
pub mod store;

pub use engine::AlertEngine;
pub use evaluator::{AlertSink, Evaluator};
pub use feed::TickFeed;
pub use health::StoreHealth;
pub use inbox::TickInbox;
pub use index::AlertIndex;
pub use model::{Alert, Condition, FiredAlert, InvalidAlert, NewAlert};
pub use page::{AlertPage, InvalidPage, ListQuery};
pub use service::{AlertService, LocalAlertService, ServiceError, DEFAULT_MAX_ALERTS_PER_USER};
pub use store::{open_store, AlertStore, PgAlertStore, SqliteAlertStore, StoreError, StoreEvent};
