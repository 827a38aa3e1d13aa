//! `marketmux gateway`: an edge node fed by the Redis bus.
//!
//! - Redis → hub: the node's one subscriber connection delivers the ticks of
//!   the symbols its clients follow; the hub fans them out.
//! - hub → Redis: the hub's [`Interest`] events subscribe a symbol's channel on
//!   its first local subscriber and unsubscribe it a linger after the last left.
//! - `POST /api/v1/ticks` → Redis (latest price if newer, and publish), or to
//!   Kafka when the Kafka pipeline is configured (see [`ingest_publisher`]).
//! - `/price` and subscribe snapshots read `price:SYMBOL`; `/ready` is 503
//!   while Redis is away, and ticks flow again after it is back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_bus::redis::StillNeeded;
use marketmux_bus::{Readiness, RedisBus, RedisConfig, TickBatchHandler, TickPublisher};
use marketmux_core::{Symbol, Tick};
use marketmux_gateway::candles::CandleHub;
use marketmux_gateway::GatewayState;
use marketmux_hub::{Interest, InterestListener, SymbolHub};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::{GatewayArgs, LimitArgs};
use crate::conventional::{KAFKA_BROKERS, REDIS_URL};
use crate::node::Node;

/// Starts an edge node; it runs until its [`Node::shutdown`] is cancelled.
pub async fn start(args: GatewayArgs) -> anyhow::Result<Node> {
    run(args).instrument(super::role_span("gateway")).await
}

async fn run(args: GatewayArgs) -> anyhow::Result<Node> {
    let redis = redis_config(&args)?;
    let hub = GatewayState::new_hub();
    let candles = CandleHub::new(redis.candles.grace_ms);
    let (to_hub, to_candles) = (hub.clone(), candles.clone());
    // Ticks that arrived together go out together: one write per client.
    let handler: TickBatchHandler = Arc::new(move |ticks: &[Tick]| {
        to_hub.publish_batch(ticks);
        to_candles.on_ticks(ticks);
    });
    let (counts, candle_counts) = (hub.clone(), candles.clone());
    let still_needed: StillNeeded =
        Arc::new(move |s: &Symbol| counts.subscriber_count(s) > 0 || candle_counts.follows(s));
    let bus = RedisBus::connect(redis.clone(), handler, still_needed)
        .await
        .with_context(|| format!("gateway: Redis edge bus at {}", redis.redacted_url()))?;
    follow_interest(&hub, &bus);
    candles.set_interest_listener(interest_listener(&bus));

    let (publisher, kafka_ready) = ingest_publisher(&args, &bus)?;
    let mut readiness: Vec<Arc<dyn Readiness>> = vec![bus.clone()];
    readiness.extend(kafka_ready);
    let state = GatewayState::with_candles(
        args.limits.gateway_config()?,
        hub,
        candles,
        publisher,
        bus.clone(),
        readiness,
    );

    // Alerts fired by the alerts role reach this node's sockets of that user.
    let push = state.clone();
    let alert_listener = marketmux_bus::redis::alerts::listen_alerts(
        &redis,
        Arc::new(move |user: i64, alert: &str| {
            push.push_alert(user, alert);
        }),
    )
    .await
    .with_context(|| format!("gateway: fired-alert channel on {}", redis.redacted_url()))?;

    marketmux_gateway::server::raise_fd_limit();
    let listener = marketmux_gateway::server::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, redis = %redis.redacted_url(), prefix = %redis.prefix, sharded = redis.sharded, "MarketMux gateway ready");
    let shutdown = CancellationToken::new();
    let admin = admin_listener(&args.limits, &state, &shutdown)?;
    let mut router = match admin {
        Some(_) => marketmux_gateway::server::public_router(state.clone()),
        None => marketmux_gateway::router(state.clone()),
    };
    if let Some(url) = &args.alerts_url {
        let alerts = marketmux_alerts::grpc::remote_rest_routes(url).context("--alerts-url")?;
        router = router.merge(marketmux_gateway::auth::protect_user_routes(&state, alerts));
    }
    let serve = marketmux_gateway::serve(listener, state, router, shutdown.clone());
    let task = tokio::spawn(
        async move {
            let result = serve.await;
            alert_listener.stop().await;
            bus.shutdown().await;
            result
        }
        .in_current_span(),
    );
    Ok(Node {
        addr: Some(addr),
        metrics_addr: admin,
        shutdown,
        task,
    })
}

