//! `marketmux bridge`: Kafka `market_ticks` (consumer group) → Redis latest
//! price and per-symbol pub/sub, committing offsets only after Redis accepted
//! each batch. Run several with the same `--group` to share the partitions.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_bus::redis::{KeySpace, RedisConfig, RedisPublisher};
use marketmux_bus::TickPublisher;
use marketmux_kafka::{Bridge, BridgeStats, ConsumerStats, KafkaConfig, StartFrom, TickConsumer};
use marketmux_metrics::counters;
use marketmux_metrics::exporter::RoleSeries;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::{BridgeArgs, StartFromArg};
use crate::conventional::REDIS_URL;
use crate::node::Node;

/// Starts a bridge into Redis (`--redis-url`, or REDIS_ADDR).
pub async fn start(args: BridgeArgs) -> anyhow::Result<Node> {
    into_redis(args)
        .instrument(super::role_span("bridge"))
        .await
}

/// Starts a bridge into any `sink` (tests use an in-memory one).
pub async fn start_with_sink(
    args: BridgeArgs,
    sink: Arc<dyn TickPublisher>,
) -> anyhow::Result<Node> {
    into_sink(args, sink)
        .instrument(super::role_span("bridge"))
        .await
}

async fn into_redis(args: BridgeArgs) -> anyhow::Result<Node> {
    let url = REDIS_URL.require(args.redis_url.as_deref(), "bridge")?;
    let redis = RedisConfig {
        url,
        prefix: args.redis_prefix.clone(),
        sharded: args.redis_sharded,
        history: args.history.config(),
        candles: args.history.candle_config(),
        ..RedisConfig::default()
    };
    let client = redis
        .connect_client()
        .await
        .with_context(|| format!("bridge: Redis at {}", redis.redacted_url()))?;
    let keys = KeySpace::new(&redis.prefix, redis.sharded).context("bridge: Redis key prefix")?;
    let publisher = RedisPublisher::new(client, keys)
        .with_history(redis.history)
        .with_candles(redis.candles);
    publisher.load_script().await.with_context(|| {
        format!(
            "bridge: loading the tick script into {}",
            redis.redacted_url()
        )
    })?;
    into_sink(args, Arc::new(publisher)).await
}

async fn into_sink(args: BridgeArgs, sink: Arc<dyn TickPublisher>) -> anyhow::Result<Node> {
    let brokers = args.kafka.brokers("bridge")?;
    let config = KafkaConfig::new(brokers.clone()).with_topic(args.kafka.topic.clone());
    let start_from = match args.start_from {
        StartFromArg::Earliest => StartFrom::Earliest,
        StartFromArg::Latest => StartFrom::Latest,
    };
    let consumer = TickConsumer::new(&config, &args.group, start_from)
        .with_context(|| format!("bridge: Kafka consumer group {}", args.group))?;
    tracing::info!(%brokers, topic = %args.kafka.topic, group = %args.group, "Bridge started");
    let bridge = Bridge::new(consumer, sink).with_clock_skew(args.skew.clock_skew());
    let shutdown = CancellationToken::new();
    let series = bridge_series(bridge.stats(), bridge.consumer_stats());
    let metrics_addr = super::serve_metrics(&args.metrics, series, shutdown.clone()).await?;
    report_stats(bridge.stats(), shutdown.clone());
    let stop = shutdown.clone();
    let task = tokio::spawn(
        async move {
            bridge.run(stop).await;
            Ok(())
        }
        .in_current_span(),
    );
    Ok(Node {
        addr: None,
        metrics_addr,
        shutdown,
        task,
    })
}

/// The bridge's counters on `/metrics`.
pub(super) fn bridge_series(bridge: Arc<BridgeStats>, consumer: Arc<ConsumerStats>) -> RoleSeries {
    Arc::new(move |out: &mut String| {
        let series = [
            (
                "marketmux_bridge_records_total",
                "Kafka records decoded into ticks.",
                consumer.ticks.load(Relaxed),
            ),
            (
                "marketmux_bridge_undecodable_total",
                "Kafka records skipped as not ticks (still committed).",
                consumer.undecodable.load(Relaxed),
            ),
            (
                "marketmux_bridge_ticks_forwarded_total",
                "Ticks Redis accepted (redeliveries included).",
                bridge.ticks.load(Relaxed),
            ),
            (
                "marketmux_bridge_batches_total",
                "Batches forwarded and committed.",
                bridge.batches.load(Relaxed),
            ),
            (
                "marketmux_bridge_sink_failures_total",
                "Redis calls that failed and were retried.",
                bridge.sink_failures.load(Relaxed),
            ),
            (
                "marketmux_bridge_duplicates_total",
                "Records this bridge had already forwarded (skipped).",
                bridge.duplicates.load(Relaxed),
            ),
            (
                "marketmux_bridge_dropped_duplicates_total",
                "Records dropped as already accepted (same producer and sequence), here or where seq is assigned.",
                bridge.dropped_duplicates.load(Relaxed),
            ),
            (
                "marketmux_bridge_sequence_gaps_total",
                "Producer sequence numbers never seen (records lost upstream).",
                bridge.missing.load(Relaxed),
            ),
            (
                "marketmux_bridge_future_timestamps_total",
                "Ticks dropped for a timestamp too far in the future (still committed).",
                bridge.future_timestamps.load(Relaxed),
            ),
            (
                "marketmux_bridge_failed_commits_total",
                "Offset commits the broker refused (batch read again).",
                consumer.failed_commits.load(Relaxed),
            ),
            (
                "marketmux_bridge_assignments_total",
                "Partition assignments received.",
                consumer.assignments.load(Relaxed),
            ),
        ];
        counters(out, &series);
    })
}

/// How often the bridge logs its counters.
const STATS_EVERY: Duration = Duration::from_secs(30);

/// Logs the bridge's counters every [`STATS_EVERY`] while it forwards ticks.
fn report_stats(stats: Arc<BridgeStats>, stop: CancellationToken) {
    tokio::spawn(
        async move {
            let mut every = tokio::time::interval(STATS_EVERY);
            every.tick().await;
            let mut last = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let ticks = stats.ticks.load(Relaxed);
                if ticks != last {
                    tracing::info!(
                        ticks,
                        batches = stats.batches.load(Relaxed),
                        duplicates = stats.duplicates.load(Relaxed),
                        missing = stats.missing.load(Relaxed),
                        sink_failures = stats.sink_failures.load(Relaxed),
                        "Bridge forwarding"
                    );
                    last = ticks;
                }
            }
        }
        .in_current_span(),
    );
}
