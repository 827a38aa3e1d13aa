//! `GET /metrics`: Prometheus text exposition.
//!
//! Hot-path counters are plain atomics owned by the hub and the gateway; they
//! are read and rendered only when scraped, so delivering a tick never touches
//! a metrics registry. Other crates (Redis, Kafka, alerts) may record through
//! the `metrics` facade; their series are appended when the binary installed
//! the global recorder ([`install_global_recorder`]). No label is per client
//! or per symbol.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use http::header;
use marketmux_bus::Readiness;
use marketmux_hub::CloseCause;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::GatewayState;

/// Upper bounds (seconds) of the delivery-latency histogram buckets.
const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// A fixed-bucket histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// One counter per value of a small fixed label set, read only when scraped.
#[derive(Debug)]
pub(crate) struct LabelledCounters<const N: usize> {
    labels: [&'static str; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> LabelledCounters<N> {
    /// Counters at zero for `labels`; [`add`](Self::add) takes an index into them.
    pub(crate) fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one event for `labels[i]`.
    pub(crate) fn add(&self, i: usize) {
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// Each label with its count, in the fixed order.
    pub(crate) fn by_label(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels
            .iter()
            .zip(&self.counts)
            .map(|(l, c)| (*l, c.load(Relaxed)))
    }

    /// Appends the series `name{label="…"}` in Prometheus text format.
    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, n) in self.by_label() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

/// Why sockets closed, counted by a small fixed set of reasons, each a group
/// of [`CloseCause`]s.
#[derive(Debug)]
pub struct CloseCounters(LabelledCounters<7>);

/// The reasons of [`CloseCounters`], in the order of their labels.
enum Closed {
    Normal,
    Idle,
    Protocol,
    SlowConsumer,
    Policy,
    Drain,
    Lost,
}

impl Default for CloseCounters {
    fn default() -> Self {
        Self(LabelledCounters::new([
            "normal",
            "idle",
            "protocol",
            "slow_consumer",
            "policy",
            "drain",
            "connection_lost",
        ]))
    }
}

impl CloseCounters {
    /// Counts one closed socket by the cause it was closed for (None: it
    /// was not closed by anyone, which counts as normal).
    pub fn record(&self, cause: Option<&CloseCause>) {
        let closed = match cause {
            // The client ended the session, whatever code it closed with.
            None | Some(CloseCause::Normal | CloseCause::ClientClosed { .. }) => Closed::Normal,
            Some(CloseCause::IdleTimeout) => Closed::Idle,
            Some(CloseCause::Protocol(_)) => Closed::Protocol,
            Some(CloseCause::SlowConsumer { .. } | CloseCause::ControlBacklog) => {
                Closed::SlowConsumer
            }
            Some(CloseCause::TokenExpired | CloseCause::RateLimited) => Closed::Policy,
            Some(CloseCause::Restart) => Closed::Drain,
            Some(
                CloseCause::ConnectionLost | CloseCause::CloseTimedOut | CloseCause::WriteFailed,
            ) => Closed::Lost,
        };
        self.0.add(closed as usize);
    }

    /// Each reason with its count, in a fixed order (for `/metrics` and `/debug/vars`).
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.by_label()
    }

    fn render(&self, out: &mut String) {
        self.0.render(
            out,
            "marketmux_connections_closed_total",
            "Sockets closed, by reason.",
            "reason",
        );
    }
}

/// What became of the positions clients sent to resume from (`since`), and
/// how many ticks were replayed to them.
#[derive(Debug)]
pub struct RecoveryCounters {
    /// Positions served and not served, by outcome.
    outcomes: LabelledCounters<2>,
    /// Ticks sent as replays.
    replayed: AtomicU64,
}

impl Default for RecoveryCounters {
    fn default() -> Self {
        Self {
            outcomes: LabelledCounters::new(["recovered", "not_recovered"]),
            replayed: AtomicU64::new(0),
        }
    }
}

impl RecoveryCounters {
    /// Counts a served position and the `replayed` ticks that followed it.
    pub fn recovered(&self, replayed: usize) {
        self.outcomes.add(0);
        self.replayed.fetch_add(replayed as u64, Relaxed);
    }

