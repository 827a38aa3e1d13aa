//! Command-line flags. Every flag also reads `MARKETMUX_<FLAG>` from the
//! environment (and from `.env`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use marketmux_bus::HistoryConfig;
use marketmux_core::{CandleConfig, ClockSkew};
use marketmux_gateway::auth::{AuthConfig, JwtVerifier, MIN_HS256_SECRET_BYTES};
use marketmux_gateway::GatewayConfig;
use marketmux_hub::QueueLimits;

use crate::conventional::KAFKA_BROKERS;

/// MarketMux: real-time market prices to many WebSocket clients.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Log output: `text` for people, `json` for machines. Level from RUST_LOG.
    #[arg(long, global = true, env = "MARKETMUX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The role to run (none: `dev`).
    #[command(subcommand)]
    pub role: Option<Role>,
}

/// Log formats: `text` (human-readable lines) or `json` (one object per line).
// The variants have no doc comments: clap would show them as per-value help
// and switch `--help` to its long form.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(missing_docs)]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

/// Which part of the system this process runs.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// Everything in one process: gateway, in-process bus and store, synthetic feed (the default).
    Dev(DevArgs),
    /// A WebSocket + REST edge node.
    Gateway(GatewayArgs),
    /// Kafka market_ticks → Redis latest price and pub/sub.
    Bridge(BridgeArgs),
    /// Finnhub (or another source) → Kafka.
    Ingest(IngestArgs),
    /// Alert evaluation (Kafka consumer group) and the alert API (gRPC).
    Alerts(AlertsArgs),
}

/// Parses the dev flags alone (from the environment), for a bare `marketmux`.
#[derive(Parser)]
struct DevOnly {
    #[command(flatten)]
    args: DevArgs,
}

impl Default for Role {
    fn default() -> Self {
        Role::Dev(DevOnly::parse_from(["marketmux"]).args)
    }
}

/// Flags of the `dev` role.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, env = "MARKETMUX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded store keeps its files.
    #[arg(long, env = "MARKETMUX_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store (also DATABASE_URL).
    #[arg(long, env = "MARKETMUX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Synthetic ticks per second per symbol; 0 turns the feed off.
    #[arg(long, env = "MARKETMUX_FEED_RATE", default_value_t = 4.0)]
    pub feed_rate: f64,
    /// Number of synthetic symbols.
    #[arg(long, env = "MARKETMUX_FEED_SYMBOLS", default_value_t = 40)]
    pub feed_symbols: usize,
    /// Active alerts one user may have; creating more answers 409 `too_many_alerts`.
    #[arg(long, env = "MARKETMUX_MAX_ALERTS_PER_USER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_alerts_per_user: u32,
    /// How much history is kept.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Per-node limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How much of each symbol's stream is kept for recovery and `GET /history`
/// (`dev`, `gateway`, `bridge`: kept where `seq` is assigned).
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Ticks of each symbol kept (the newest); 0 turns history off.
    #[arg(long, env = "MARKETMUX_HISTORY_SIZE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub history_size: u32,
    /// Seconds a kept tick stays kept; 0 turns history off.
    #[arg(long, env = "MARKETMUX_HISTORY_TTL_SECS", default_value_t = 600)]
    pub history_ttl_secs: u64,
    /// Closed candles kept per symbol and interval (GET /candles serves at most 1,000).
    #[arg(long, env = "MARKETMUX_CANDLE_HISTORY", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub candle_history: u32,
    /// Milliseconds after its end an interval still takes ticks; then the clock closes its candle.
    #[arg(long, env = "MARKETMUX_CANDLE_GRACE_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub candle_grace_ms: u32,
}

impl HistoryArgs {
    /// As the bus takes it.
    pub fn config(&self) -> HistoryConfig {
        HistoryConfig {
            size: self.history_size as usize,
            ttl: Duration::from_secs(self.history_ttl_secs),
        }
    }

    /// How candles are kept, as the bus takes it.
    pub fn candle_config(&self) -> CandleConfig {
        CandleConfig {
            history: self.candle_history as usize,
            grace_ms: i64::from(self.candle_grace_ms),
        }
    }
}

