//! The node's lifecycle: the accept loop, the heartbeat, and the shutdown drain.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use marketmux_hub::CloseReason;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::state::GatewayState;
use crate::ws::frame::{self, OpCode};
use crate::{debug, metrics, rest, web, ws};

/// Pending connections the kernel queues before `accept` (the default 1,024
/// overflows when thousands of clients reconnect at once).
const LISTEN_BACKLOG: u32 = 4096;
/// How often the heartbeat pings its next turn of sockets (see [`heartbeat`]).
const HEARTBEAT_STEP: Duration = Duration::from_millis(50);

/// Binds a listener with a deep accept backlog (capped by `net.core.somaxconn`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Every route of a gateway node.
pub fn router(state: Arc<GatewayState>) -> Router {
    let ingest_limit = state.config.max_ingest_body_bytes;
    Router::new()
        .route("/ws", get(ws::upgrade::ws_handler))
        .route("/health", get(rest::health))
        .route("/ready", get(rest::ready))
        .route("/price/{symbol}", get(rest::price))
        .route(
            "/api/v1/ticks",
            post(rest::ingest).layer(DefaultBodyLimit::max(ingest_limit)),
        )
        .route("/debug/vars", get(rest::debug_vars))
        .route("/debug/pprof/profile", get(debug::profile))
        .route("/metrics", get(metrics::handler))
        .merge(web::routes())
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains:
/// `/ready` fails and upgrades are refused at once, open sockets are closed
/// with 1012 spread over the drain period, and the call returns once they are
/// gone (or a short grace after the period).
pub async fn serve(
    listener: TcpListener,
    state: Arc<GatewayState>,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Every error, whoever wrote it (a handler, an extractor, the router), is JSON.
    let router = router
        .fallback(crate::error::no_such_endpoint)
        .layer(axum::middleware::map_response(crate::error::errors_as_json));
    let stop = CancellationToken::new();
    let accept = tokio::spawn(accept_loop(listener, router, state.clone(), stop.clone()));
    tokio::spawn(heartbeat(state.clone(), stop.clone()));

    shutdown.cancelled().await;
    state.draining.store(true, Relaxed);
    let open = state.registry.len();
    tracing::info!(
        open,
        drain_secs = state.config.drain_period.as_secs_f32(),
        "Draining sockets"
    );
    state
        .registry
        .drain(
            CloseReason::new(1012, "service restart"),
            state.config.drain_period,
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !state.registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = accept.await;
    tracing::info!(left = state.registry.len(), "Drain finished");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    state: Arc<GatewayState>,
    stop: CancellationToken,
) {
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "Accept failed; backing off");
                    last_error_log = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        let handshake_timeout = state.config.handshake_timeout;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                router.clone().oneshot(req)
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

/// Pings every socket each `ping_interval`; sockets that stop answering are
/// closed by their reader's idle timeout.
///
/// The pings are spread over the interval, one turn of sockets every
/// [`HEARTBEAT_STEP`]: pinging every socket at once wakes every writer, and
/// then every reader for the pong, together. At 5,000 sockets that held tick
/// delivery up for ~100 ms every interval (benches/README.md).
async fn heartbeat(state: Arc<GatewayState>, stop: CancellationToken) {
    let ping = frame::encode(OpCode::Ping, b"");
    let interval = state.config.ping_interval;
    let turns = u32::try_from(interval.as_nanos() / HEARTBEAT_STEP.as_nanos())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut every = tokio::time::interval(interval / turns);
    // After a stall, late turns run late rather than not at all: no socket
    // goes a whole extra interval without its ping.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every.tick().await;
    for turn in 0u64.. {
        tokio::select! {
            _ = every.tick() => state.registry.push_control_to_turn(&ping, turn, turns.into()),
            _ = stop.cancelled() => return,
        }
    }
}