    /// Counts a position that could not be served.
    pub fn not_recovered(&self) {
        self.outcomes.add(1);
    }

    /// Each outcome with its count (for `/metrics` and `/debug/vars`).
    pub fn by_outcome(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.outcomes.by_label()
    }

    /// Ticks sent as replays.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Relaxed)
    }

    fn render(&self, out: &mut String) {
        self.outcomes.render(
            out,
            "marketmux_stream_recoveries_total",
            "Subscribes that sent a position to resume from, by whether it was served.",
            "outcome",
        );
        metric(
            out,
            "counter",
            "marketmux_replayed_ticks_total",
            "Ticks replayed to clients that resumed from a position.",
            self.replayed(),
        );
    }
}

static GLOBAL: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide `metrics` recorder whose series `/metrics` appends.
/// Safe to call more than once; returns false if another recorder was installed first.
pub fn install_global_recorder() -> bool {
    if GLOBAL.get().is_some() {
        return true;
    }
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => GLOBAL.set(handle).is_ok(),
        Err(_) => false,
    }
}

/// The `Content-Type` of Prometheus text exposition.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the series of the process-wide recorder, if one is installed.
pub fn append_global(out: &mut String) {
    if let Some(h) = GLOBAL.get() {
        out.push_str(&h.render());
    }
}

/// Appends one unlabelled series (`kind` is `counter` or `gauge`).
pub fn metric(out: &mut String, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Appends `marketmux_component_up{component}`: 1 for each component whose
/// [`Readiness::check`] passes, else 0.
pub fn component_up<'a>(out: &mut String, components: impl IntoIterator<Item = &'a dyn Readiness>) {
    let name = "marketmux_component_up";
    let _ = writeln!(
        out,
        "# HELP {name} 1 when the component answers.\n# TYPE {name} gauge"
    );
    for r in components {
        let _ = writeln!(
            out,
            "{name}{{component=\"{}\"}} {}",
            r.name(),
            r.check().is_ok() as u8
        );
    }
}

/// Appends unlabelled counters: `(name, help, value)` each.
pub fn counters(out: &mut String, series: &[(&str, &str, u64)]) {
    for (name, help, value) in series {
        metric(out, "counter", name, help, value);
    }
}

