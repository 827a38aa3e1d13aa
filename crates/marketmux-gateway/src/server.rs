//! The node's lifecycle: the routes, the accept loop (connection limits,
//! bounded request heads), the heartbeat, and the shutdown drain.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use marketmux_hub::CloseCause;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::GatewayConfig;
use crate::conn::{canned, ClientStream};
use crate::error::ApiError;
use crate::limits::{ConnectionSlot, LimitHit, Refusal};
use crate::state::GatewayState;
use crate::ws::frame::{self, OpCode};
use crate::{candles, debug, guard, metrics, rest, web, ws};
use tracing::Instrument as _;

/// Pending connections the kernel queues before `accept` (the default 1,024
/// overflows when thousands of clients reconnect at once).
const LISTEN_BACKLOG: u32 = 4096;
/// How long the drain waits, after the drain period, for the last sockets' tasks to end.
const DRAIN_GRACE: Duration = Duration::from_secs(3);
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

/// Every route of a gateway node, on one listener: the public ones,
/// `/metrics`, and the admin endpoints (`/debug/*`, see [`debug::admin_only`]).
pub fn router(state: Arc<GatewayState>) -> Router {
    public_router(state.clone()).merge(admin_router(state))
}

/// The routes clients use: WebSocket, REST, the live page. Without
/// `/metrics` and `/debug/*`, for a node with an admin listener.
pub fn public_router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade::ws_handler))
        .route("/health", get(rest::health))
        .route("/ready", get(rest::ready))
        .route("/price/{symbol}", get(rest::price))
        .route("/history/{symbol}", get(rest::history))
        .route("/candles/{symbol}", get(candles::rest::candles))
        .route("/api/v1/ticks", post(rest::ingest))
        .merge(web::routes())
        .with_state(state)
}

/// `/metrics` and the admin endpoints (`/debug/vars`, `/debug/pprof/profile`),
/// the latter behind [`debug::admin_only`].
pub fn admin_router(state: Arc<GatewayState>) -> Router {
    let admin = Router::new()
        .route("/debug/vars", get(rest::debug_vars))
        .route("/debug/pprof/profile", get(debug::profile))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            debug::admin_only,
        ));
    Router::new()
        .route("/metrics", get(metrics::handler))
        .merge(admin)
        .with_state(state)
}

/// Which listener a request came through (a request extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The admin listener (`--admin-listen`).
    pub admin: bool,
    /// Bound to a loopback address: only this machine reaches it.
    pub loopback: bool,
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
    let stop = CancellationToken::new();
    let accept = Entrance::new(&listener, router, state.clone(), false)?;
    let accept = tokio::spawn(accept.run(listener, stop.clone()).in_current_span());
    tokio::spawn(heartbeat(state.clone(), stop.clone()).in_current_span());

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
        .drain(CloseCause::Restart, state.config.drain_period)
        .await;
    // Every socket was told to close: wait for their tasks, a short grace at most.
    state.sockets.close();
    let _ = tokio::time::timeout(DRAIN_GRACE, state.sockets.wait()).await;
    stop.cancel();
    let _ = accept.await;
    tracing::info!(left = state.registry.len(), "Drain finished");
    Ok(())
}

/// Serves [`admin_router`] (and `/health`) on the admin listener until
/// `shutdown` is cancelled. Its connections are not counted against the
/// client limits.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<GatewayState>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = admin_router(state.clone()).route("/health", get(rest::health));
    let entrance = Entrance::new(&listener, router, state, true)?;
    entrance.run(listener, shutdown).await;
    Ok(())
}

/// Connections answered with a refusal at a time; past it a connection over
/// a limit is closed without an answer.
const REFUSALS_IN_FLIGHT: usize = 64;
/// Time an over-limit connection has to send its request head before it is
/// closed without the refusal.
const REFUSAL_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Descriptors left for what a node opens besides client connections
/// (Redis, Kafka, the store, the listeners).
const FD_RESERVE: usize = 128;

/// One listener's accept loop and what each of its connections is served with.
struct Entrance {
    /// The routes, with the JSON error shape and [`guard::admit`] around them.
    router: Router,
    state: Arc<GatewayState>,
    /// Put on every request, for [`debug::admin_only`].
    info: ListenerInfo,
    /// Connections on this node at most: `--max-connections`, kept below the
    /// descriptor limit so that a flood is refused, not `accept` failing.
    max_connections: usize,
    /// Bounds the connections being refused at once.
    refusing: Arc<Semaphore>,
}

impl Entrance {
    fn new(
        listener: &TcpListener,
        router: Router,
        state: Arc<GatewayState>,
        admin: bool,
    ) -> std::io::Result<Self> {
        let info = ListenerInfo {
            admin,
            loopback: listener.local_addr()?.ip().is_loopback(),
        };
        let router = guarded(router, &state);
        // The admin listener's connections are not counted.
        let max_connections = if admin {
            0
        } else {
            connection_cap(state.config.max_connections)
        };
        Ok(Self {
            router,
            state,
            info,
            max_connections,
            refusing: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        })
    }

