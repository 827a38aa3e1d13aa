//! `marketmux alerts`: alert evaluation and the alert API.
//!
//! - Input: a Kafka consumer group on `market_ticks` (several instances with
//!   the same `--group` share the partitions; ticks are keyed by symbol, so
//!   each symbol is evaluated by one instance at a time).
//! - Store: PostgreSQL (`--database-url` or DATABASE_URL), migrated at start.
//!   Every instance follows the store's change feed (`LISTEN/NOTIFY`), so an
//!   alert created or deleted through any instance is evaluated (or dropped)
//!   by all of them at once; the periodic reload (`--reload-secs`) is the
//!   safety net, and a reconnected feed reloads at once.
//! - Each user may have `--max-alerts-per-user` active alerts.
//! - API: gRPC on `--grpc-listen` (`proto/alert.proto`), which gateways
//!   started with `--alerts-url` serve as REST.
//! - Firing is exactly once through the store's conditional update. Offsets
//!   are committed only while no fire is pending, so a crash during a
//!   database outage replays the crossing ticks instead of losing the fire.
//! - Fired alerts are logged (`Alert fired`) and, with `--redis-url`,
//!   published on Redis for the gateways' sockets through
//!   [`marketmux_alerts::relay`] (a bounded queue and a task that retries
//!   with backoff, while ticks keep being evaluated).
//! - Evaluation is [`Evaluator::run`], the same loop as in `dev`, reading the
//!   consumer group through [`TickFeed`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_alerts::{follow, grpc, relay};
use marketmux_alerts::{
    AlertService, AlertSink, AlertStore, Evaluator, FiredAlert, LocalAlertService, PgAlertStore,
    TickFeed,
};
use marketmux_bus::redis::alerts::AlertRelay;
use marketmux_core::Tick;
use marketmux_kafka::{ConsumerStats, KafkaConfig, KafkaError, StartFrom, TickBatch, TickConsumer};
use marketmux_metrics::exporter::RoleSeries;
use marketmux_metrics::{counters, gauge};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::{AlertsArgs, StartFromArg};
use crate::conventional::{DATABASE_URL, REDIS_URL};
use crate::node::Node;

/// Starts the alerts role; it runs until its [`Node::shutdown`] is cancelled.
pub async fn start(args: AlertsArgs) -> anyhow::Result<Node> {
    run(args).instrument(super::role_span("alerts")).await
}

async fn run(args: AlertsArgs) -> anyhow::Result<Node> {
    let url = DATABASE_URL.require(args.database_url.as_deref(), "alerts")?;
    let store = Arc::new(
        PgAlertStore::connect(&url)
            .await
            .context("alerts: connecting to PostgreSQL and running migrations")?,
    );
    let shutdown = CancellationToken::new();
    let sink = fired_alert_sink(&args, shutdown.clone()).await?;
    let evaluator = Evaluator::new(store.clone(), sink);
    let loaded = evaluator
        .reload()
        .await
        .context("alerts: loading the active alerts")?;
    let service: Arc<dyn AlertService> = LocalAlertService::with_cap(
        store.clone(),
        Some(evaluator.clone()),
        args.max_alerts_per_user,
    );

    let brokers = args.kafka.brokers("alerts")?;
    let config = KafkaConfig::new(brokers.clone()).with_topic(args.kafka.topic.clone());
    let start_from = match args.start_from {
        StartFromArg::Earliest => StartFrom::Earliest,
        StartFromArg::Latest => StartFrom::Latest,
    };
    let consumer = TickConsumer::new(&config, &args.group, start_from)
        .with_context(|| format!("alerts: Kafka consumer group {}", args.group))?;

    let listener = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("alerts: cannot listen on {}", args.grpc_listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %brokers, group = %args.group, active = loaded, "Alerts role ready (gRPC)");

    let reload_every =
        Duration::try_from_secs_f64(args.reload_secs.max(0.5)).unwrap_or(Duration::from_secs(5));
    let series = alerts_series(evaluator.clone(), consumer.stats().clone());
    let metrics_addr = super::serve_metrics(&args.metrics, series, shutdown.clone()).await?;
    // Other instances' creates and deletes, applied as they commit.
    let store_dyn: Arc<dyn AlertStore> = store.clone();
    follow::spawn(store_dyn, evaluator.clone(), shutdown.clone());
    let eval_task = tokio::spawn(
        evaluator
            .run(KafkaFeed(consumer), Some(reload_every), shutdown.clone())
            .in_current_span(),
    );
    let stop = shutdown.clone();
    let task = tokio::spawn(
        async move {
            let served = grpc::serve(listener, service, stop.clone()).await;
            stop.cancel();
            let _ = eval_task.await;
            served.context("alerts: gRPC server")
        }
        .in_current_span(),
    );
    Ok(Node {
        addr: Some(addr),
        metrics_addr,
        shutdown,
        task,
    })
}