/// Starts the admin listener (`/debug/*`, `/metrics`, `/health`) when
/// `--admin-listen` is set; it stops with `shutdown`. Returns its address.
pub fn admin_listener(
    limits: &LimitArgs,
    state: &Arc<GatewayState>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(at) = limits.admin_listen else {
        return Ok(None);
    };
    let listener = marketmux_gateway::server::bind(at)
        .with_context(|| format!("cannot listen on --admin-listen {at}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && limits.admin_token.is_none() {
        tracing::warn!(%addr, "The admin listener is not on loopback and has no --admin-token: /debug/* is open to whoever reaches it");
    }
    tracing::info!(%addr, "Admin endpoints (/debug/*, /metrics) on their own listener");
    tokio::spawn(
        marketmux_gateway::serve_admin(listener, state.clone(), shutdown.clone()).in_current_span(),
    );
    Ok(Some(addr))
}

/// The Redis settings from the flags (`--redis-url`, else the conventional REDIS_ADDR).
pub fn redis_config(args: &GatewayArgs) -> anyhow::Result<RedisConfig> {
    let url = REDIS_URL
        .resolve(args.redis_url.as_deref())
        .ok_or_else(|| {
            let e = REDIS_URL.missing("gateway");
            anyhow::anyhow!("{e}; for a single node without Redis run `marketmux dev`")
        })?;
    let linger = Duration::try_from_secs_f64(args.redis_unsubscribe_linger_secs.max(0.0))
        .context("--redis-unsubscribe-linger-secs is out of range")?;
    Ok(RedisConfig {
        url,
        prefix: args.redis_prefix.clone(),
        sharded: args.redis_sharded,
        unsubscribe_linger: linger,
        max_pending_reads: args.redis_max_pending_reads.max(1),
        history: args.history.config(),
        candles: args.history.candle_config(),
        ..RedisConfig::default()
    })
}

/// Hands the hub's interest changes to the Redis subscriber within the
/// subscribe that made them, so that a stream opened right after a first
/// subscribe waits for that symbol's SUBSCRIBE. (Through a task in between,
/// the open could run before the task did, and read before the SUBSCRIBE.)
/// Holds the bus weakly: the bus's tick handler holds the hub.
fn follow_interest(hub: &SymbolHub, bus: &Arc<RedisBus>) {
    hub.set_interest_listener(interest_listener(bus));
}

/// Follows a symbol in Redis from its first local subscriber (of ticks or of
/// candles) and unfollows it (after the linger, if no one else needs it) at
/// its last.
fn interest_listener(bus: &Arc<RedisBus>) -> InterestListener {
    let bus = Arc::downgrade(bus);
    Arc::new(move |event| {
        if let Some(bus) = bus.upgrade() {
            match event {
                Interest::Added(s) => bus.follow(s),
                Interest::Removed(s) => bus.unfollow(s),
            }
        }
    })
}

/// Where `POST /api/v1/ticks` sends accepted ticks: straight to Redis, unless
/// the Kafka pipeline is configured (then the Kafka producer's readiness joins `/ready`).
type IngestTarget = (Arc<dyn TickPublisher>, Option<Arc<dyn Readiness>>);

fn ingest_publisher(args: &GatewayArgs, bus: &Arc<RedisBus>) -> anyhow::Result<IngestTarget> {
    let kafka = KAFKA_BROKERS.resolve(args.kafka_brokers.as_deref());
    if let Some(brokers) = kafka {
        // Ingest goes to Kafka (202 only after the brokers' ack); the bridge moves it to Redis.
        let config =
            marketmux_kafka::KafkaConfig::new(brokers.clone()).with_topic(args.topic.clone());
        let publisher = marketmux_kafka::KafkaPublisher::new(&config, "gateway")
            .with_context(|| format!("gateway: Kafka producer for {brokers}"))?;
        tracing::info!(%brokers, topic = %config.topic, "POST /api/v1/ticks goes to Kafka");
        let publisher = Arc::new(publisher);
        return Ok((publisher.clone(), Some(publisher)));
    }
    Ok((bus.clone(), None))
}

#[cfg(test)]
mod tests {
    use marketmux_bus::RedisConfig;
    use marketmux_hub::QueueLimits;

    use super::*;

    /// When a first subscribe returns, the Redis subscriber has been told to
    /// follow the symbol: a stream opened next waits for its SUBSCRIBE.
    #[tokio::test]
    async fn a_first_subscribe_reaches_the_redis_subscriber_before_it_returns() {
        let url = std::env::var("MARKETMUX_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let config = RedisConfig {
            url,
            prefix: format!("test-follow-{}:", std::process::id()),
            ..RedisConfig::default()
        };
        let bus = RedisBus::connect(
            config,
            Arc::new(|_: &[Tick]| {}),
            Arc::new(|_: &Symbol| true),
        )
        .await
        .expect("Redis on 127.0.0.1:6379 (start redis-server, or set MARKETMUX_TEST_REDIS_URL)");
        let hub = GatewayState::new_hub();
        follow_interest(&hub, &bus);
        let before = bus.subscriber().changes_sent();
        let client = hub.new_client(1, QueueLimits::default());
        hub.subscribe(Symbol::new("FOLLOW").unwrap(), &client)
            .unwrap();
        assert_eq!(bus.subscriber().changes_sent(), before + 1);
    }
}