    async fn run(self, listener: TcpListener, stop: CancellationToken) {
        let this = Arc::new(self);
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
            if this.state.config.socket_send_buffer > 0 {
                let _ = socket2::SockRef::from(&tcp)
                    .set_send_buffer_size(this.state.config.socket_send_buffer);
            }
            let slot = if this.info.admin {
                None
            } else {
                match ConnectionSlot::take(&this.state, peer.ip(), this.max_connections) {
                    Ok(slot) => Some(Arc::new(slot)),
                    Err(why) => {
                        this.state.stats.limits.refused(why);
                        if let Ok(permit) = this.refusing.clone().try_acquire_owned() {
                            let answer = this.refusal(why);
                            tokio::spawn(async move {
                                refuse(tcp, answer).await;
                                drop(permit);
                            });
                        }
                        continue;
                    }
                }
            };
            // Debug level: a connection logs only at debug, so at the usual
            // level the span costs nothing; `client` is its WebSocket's id.
            let span = tracing::debug_span!("conn", %peer, client = tracing::field::Empty);
            tokio::spawn(
                this.clone()
                    .serve_connection(tcp, peer, slot, stop.clone())
                    .instrument(span),
            );
        }
    }

    /// The answer to a connection over a limit.
    fn refusal(&self, why: Refusal) -> ApiError {
        match why {
            Refusal::PerIp => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "at most {} connections per client address",
                    self.state.config.max_connections_per_ip
                ),
            ),
            _ => ApiError::unavailable(format!(
                "connection limit of this node reached ({}); try another node",
                self.max_connections
            )),
        }
    }

    /// Serves one connection: request heads bounded in size and time, and
    /// the errors hyper answers itself given JSON bodies (see [`conn`]).
    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: Option<Arc<ConnectionSlot>>,
        stop: CancellationToken,
    ) {
        let config = &self.state.config;
        let head_timeout = config.handshake_timeout;
        let fd = tcp.as_raw_fd();
        let stream = ClientStream::new(tcp, head_limit(config));
        let mid_request = stream.mid_request();
        let router = self.router.clone();
        let info = self.info;
        let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            let ext = req.extensions_mut();
            ext.insert(ConnectInfo::<SocketAddr>(peer));
            ext.insert(info);
            if let Some(slot) = &slot {
                // The upgrade handler hands it on to the socket.
                ext.insert(slot.clone());
            }
            router.clone().oneshot(req)
        });
        let conn = http1_builder(config)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => match r {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    self.state.stats.limits.hit(LimitHit::RequestTimeout);
                    // hyper closes without an answer; a client that had
                    // started a request gets one. Nothing else writes now.
                    if mid_request.load(Relaxed) {
                        let answer = canned(
                            StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            &format!(
                                "the request head did not arrive within {} s",
                                head_timeout.as_secs_f32()
                            ),
                        );
                        // SAFETY: `conn` owns the descriptor and is alive until
                        // the end of this scope.
                        #[allow(unsafe_code)]
                        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                        let _ = socket2::SockRef::from(&fd)
                            .send_with_flags(&answer, libc::MSG_NOSIGNAL);
                    }
                }
                Err(e) => {
                    if e.is_parse_too_large() {
                        self.state.stats.limits.hit(LimitHit::HeadTooLarge);
                    }
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            },
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
        }
    }
}

/// hyper's smallest read buffer, and so the smallest head limit.
const MIN_HEAD_BYTES: usize = 8192;

fn head_limit(config: &GatewayConfig) -> usize {
    config.max_header_bytes.max(MIN_HEAD_BYTES)
}

/// HTTP/1 as every client connection gets it: a request head of at most
/// [`GatewayConfig::max_header_bytes`] within [`GatewayConfig::handshake_timeout`]
/// (from connecting, or from the previous answer).
fn http1_builder(config: &GatewayConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .max_buf_size(head_limit(config));
    b
}

/// `router` as a listener serves it: [`guard::admit`] in front of every
/// route, and every error, whoever wrote it (a handler, an extractor, the
/// router), in the JSON shape.
pub fn guarded(router: Router, state: &Arc<GatewayState>) -> Router {
    router
        .fallback(crate::error::no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::admit,
        ))
        .layer(axum::middleware::map_response(crate::error::errors_as_json))
}

/// Serves one connection from `peer` over any byte stream, as the accept
/// loop does but without the connection limits and the 408 on a slow head
/// (fuzzing, tests). `router` comes from [`guarded`].
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<GatewayState>,
    router: Router,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        router.clone().oneshot(req)
    });
    let stream = ClientStream::new(stream, head_limit(&state.config));
    http1_builder(&state.config)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await
}

/// Answers every request of an over-limit connection with `answer`, then
/// closes it; a client that sends nothing within a short time is just closed.
async fn refuse(tcp: TcpStream, answer: ApiError) {
    let svc = hyper::service::service_fn(move |_req: http::Request<Incoming>| {
        let mut res = answer.clone().into_response();
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        std::future::ready(Ok::<_, std::convert::Infallible>(res))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_HEAD_TIMEOUT)
        .max_buf_size(MIN_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(ClientStream::new(tcp, MIN_HEAD_BYTES)), svc);
    let _ = tokio::time::timeout(REFUSAL_HEAD_TIMEOUT * 2, conn).await;
}

/// Raises this process's soft descriptor limit to its hard limit (a node
/// holds one descriptor per connection); returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// `configured`, lowered to fit the descriptor limit less [`FD_RESERVE`] and
/// the connections being refused.
#[allow(unsafe_code)]
fn connection_cap(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return configured;
    }
    let fit = usize::try_from(lim.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE + REFUSALS_IN_FLIGHT)
        .max(1);
    if configured == 0 || configured > fit {
        tracing::info!(
            configured,
            fd_limit = lim.rlim_cur,
            cap = fit,
            "Connections capped below the descriptor limit (raise it with ulimit -n)"
        );
        return fit;
    }
    configured
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_descriptor_limit() {
        let limit = raise_fd_limit().expect("a descriptor limit");
        if limit != libc::RLIM_INFINITY && limit > 1_000 {
            let headroom = (FD_RESERVE + REFUSALS_IN_FLIGHT) as u64;
            assert_eq!(connection_cap(usize::MAX) as u64, limit - headroom);
        }
        assert_eq!(connection_cap(10), 10);
    }
}