/// Flags of the `gateway` role.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "MARKETMUX_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Redis for the edge bus and latest prices (also REDIS_ADDR).
    #[arg(long, env = "MARKETMUX_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Put in front of every Redis key and channel (default none: `price:SYMBOL`).
    #[arg(long, env = "MARKETMUX_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,
    /// Sharded pub/sub (SPUBLISH/SSUBSCRIBE), for Redis Cluster.
    #[arg(long, env = "MARKETMUX_REDIS_SHARDED")]
    pub redis_sharded: bool,
    /// Seconds a symbol stays subscribed in Redis after its last local subscriber left.
    #[arg(
        long,
        env = "MARKETMUX_REDIS_UNSUBSCRIBE_LINGER_SECS",
        default_value_t = 5.0
    )]
    pub redis_unsubscribe_linger_secs: f64,
    /// Latest-price reads (subscribe snapshots, GET /price) waiting for Redis; past it a read fails at once (503).
    #[arg(
        long,
        env = "MARKETMUX_REDIS_MAX_PENDING_READS",
        default_value_t = 65_536
    )]
    pub redis_max_pending_reads: usize,
    /// Kafka brokers: ingest goes to Kafka when set (also KAFKA_BROKERS).
    #[arg(long, env = "MARKETMUX_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic that ingest produces to, when `--kafka-brokers` is set.
    #[arg(long, env = "MARKETMUX_TOPIC", default_value = "market_ticks")]
    pub topic: String,
    /// The alerts role's gRPC API, for the REST alert endpoints.
    #[arg(long, env = "MARKETMUX_ALERTS_URL")]
    pub alerts_url: Option<String>,
    /// How much history is kept.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Per-node limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Kafka connection flags shared by `bridge` and `ingest`.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port]` (also KAFKA_BROKERS).
    #[arg(long, env = "MARKETMUX_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic of the ticks.
    #[arg(long, env = "MARKETMUX_TOPIC", default_value = "market_ticks")]
    pub topic: String,
}

impl KafkaArgs {
    /// The brokers from the flag, else the conventional KAFKA_BROKERS;
    /// `role` cannot run without them.
    pub fn brokers(&self, role: &str) -> anyhow::Result<String> {
        KAFKA_BROKERS.require(self.kafka_brokers.as_deref(), role)
    }
}

/// The bound on tick timestamps in the future, at every entrance (REST
/// ingest, the Kafka bridge, the Finnhub feed).
#[derive(Args, Debug, Clone)]
pub struct ClockSkewArgs {
    /// Seconds a tick's timestamp may be ahead of this node's clock; further
    /// ahead it is refused (400 on REST) or dropped and counted (bridge, ingest).
    #[arg(long, env = "MARKETMUX_MAX_CLOCK_SKEW_SECS", default_value_t = 60.0)]
    pub max_clock_skew_secs: f64,
}

impl ClockSkewArgs {
    /// The bound these flags describe.
    pub fn clock_skew(&self) -> ClockSkew {
        ClockSkew::new(secs(self.max_clock_skew_secs))
    }
}

/// Where a role without a gateway serves `/metrics` and `/health`.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve `/metrics` (Prometheus text) and `/health` here, e.g. 0.0.0.0:9100
    /// (unset: no metrics endpoint).
    #[arg(long, env = "MARKETMUX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Flags of the `bridge` role.
#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// Kafka brokers and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Where `/metrics` is served.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The bound on timestamps in the future.
    #[command(flatten)]
    pub skew: ClockSkewArgs,
    /// Redis for latest prices and pub/sub (also REDIS_ADDR).
    #[arg(long, env = "MARKETMUX_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Put in front of every Redis key and channel (tests isolate themselves with it).
    #[arg(long, env = "MARKETMUX_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,
    /// Redis Cluster: publish with SPUBLISH on slot-local channels (must match the gateways).
    #[arg(long, env = "MARKETMUX_REDIS_SHARDED")]
    pub redis_sharded: bool,
    /// Kafka consumer group; bridges of one group share the partitions.
    #[arg(long, env = "MARKETMUX_GROUP", default_value = "marketmux-bridge")]
    pub group: String,
    /// Where a group without committed offsets starts.
    #[arg(long, env = "MARKETMUX_START_FROM", value_enum, default_value_t = StartFromArg::Earliest)]
    pub start_from: StartFromArg,
    /// How much history is kept.
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// Flags of the `alerts` role.
#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Kafka brokers and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Where `/metrics` is served.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// PostgreSQL holding `users` and `alerts` (also DATABASE_URL).
    #[arg(long, env = "MARKETMUX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address of the gRPC alert API (`--alerts-url` of the gateways). The API
    /// has no authentication of its own (the gateways check users): keep it on
    /// loopback or a private network.
    #[arg(long, env = "MARKETMUX_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Kafka consumer group; evaluators of one group share the partitions.
    #[arg(
        long,
        env = "MARKETMUX_ALERTS_GROUP",
        default_value = "marketmux-alerts"
    )]
    pub group: String,
    /// Where a group without committed offsets starts.
    #[arg(long, env = "MARKETMUX_START_FROM", value_enum, default_value_t = StartFromArg::Latest)]
    pub start_from: StartFromArg,
    /// Seconds between full reloads of the active alerts: the safety net
    /// behind the PostgreSQL change feed, which shows other instances'
    /// creates and deletes at once.
    #[arg(long, env = "MARKETMUX_ALERTS_RELOAD_SECS", default_value_t = 5.0)]
    pub reload_secs: f64,
    /// Active alerts one user may have; creating more answers RESOURCE_EXHAUSTED
    /// (409 `too_many_alerts` through a gateway).
    #[arg(long, env = "MARKETMUX_MAX_ALERTS_PER_USER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_alerts_per_user: u32,
    /// Redis on which fired alerts reach the gateways' sockets (also REDIS_ADDR);
    /// without it fired alerts are only stored and logged.
    #[arg(long, env = "MARKETMUX_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Put in front of the fired-alerts channel (must match the gateways).
    #[arg(long, env = "MARKETMUX_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StartFromArg {
    /// Everything still retained in the topic.
    Earliest,
    /// Only ticks produced after the group joined.
    Latest,
}

