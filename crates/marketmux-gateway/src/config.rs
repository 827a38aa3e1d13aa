//! [`GatewayConfig`]: every limit of an edge node, with safe defaults.

use std::sync::Arc;
use std::time::Duration;

use marketmux_core::ClockSkew;
use marketmux_hub::QueueLimits;

use crate::auth::AuthConfig;

/// Limits and timings of one gateway node. Each bound says what happens at it.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest client frame (and message) accepted; a larger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Subscriptions per socket, a symbol's ticks and each candle series
    /// (symbol × interval) counting one each; a subscribe past it gets
    /// `too_many_subscriptions`.
    pub max_subscriptions: usize,
    /// Subscriptions of all sockets of one client address together, counted
    /// as for `max_subscriptions` (0: no limit); a subscribe past it gets
    /// `too_many_subscriptions`.
    pub max_subscriptions_per_ip: usize,
    /// Symbols followed on this node at once (its topics, each also a
    /// channel subscribed upstream); a subscribe that would add one past it
    /// gets `too_many_subscriptions`, symbols already followed stay open
    /// (0: no limit).
    pub max_topics: usize,
    /// Client frames per second per socket (burst: twice that): every frame
    /// counts, requests, pings, pongs and fragments alike. Past it the client
    /// gets `rate_limited` and its messages are dropped; a client that keeps
    /// going for another second's worth is closed with 1008.
    pub max_messages_per_sec: u32,
    /// Outgoing queue bounds (conflation, slow-consumer close).
    pub queue: QueueLimits,
    /// How often the server pings every socket.
    pub ping_interval: Duration,
    /// A socket that sends nothing (not even a pong) for this long is closed with 1001.
    pub idle_timeout: Duration,
    /// Time allowed for a request head (the upgrade request too), from
    /// connecting or from the previous answer on the connection; past it the
    /// client gets 408 and the connection is closed.
    pub handshake_timeout: Duration,
    /// Largest request head (request line and headers); past it 431 (414 for
    /// the request line alone) and the connection is closed. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Time a request body may take to arrive after its head; past it 408 and
    /// the connection is closed.
    pub body_timeout: Duration,
    /// `Host` values answered besides loopback names (`*`: any); `None`
    /// answers any. A request naming another host gets 403 (DNS rebinding).
    pub allowed_hosts: Option<Vec<String>>,
    /// Open connections on this node, HTTP and WebSocket alike (also capped
    /// below the process's descriptor limit); a connection past it is answered
    /// 503 and closed.
    pub max_connections: usize,
    /// Open connections per client IP, HTTP and WebSocket alike (0: no
    /// limit); a connection past it is answered 429 and closed.
    pub max_connections_per_ip: usize,
    /// Send buffer asked of the kernel for each accepted connection, in bytes
    /// (Linux doubles it; 0: the kernel's own sizing, several MiB on
    /// loopback). A client that stops reading fills it, then its frames wait
    /// in the node's queue, where their age counts against `queue.max_lag`:
    /// the smaller it is, the sooner such a client is found out, and the less
    /// kernel memory it holds.
    pub socket_send_buffer: usize,
    /// Whether `{"action":"identify"}` is honoured (dev role with auth off only).
    pub allow_identify: bool,
    /// On shutdown, sockets are closed with 1012 spread evenly over this period.
    pub drain_period: Duration,
    /// Largest `POST /api/v1/ticks` body.
    pub max_ingest_body_bytes: usize,
    /// How far in the future an ingested tick's timestamp may be; a body with
    /// one further ahead is refused whole (400 `timestamp_in_future`).
    pub max_clock_skew: ClockSkew,
    /// When set, `/debug/*` endpoints need `Authorization: Bearer <token>`;
    /// unset, they answer only on a loopback or admin listener.
    pub admin_token: Option<String>,
    /// Tokens, the ingest token and the Origin allow-list (all off by default).
    pub auth: Arc<AuthConfig>,
    /// Whether permessage-deflate is negotiated with clients that offer it
    /// (each tick compressed once per node, shared by those clients).
    pub compression: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 4096,
            max_subscriptions: 1024,
            max_subscriptions_per_ip: 20_000,
            max_topics: 100_000,
            max_messages_per_sec: 50,
            queue: QueueLimits::default(),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            body_timeout: Duration::from_secs(10),
            allowed_hosts: None,
            max_connections: 100_000,
            max_connections_per_ip: 2_000,
            socket_send_buffer: 64 * 1024,
            allow_identify: false,
            drain_period: Duration::from_secs(5),
            max_ingest_body_bytes: 4 * 1024 * 1024,
            max_clock_skew: ClockSkew::default(),
            admin_token: None,
            auth: Arc::default(),
            compression: true,
        }
    }
}
