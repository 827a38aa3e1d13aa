//! One module per role: each wires the crates a role needs and runs them.

pub mod alerts;
pub mod bridge;
pub mod dev;
pub mod gateway;
pub mod ingest;

use std::net::SocketAddr;

use anyhow::Context as _;
use marketmux_gateway::exporter::{self, RoleSeries};
use tokio_util::sync::CancellationToken;

use crate::cli::MetricsArgs;

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