/// Flags of the `ingest` role.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Kafka brokers and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Where `/metrics` is served.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The bound on timestamps in the future.
    #[command(flatten)]
    pub skew: ClockSkewArgs,
    /// Finnhub API token (also FINNHUB_API_KEY).
    #[arg(long, env = "MARKETMUX_FINNHUB_TOKEN", hide_env_values = true)]
    pub finnhub_token: Option<String>,
    /// Symbols to subscribe to, comma-separated (e.g. AAPL,MSFT,BINANCE:BTCUSDT).
    #[arg(
        long,
        env = "MARKETMUX_SYMBOLS",
        value_delimiter = ',',
        default_value = "AAPL,MSFT,AMZN,GOOGL,TSLA,BINANCE:BTCUSDT,BINANCE:ETHUSDT"
    )]
    pub symbols: Vec<String>,
    /// Finnhub WebSocket URL (a local fake in tests).
    #[arg(
        long,
        env = "MARKETMUX_FINNHUB_URL",
        default_value = "wss://ws.finnhub.io"
    )]
    pub finnhub_url: String,
}

/// Per-node limits shared by `dev` and `gateway`.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Token that `/debug/*` endpoints require as `Authorization: Bearer …`, on
    /// any listener (unset: they answer only on a loopback listener or `--admin-listen`).
    #[arg(long, env = "MARKETMUX_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve `/debug/*` and `/metrics` on this address instead of `--listen`,
    /// e.g. 127.0.0.1:9091 (unset: on `--listen`).
    #[arg(long, env = "MARKETMUX_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// `Host` values answered besides loopback names, comma-separated, `*` for
    /// any (unset: any on `gateway`, loopback names only on `dev`).
    #[arg(long, env = "MARKETMUX_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Subscriptions per socket: a symbol's ticks, and each candle series
    /// (symbol × interval), count one each.
    #[arg(long, env = "MARKETMUX_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    pub max_subscriptions: usize,
    /// Subscriptions of all sockets of one client address together, candle
    /// series included (0: no limit).
    #[arg(
        long,
        env = "MARKETMUX_MAX_SUBSCRIPTIONS_PER_IP",
        default_value_t = 20_000
    )]
    pub max_subscriptions_per_ip: usize,
    /// Symbols followed on this node at once; a subscribe that would add one
    /// more is refused (`too_many_subscriptions`), followed ones stay open
    /// (0: no limit).
    #[arg(long, env = "MARKETMUX_MAX_TOPICS", default_value_t = 100_000)]
    pub max_topics: usize,
    /// Client frames per second per socket, burst twice that: requests, pings,
    /// pongs and fragments alike (`rate_limited` past it, then close 1008).
    #[arg(long, env = "MARKETMUX_MAX_MESSAGES_PER_SEC", default_value_t = 50)]
    pub max_messages_per_sec: u32,
    /// Open connections per node, HTTP and WebSocket (also kept below the descriptor limit).
    #[arg(long, env = "MARKETMUX_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Bytes of ticks queued per socket before it conflates.
    #[arg(long, env = "MARKETMUX_QUEUE_BYTES", default_value_t = 256 * 1024)]
    pub queue_bytes: usize,
    /// Seconds the oldest unsent frame of a socket may wait; past it the
    /// socket is behind and closed (1008 slow consumer), its queue freed.
    #[arg(long, env = "MARKETMUX_MAX_LAG_SECS", default_value_t = 5.0)]
    pub max_lag_secs: f64,
    /// Kernel send buffer per connection, in bytes (Linux doubles it; 0: the
    /// kernel's own sizing): a client that stops reading is found out once it is full.
    #[arg(long, env = "MARKETMUX_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub socket_send_buffer: usize,
    /// Seconds between server pings.
    #[arg(long, env = "MARKETMUX_PING_INTERVAL_SECS", default_value_t = 20.0)]
    pub ping_interval_secs: f64,
    /// Seconds of silence after which a socket is closed.
    #[arg(long, env = "MARKETMUX_IDLE_TIMEOUT_SECS", default_value_t = 60.0)]
    pub idle_timeout_secs: f64,
    /// Seconds over which sockets are closed (1012) at shutdown.
    #[arg(long, env = "MARKETMUX_DRAIN_SECS", default_value_t = 5.0)]
    pub drain_secs: f64,
    /// Open connections per client address, HTTP and WebSocket (0: no limit).
    #[arg(
        long,
        env = "MARKETMUX_MAX_CONNECTIONS_PER_IP",
        default_value_t = 2_000
    )]
    pub max_connections_per_ip: usize,
    /// Largest client frame or message, in bytes; a larger one closes the socket (1009).
    #[arg(long, env = "MARKETMUX_MAX_FRAME_BYTES", default_value_t = 4096)]
    pub max_frame_bytes: usize,
    /// Seconds a connection has to send a request head (the upgrade request
    /// too), from connecting or from its previous answer (408 past it).
    #[arg(long, env = "MARKETMUX_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub handshake_timeout_secs: f64,
    /// Largest request head, request line and headers, in bytes (431 or 414
    /// past it; at least 8192).
    #[arg(long, env = "MARKETMUX_MAX_HEADER_BYTES", default_value_t = 8192)]
    pub max_header_bytes: usize,
    /// Seconds a request body may take after its head (408 past it).
    #[arg(long, env = "MARKETMUX_BODY_TIMEOUT_SECS", default_value_t = 10.0)]
    pub body_timeout_secs: f64,
    /// Largest `POST /api/v1/ticks` body, in bytes (413 past it).
    #[arg(long, env = "MARKETMUX_MAX_INGEST_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_ingest_body_bytes: usize,
    /// permessage-deflate for clients that offer it (each tick compressed
    /// once per node and shared); `off`: every socket uncompressed.
    #[arg(long, env = "MARKETMUX_COMPRESSION", value_enum, default_value_t = OnOff::On)]
    pub compression: OnOff,
    /// The bound on timestamps in the future.
    #[command(flatten)]
    pub skew: ClockSkewArgs,
    /// Authentication.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Authentication: off unless a JWT secret or public key is given.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// HS256 secret: sockets and alert APIs then need a JWT whose `sub` is the user id.
    #[arg(
        long,
        env = "MARKETMUX_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key file (RSA for RS256, EC P-256 for ES256) instead of a secret.
    #[arg(long, env = "MARKETMUX_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Token `POST /api/v1/ticks` then requires as `Authorization: Bearer …`.
    #[arg(long, env = "MARKETMUX_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Origins allowed to open sockets, comma-separated, `*` for any (unset: the node's own pages only).
    #[arg(long, env = "MARKETMUX_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
}

