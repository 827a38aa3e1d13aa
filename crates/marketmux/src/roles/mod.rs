//! One module per role: each wires the crates a role needs and runs them.
//!
//! Each role starts inside its [`role_span`], and the tasks it spawns stay in
//! it, so every log line names the role it comes from (several roles share
//! one process in `dev` and in tests). The tasks on the tick path (the bus
//! delivering to the hub, the per-socket writers) are left out of it: a span
//! entered on every poll is work per message.

pub mod alerts;
pub mod bridge;
pub mod dev;
pub mod gateway;
pub mod ingest;

use std::net::SocketAddr;

use anyhow::Context as _;
use marketmux_metrics::exporter::{self, RoleSeries};
use tokio_util::sync::CancellationToken;

use crate::cli::MetricsArgs;

/// The span a role's start-up and tasks run in: `role{role=NAME}`.
fn role_span(role: &'static str) -> tracing::Span {
    tracing::info_span!("role", role = %role)
}

/// Starts the `/metrics` endpoint of a role without a gateway, if
/// `--metrics-listen` is set; it stops with `shutdown`.
async fn serve_metrics(
    args: &MetricsArgs,
    series: RoleSeries,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = args.metrics_listen else {
        return Ok(None);
    };
    let exporter = exporter::serve(listen, series, shutdown)
        .await
        .with_context(|| format!("--metrics-listen: cannot listen on {listen}"))?;
    tracing::info!(addr = %exporter.addr, "Metrics endpoint ready");
    Ok(Some(exporter.addr))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use marketmux_alerts::{open_store, AlertSink, Evaluator};
    use marketmux_kafka::{KafkaConfig, KafkaPublisher};
    use marketmux_test_support::{exposition, TempDir};

    /// The series of `bridge`, `ingest` and `alerts` on `--metrics-listen`,
    /// with their labels, help and types (values left out), as dashboards
    /// and alerts know them: a series renamed, retyped or explained
    /// otherwise fails here until `series.txt` says so too.
    #[tokio::test]
    async fn role_series_stay_as_published() {
        let dir = TempDir::new("role-series");
        let store = open_store(None, dir.path()).await.unwrap();
        let sink: AlertSink = Arc::new(|_| {});
        let evaluator = Evaluator::new(store, sink);
        let producer = KafkaPublisher::new(&KafkaConfig::new("127.0.0.1:9"), "test").unwrap();
        let mut all = String::new();
        for (role, series) in [
            (
                "bridge",
                super::bridge::bridge_series(Arc::default(), Arc::default()),
            ),
            (
                "ingest",
                super::ingest::ingest_series(Arc::default(), Arc::new(producer)),
            ),
            (
                "alerts",
                super::alerts::alerts_series(evaluator, Arc::default()),
            ),
        ] {
            let mut text = String::new();
            series(&mut text);
            all.push_str(&format!("## {role}\n{}", exposition::series(&text)));
        }
        assert_eq!(all, include_str!("series.txt"));
    }
}
