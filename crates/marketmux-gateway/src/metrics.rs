//! `GET /metrics` of a gateway node: its series in Prometheus text format,
//! written with [`marketmux_metrics`] like every role's.
//!
//! Hot-path counters are plain atomics owned by the hub and the gateway; they
//! are read and rendered only when scraped, so delivering a tick never touches
//! a metrics registry. Other crates (Redis, Kafka, alerts) record through the
//! `metrics` facade; their series follow when the binary installed the
//! process-wide recorder ([`marketmux_metrics::install_global_recorder`]). No
//! label is per client or per symbol.
//!
//! The series of the gateway alone live here: [`CloseCounters`],
//! [`RecoveryCounters`] and [`render`], the whole node's answer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use http::header;
use marketmux_hub::CloseCause;
use marketmux_metrics::{
    append_global, component_up, counter, gauge, LabelledCounters, PROMETHEUS_TEXT,
};

use crate::state::GatewayState;

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
        counter(
            out,
            "marketmux_replayed_ticks_total",
            "Ticks replayed to clients that resumed from a position.",
            self.replayed(),
        );
    }
}

/// Renders every series of this node.
pub fn render(state: &GatewayState) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let hub = state.hub.stats().snapshot();
    let s = &state.stats;
    let (opened, _) = state.registry.opened_closed();

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
        "Ticks and open-candle updates a rate-capped socket never got: replaced by a newer one of the same stream within its max_rate interval.",
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
    component_up(
        &mut out,
        state
            .readiness
            .iter()
            .map(|r| (r.name(), r.check().is_ok())),
    );
    append_global(&mut out);
    out
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(&state))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every series of a node, with its labels, help and type, as dashboards
    /// and alerts know them (values left out): a series renamed,
    /// relabelled, retyped or explained otherwise fails here until
    /// `metrics_series.txt` says so too.
    #[test]
    fn series_labels_help_and_types_stay_as_published() {
        let bus = marketmux_bus::InProcessBus::new();
        let state = GatewayState::new(
            crate::GatewayConfig::default(),
            GatewayState::new_hub(),
            bus.clone(),
            bus.clone(),
            vec![bus],
        );
        let series = marketmux_test_support::exposition::series(&render(&state));
        assert_eq!(series, include_str!("metrics_series.txt"));
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
