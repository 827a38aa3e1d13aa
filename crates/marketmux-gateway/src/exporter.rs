//! `/metrics` and `/health` for the roles that serve no gateway (`bridge`,
//! `ingest`, `alerts`), on their own `--metrics-listen` address.
//!
//! A role renders its own counters with [`RoleSeries`]; the series of the
//! process-wide `metrics` recorder (component errors, …) follow them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::header;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, PROMETHEUS_TEXT};

/// Appends a role's own series in Prometheus text format.
pub type RoleSeries = Arc<dyn Fn(&mut String) + Send + Sync>;

/// A running metrics endpoint.
pub struct Exporter {
    /// Where it listens (useful when asked for port 0).
    pub addr: SocketAddr,
    /// Ends after the shutdown token is cancelled.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves `/metrics` (the role's `series`, then the global
/// recorder's) and `/health` until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    series: RoleSeries,
    shutdown: CancellationToken,
) -> std::io::Result<Exporter> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(|| async { "ok" }))
        .with_state(series);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "Metrics endpoint stopped");
        }
    });
    Ok(Exporter { addr, task })
}

async fn render(State(series): State<RoleSeries>) -> impl IntoResponse {
    let mut out = String::with_capacity(4 * 1024);
    series(&mut out);
    metrics::append_global(&mut out);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], out)
}