/// The evaluator's counters on `/metrics`.
pub(super) fn alerts_series(evaluator: Arc<Evaluator>, consumer: Arc<ConsumerStats>) -> RoleSeries {
    Arc::new(move |out: &mut String| {
        let s = &evaluator.stats;
        let series = [
            (
                "marketmux_alerts_ticks_total",
                "Ticks evaluated.",
                s.ticks.load(Relaxed),
            ),
            (
                "marketmux_alerts_fired_total",
                "Alerts this instance fired.",
                s.fired.load(Relaxed),
            ),
            (
                "marketmux_alerts_lost_races_total",
                "Crossings another instance (or a delete) got to first.",
                s.lost_races.load(Relaxed),
            ),
            (
                "marketmux_alerts_store_errors_total",
                "Fire attempts that failed on a store error (kept pending).",
                s.store_errors.load(Relaxed),
            ),
            (
                "marketmux_alerts_failed_commits_total",
                "Offset commits the broker refused.",
                consumer.failed_commits.load(Relaxed),
            ),
        ];
        counters(out, &series);
        gauge(
            out,
            "marketmux_alerts_pending_fires",
            "Fires waiting for the store.",
            evaluator.pending_len(),
        );
        gauge(
            out,
            "marketmux_alerts_indexed",
            "Active alerts this instance evaluates ticks against.",
            evaluator.len(),
        );
    })
}

/// The `market_ticks` consumer group as the evaluator's feed: a batch is
/// committed once every fire it caused is stored, so a crash during a store
/// outage replays the crossing ticks instead of losing the fire. Offsets read
/// while fires are pending are held (only the furthest of each partition) and
/// committed together once the store has taken them.
struct KafkaFeed(TickConsumer);

impl TickFeed for KafkaFeed {
    type Batch = TickBatch;
    type Error = KafkaError;

    const HOLDS_UNSETTLED: bool = true;

    async fn next_batch(&mut self) -> Option<Result<TickBatch, KafkaError>> {
        Some(self.0.next_batch().await)
    }

    fn ticks(batch: &TickBatch) -> impl Iterator<Item = &Tick> {
        batch.ticks.iter().map(|t| &t.tick)
    }

    fn absorb(held: &mut TickBatch, later: TickBatch) {
        held.absorb(later);
    }

    fn settled(&mut self, batch: TickBatch) {
        if let Err(e) = self.0.commit(&batch) {
            tracing::warn!(error = %e, "Offset commit failed; the batch may be evaluated again");
        }
    }
}

/// Where fired alerts go: published on Redis for every gateway's sockets when
/// `--redis-url` (or REDIS_ADDR) is set ([`relay::spawn`], until `shutdown`),
/// else only logged.
async fn fired_alert_sink(
    args: &AlertsArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<AlertSink> {
    let url = REDIS_URL.resolve(args.redis_url.as_deref());
    let Some(url) = url else {
        tracing::warn!("No --redis-url: fired alerts are stored but not pushed to gateway sockets");
        return Ok(Arc::new(|fired: &FiredAlert| {
            tracing::info!(alert = %fired.to_json(), "Alert fired");
        }));
    };
    let config = marketmux_bus::RedisConfig {
        url,
        prefix: args.redis_prefix.clone(),
        ..marketmux_bus::RedisConfig::default()
    };
    let redis = AlertRelay::connect(&config)
        .await
        .with_context(|| format!("alerts: Redis at {}", config.redacted_url()))?;
    Ok(relay::spawn(redis, shutdown))
}