/// Renders every series of this node.
pub fn render(state: &GatewayState) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let hub = state.hub.stats().snapshot();
    let s = &state.stats;
    let (opened, _) = state.registry.opened_closed();
    let gauge = |out: &mut String, n, h, v: u64| metric(out, "gauge", n, h, v);
    let counter = |out: &mut String, n, h, v: u64| metric(out, "counter", n, h, v);

    gauge(
        &mut out,
        "marketmux_connections_open",
        "Open WebSocket connections.",
        state.registry.len() as u64,
    );
    counter(
        &mut out,
        "marketmux_connections_opened_total",
        "WebSocket connections accepted.",
        opened,
    );
    s.closed_by.render(&mut out);
    s.limits.render(&mut out);
    gauge(
        &mut out,
        "marketmux_subscriptions",
        "Live (socket, symbol) subscriptions.",
        hub.subscriptions,
    );
    gauge(
        &mut out,
        "marketmux_topics",
        "Symbols with at least one local subscriber.",
        hub.topics,
    );
    counter(
        &mut out,
        "marketmux_ticks_in_total",
        "Ticks received from the bus.",
        hub.ticks_in,
    );
    counter(
        &mut out,
        "marketmux_ticks_encoded_total",
        "Ticks encoded for clients (once per tick with subscribers).",
        hub.ticks_encoded,
    );
    counter(
        &mut out,
        "marketmux_deliveries_total",
        "Tick frames queued to sockets (live and snapshots).",
        hub.deliveries,
    );
    counter(
        &mut out,
        "marketmux_conflated_total",
        "Unsent ticks replaced by a newer one for a lagging socket.",
        hub.conflated,
    );
    counter(
        &mut out,
        "marketmux_slow_consumers_closed_total",
        "Sockets closed for staying behind past their bound.",
        hub.slow_closed,
    );
    counter(
        &mut out,
        "marketmux_stale_ticks_dropped_total",
        "Ticks not sent to a socket that already had their seq or a later one.",
        hub.stale_dropped,
    );
    counter(
        &mut out,
        "marketmux_capped_ticks_skipped_total",
        "Ticks a rate-capped socket never got: replaced by a newer tick of the symbol within its max_rate interval.",
        hub.capped_skipped,
    );
    counter(
        &mut out,
        "marketmux_deflated_frames_total",
        "Compressed (permessage-deflate) tick frames made: one per live tick per node, shared; a replay's for its client.",
        hub.deflated_frames,
    );
    counter(
        &mut out,
        "marketmux_deflate_bytes_saved_total",
        "Bytes compression saved over every tick frame queued compressed.",
        hub.deflate_bytes_saved,
    );
    counter(
        &mut out,
        "marketmux_deflate_sockets_total",
        "Sockets opened with permessage-deflate.",
        s.deflate_sockets.load(Relaxed),
    );
    counter(
        &mut out,
        "marketmux_stream_restarts_total",
        "Notices to sockets that a symbol's sequence started again (a new epoch).",
        hub.stream_restarts,
    );
    s.recovery.render(&mut out);
    counter(
        &mut out,
        "marketmux_frames_written_total",
        "Frames written to sockets.",
        s.frames_written.load(Relaxed),
    );
    counter(
        &mut out,
        "marketmux_write_batches_total",
        "Socket writes (one vectored write() carries every frame queued at the time).",
        s.write_batches.load(Relaxed),
    );
    counter(
        &mut out,
        "marketmux_bytes_written_total",
        "Bytes written to sockets.",
        s.bytes_written.load(Relaxed),
    );
    counter(
        &mut out,
        "marketmux_messages_in_total",
        "Client messages read.",
        s.messages_in.load(Relaxed),
    );
    gauge(
        &mut out,
        "marketmux_queued_bytes",
        "Bytes waiting in socket queues.",
        state.registry.queued_bytes() as u64,
    );
    s.delivery_latency.render(
        &mut out,
        "marketmux_delivery_latency_seconds",
        "Time from the bus handing a tick to this node to the socket write that carried it completing (oldest frame of each write).",
    );
    let ready = state.check_ready().is_ok();
    gauge(
        &mut out,
        "marketmux_ready",
        "1 when /ready answers 200.",
        ready as u64,
    );
    component_up(&mut out, state.readiness.iter().map(|r| &**r));
    append_global(&mut out);
    out
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1"));
        assert!(out.contains("x_bucket{le=\"0.005\"} 2"));
        assert!(out.contains("x_bucket{le=\"5\"} 2"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3"));
        assert!(out.contains("x_count 3"));
    }

    #[test]
    fn close_reasons_are_classified() {
        let c = CloseCounters::default();
        c.record(Some(&CloseCause::SlowConsumer {
            max_lag: Duration::from_secs(1),
        }));
        c.record(Some(&CloseCause::ControlBacklog));
        c.record(Some(&CloseCause::RateLimited));
        c.record(Some(&CloseCause::Restart));
        c.record(Some(&CloseCause::ClientClosed { code: 1001 }));
        c.record(None);
        let mut out = String::new();
        c.render(&mut out);
        for line in [
            "reason=\"slow_consumer\"} 2",
            "reason=\"policy\"} 1",
            "reason=\"drain\"} 1",
            "reason=\"normal\"} 2",
            "reason=\"idle\"} 0",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
    }
}