impl SecurityArgs {
    /// The gateway's authentication settings. Fails closed: an unreadable
    /// key, or an HS256 secret that is set but empty or shorter than
    /// [`MIN_HS256_SECRET_BYTES`], is an error (the node does not start)
    /// rather than authentication turned off or weakened.
    pub fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let jwt = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(secret), _) => Some(JwtVerifier::hs256(secret.as_bytes()).map_err(|e| {
                anyhow::anyhow!(
                    "--jwt-secret (MARKETMUX_JWT_SECRET): {e}; give a random secret of at \
                     least {MIN_HS256_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`), \
                     or unset it to run without authentication"
                )
            })?),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --jwt-public-key {}", path.display()))?;
                Some(
                    JwtVerifier::from_public_key_pem(&pem)
                        .with_context(|| format!("--jwt-public-key {}", path.display()))?,
                )
            }
            (None, None) => None,
        };
        Ok(AuthConfig {
            jwt,
            ingest_token: self.ingest_token.clone().filter(|t| !t.is_empty()),
            allowed_origins: self.allowed_origins.clone().filter(|o| !o.is_empty()),
        })
    }

    /// Logs at start-up how sockets and user APIs are authenticated: off,
    /// or the algorithm and where its key comes from.
    pub fn log_auth(&self, config: &AuthConfig) {
        let ingest_token = config.ingest_token.is_some();
        match (&config.jwt, &self.jwt_public_key) {
            (None, _) => tracing::info!(
                ingest_token,
                "Authentication off: sockets and the alert API are open to anyone"
            ),
            (Some(v), Some(path)) if self.jwt_secret.is_none() => tracing::info!(
                algorithm = ?v.algorithm(),
                public_key = %path.display(),
                ingest_token,
                "Authentication on: JWT verified with the public key"
            ),
            (Some(v), _) => tracing::info!(
                algorithm = ?v.algorithm(),
                ingest_token,
                "Authentication on: JWT with the shared secret"
            ),
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::MAX)
}

