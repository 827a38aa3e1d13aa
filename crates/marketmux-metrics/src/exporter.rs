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
use tracing::Instrument as _;

use crate::recorder::append_global;
use crate::text::PROMETHEUS_TEXT;

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
/// recorder's) and `/health` until `shutdown` is cancelled, in the caller's span.
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
    let task = tokio::spawn(
        async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "Metrics endpoint stopped");
            }
        }
        .in_current_span(),
    );
    Ok(Exporter { addr, task })
}

async fn render(State(series): State<RoleSeries>) -> impl IntoResponse {
    let mut out = String::with_capacity(4 * 1024);
    series(&mut out);
    append_global(&mut out);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::*;

    #[tokio::test]
    async fn serves_the_role_series_and_health_until_shutdown() {
        let forwarded = Arc::new(AtomicU64::new(0));
        let series: RoleSeries = {
            let forwarded = forwarded.clone();
            Arc::new(move |out: &mut String| {
                crate::counter(out, "x_forwarded_total", "Xs.", forwarded.load(Relaxed));
            })
        };
        let shutdown = CancellationToken::new();
        let exporter = serve("127.0.0.1:0".parse().unwrap(), series, shutdown.clone())
            .await
            .unwrap();
        forwarded.store(5, Relaxed);
        let r = reqwest::get(format!("http://{}/metrics", exporter.addr))
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], PROMETHEUS_TEXT);
        let text = r.text().await.unwrap();
        let samples = marketmux_test_support::exposition::parse(&text).unwrap();
        assert_eq!(samples["x_forwarded_total"], 5.0);
        let health = reqwest::get(format!("http://{}/health", exporter.addr))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), exporter.task)
            .await
            .expect("the exporter stops on shutdown")
            .unwrap();
    }
}
