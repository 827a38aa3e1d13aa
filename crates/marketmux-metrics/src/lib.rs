//! MarketMux metrics: one way to expose counters in Prometheus text format,
//! used by the gateway and by every role.
//!
//! Hot-path counters are plain atomics owned by whoever counts (the hub, the
//! gateway, the bridge, …) and read only when `/metrics` is scraped, so
//! counting an event never touches a registry. Rare events (a component's
//! failures) go through the `metrics` facade into the process-wide recorder,
//! whose series every `/metrics` answer appends. No label is per client or
//! per symbol.
//!
//! - [`text`]: one series in exposition format ([`counter`], [`gauge`],
//!   [`counters`], [`component_up`]) and its `Content-Type`.
//! - [`labelled`]: [`LabelledCounters`], one atomic counter per value of a
//!   small fixed label set.
//! - [`histogram`]: [`LatencyHistogram`], fixed buckets over atomics.
//! - [`recorder`]: the process-wide `metrics` recorder: [`install_global_recorder`],
//!   [`append_global`].
//! - [`errors`]: `marketmux_errors_total{component,op}`, failures of Redis,
//!   Kafka, the database and the feed.
//! - [`exporter`]: `/metrics` and `/health` on their own address, for the
//!   roles that serve no gateway (`bridge`, `ingest`, `alerts`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod errors;
pub mod exporter;
pub mod histogram;
pub mod labelled;
pub mod recorder;
pub mod text;

pub use histogram::LatencyHistogram;
pub use labelled::LabelledCounters;
pub use recorder::{append_global, install_global_recorder};
pub use text::{component_up, counter, counters, gauge, PROMETHEUS_TEXT};