impl LimitArgs {
    /// The gateway configuration these flags describe, authentication
    /// included; logs whether authentication is on and how.
    pub fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        let mut config = self.to_config();
        let auth = self.security.auth_config()?;
        self.security.log_auth(&auth);
        config.auth = std::sync::Arc::new(auth);
        Ok(config)
    }

    /// The limits alone, with authentication off (tests and tools).
    pub fn to_config(&self) -> GatewayConfig {
        GatewayConfig {
            max_subscriptions: self.max_subscriptions,
            max_subscriptions_per_ip: self.max_subscriptions_per_ip,
            max_topics: self.max_topics,
            max_messages_per_sec: self.max_messages_per_sec,
            max_connections: self.max_connections,
            queue: QueueLimits {
                max_bytes: self.queue_bytes,
                max_lag: secs(self.max_lag_secs),
                ..QueueLimits::default()
            },
            ping_interval: secs(self.ping_interval_secs.max(0.1)),
            idle_timeout: secs(self.idle_timeout_secs.max(0.2)),
            drain_period: secs(self.drain_secs),
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            max_connections_per_ip: self.max_connections_per_ip,
            socket_send_buffer: self.socket_send_buffer,
            max_frame_bytes: self.max_frame_bytes.max(125),
            handshake_timeout: secs(self.handshake_timeout_secs.max(0.1)),
            max_header_bytes: self.max_header_bytes.max(8192),
            body_timeout: secs(self.body_timeout_secs.max(0.1)),
            allowed_hosts: self
                .allowed_hosts
                .clone()
                .filter(|hosts| !hosts.iter().any(|h| h.trim() == "*")),
            max_ingest_body_bytes: self.max_ingest_body_bytes.max(1024),
            max_clock_skew: self.skew.clock_skew(),
            compression: self.compression == OnOff::On,
            ..GatewayConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn env_example_lists_every_setting() {
        let example = include_str!("../../../.env.example");
        let cli = Cli::command();
        let mut missing = Vec::new();
        for cmd in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    if !example.contains(&format!("# {env}=")) {
                        missing.push(format!("{} --{}: {env}", cmd.get_name(), arg.get_id()));
                    }
                }
            }
        }
        missing.dedup();
        assert!(missing.is_empty(), ".env.example lacks {missing:#?}");
    }

    #[test]
    fn compression_is_on_unless_turned_off() {
        let config = |args: &[&str]| match Cli::parse_from(args).role {
            Some(Role::Gateway(a)) => a.limits.to_config().compression,
            other => panic!("{other:?}"),
        };
        assert!(config(&["marketmux", "gateway"]));
        assert!(!config(&["marketmux", "gateway", "--compression", "off"]));
        assert!(Cli::try_parse_from(["marketmux", "gateway", "--compression", "maybe"]).is_err());
    }

    #[test]
    fn history_defaults_and_bounds() {
        match Cli::parse_from(["marketmux", "bridge"]).role {
            Some(Role::Bridge(a)) => assert_eq!(a.history.config(), HistoryConfig::default()),
            other => panic!("{other:?}"),
        }
        let too_big = Cli::try_parse_from(["marketmux", "gateway", "--history-size", "100001"]);
        assert!(too_big.is_err());
    }

    #[test]
    fn no_role_means_dev_on_localhost() {
        let cli = Cli::parse_from(["marketmux"]);
        assert!(cli.role.is_none());
        match Role::default() {
            Role::Dev(a) => assert_eq!(a.listen.to_string(), "127.0.0.1:8080"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::parse_from([
            "marketmux",
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--feed-rate",
            "0",
            "--max-subscriptions",
            "3",
            "--history-size",
            "0",
        ]);
        match cli.role {
            Some(Role::Dev(a)) => {
                assert!(!a.history.config().enabled());
                assert_eq!(a.history.config().ttl, Duration::from_secs(600));
                assert_eq!(a.feed_rate, 0.0);
                assert_eq!(a.limits.to_config().max_subscriptions, 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
