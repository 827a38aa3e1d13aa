//! `marketmux alerts`: alert evaluation and the alert API.
//!
//! - Input: a Kafka consumer group on `market_ticks` (several instances with
//!   the same `--group` share the partitions; ticks are keyed by symbol, so
//!   each symbol is evaluated by one instance at a time).
//! - Store: PostgreSQL (`--database-url` or DATABASE_URL), migrated at start.
//! - API: gRPC on `--grpc-listen` (`proto/alert.proto`), which gateways
//!   started with `--alerts-url` serve as REST.
//! - Firing is exactly once through the store's conditional update. Offsets
//!   are committed only while no fire is pending, so a crash during a
//!   database outage replays the crossing ticks instead of losing the fire.
//! - Fired alerts are logged (`Alert fired`); pushing them to gateways'
//!   sockets through Redis needs a gateway-side subscriber (not in this build).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_alerts::grpc;
use marketmux_alerts::{
    AlertService, AlertSink, Evaluator, FiredAlert, LocalAlertService, PgAlertStore,
};
use marketmux_kafka::{KafkaConfig, StartFrom, TickConsumer};
use tokio_util::sync::CancellationToken;

use crate::cli::{AlertsArgs, StartFromArg};
use crate::node::Node;

/// Starts the alerts role; it runs until its [`Node::shutdown`] is cancelled.
pub async fn start(args: AlertsArgs) -> anyhow::Result<Node> {
    let url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| !u.trim().is_empty())
        .context("the alerts role needs --database-url (or DATABASE_URL), e.g. postgres://postgres@127.0.0.1:5432/marketmux")?;
    let store = Arc::new(
        PgAlertStore::connect(&url)
            .await
            .context("alerts: connecting to PostgreSQL and running migrations")?,
    );
    let sink = fired_alert_sink(&args).await?;
    let evaluator = Evaluator::new(store.clone(), sink);
    let loaded = evaluator
        .reload()
        .await
        .context("alerts: loading the active alerts")?;
    let service: Arc<dyn AlertService> =
        LocalAlertService::new(store.clone(), Some(evaluator.clone()));

    let brokers = args.kafka.brokers()?;
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

    let shutdown = CancellationToken::new();
    let reload_every =
        Duration::try_from_secs_f64(args.reload_secs.max(0.5)).unwrap_or(Duration::from_secs(5));
    let eval_task = tokio::spawn(consume(consumer, evaluator, reload_every, shutdown.clone()));
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = grpc::serve(listener, service, stop.clone()).await;
        stop.cancel();
        let _ = eval_task.await;
        served.context("alerts: gRPC server")
    });
    Ok(Node {
        addr: Some(addr),
        shutdown,
        task,
    })
}

/// Reads tick batches, evaluates them, retries pending fires, reloads the
/// index periodically (alerts created through other instances), and commits
/// a batch only when no fire is pending.
async fn consume(
    consumer: TickConsumer,
    evaluator: Arc<Evaluator>,
    reload_every: Duration,
    shutdown: CancellationToken,
) {
    let mut reload = tokio::time::interval(reload_every);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reload.tick().await;
    loop {
        let batch = tokio::select! {
            b = consumer.next_batch() => b,
            _ = reload.tick() => {
                if let Err(e) = evaluator.reload().await {
                    tracing::warn!(error = %e, "Alert index reload failed; keeping the current one");
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka read failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if evaluator.pending_len() > 0 {
            evaluator.retry_pending().await;
        }
        for t in &batch.ticks {
            evaluator.on_tick(&t.tick).await;
        }
        if evaluator.pending_len() == 0 {
            if let Err(e) = consumer.commit(&batch) {
                tracing::warn!(error = %e, "Offset commit failed; the batch may be evaluated again");
            }
        } else {
            // Uncommitted: a restart replays these ticks; the store's
            // conditional update keeps the replay from firing anything twice.
            tracing::warn!(
                pending = evaluator.pending_len(),
                "Alert store unavailable; holding offsets until pending fires are stored"
            );
            tokio::time::sleep(marketmux_alerts::evaluator::RETRY_EVERY).await;
        }
    }
}

/// Where fired alerts go: published on Redis for every gateway's sockets when
/// `--redis-url` (or REDIS_ADDR) is set, else only logged. Publishing runs in
/// its own task so the evaluator never waits on Redis.
async fn fired_alert_sink(args: &AlertsArgs) -> anyhow::Result<AlertSink> {
    let url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("REDIS_ADDR").ok())
        .filter(|u| !u.trim().is_empty());
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
    let relay = marketmux_bus::redis::alerts::AlertRelay::connect(&config)
        .await
        .with_context(|| format!("alerts: Redis at {}", config.redacted_url()))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, String)>();
    tokio::spawn(async move {
        while let Some((user, alert)) = rx.recv().await {
            if let Err(e) = relay.publish(user, &alert).await {
                tracing::warn!(error = %e, user, "Publishing a fired alert to the gateways failed");
            }
        }
    });
    Ok(Arc::new(move |fired: &FiredAlert| {
        let _ = tx.send((fired.alert.user_id, fired.to_json()));
    }))
}
