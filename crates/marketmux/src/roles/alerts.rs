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
//!   published on Redis for the gateways' sockets. Publishing runs behind a
//!   bounded queue in its own task: a failed publish is retried with capped
//!   exponential backoff until it succeeds or the role stops, while ticks keep
//!   being evaluated.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_alerts::{follow, grpc};
use marketmux_alerts::{
    AlertService, AlertSink, AlertStore, Evaluator, FiredAlert, LocalAlertService, PgAlertStore,
};
use marketmux_bus::redis::alerts::AlertRelay;
use marketmux_bus::BusError;
use marketmux_core::{Backoff, Jitter};
use marketmux_gateway::exporter::RoleSeries;
use marketmux_gateway::metrics::{counters, metric};
use marketmux_kafka::{ConsumerStats, KafkaConfig, StartFrom, TickConsumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{AlertsArgs, StartFromArg};
use crate::conventional::{DATABASE_URL, REDIS_URL};
use crate::node::Node;

/// Starts the alerts role; it runs until its [`Node::shutdown`] is cancelled.
pub async fn start(args: AlertsArgs) -> anyhow::Result<Node> {
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
        metrics_addr,
        shutdown,
        task,
    })
}

/// The evaluator's counters on `/metrics`.
fn alerts_series(evaluator: Arc<Evaluator>, consumer: Arc<ConsumerStats>) -> RoleSeries {
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
        metric(
            out,
            "gauge",
            "marketmux_alerts_pending_fires",
            "Fires waiting for the store.",
            evaluator.pending_len(),
        );
        metric(
            out,
            "gauge",
            "marketmux_alerts_indexed",
            "Active alerts this instance evaluates ticks against.",
            evaluator.len(),
        );
    })
}

/// Reads tick batches, evaluates them, retries pending fires, reloads the
/// index periodically (the safety net behind the change feed), and commits
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

/// Fired alerts waiting to be published. Past this (Redis down for long) new
/// pushes are dropped; those alerts stay fired in the store and listed by
/// `GET /alerts`.
const PUSH_QUEUE: usize = 10_000;

/// Publish retries wait from this long, doubling each time...
const PUSH_RETRY_FIRST: Duration = Duration::from_millis(100);

/// ...up to this long.
const PUSH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Where fired alerts go: published on Redis for every gateway's sockets when
/// `--redis-url` (or REDIS_ADDR) is set, else only logged. Publishing runs in
/// its own task behind a bounded queue, so the evaluator never waits on Redis;
/// the task retries a failed publish until it succeeds or `shutdown`.
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
    let relay = AlertRelay::connect(&config)
        .await
        .with_context(|| format!("alerts: Redis at {}", config.redacted_url()))?;
    let (tx, rx) = mpsc::channel::<Push>(PUSH_QUEUE);
    tokio::spawn(relay_fired(
        relay,
        rx,
        Backoff::new(PUSH_RETRY_FIRST, PUSH_RETRY_MAX, Jitter::None),
        shutdown,
    ));
    Ok(queue_sink(tx))
}

/// One fired alert to publish: (user id, alert JSON object).
type Push = (i64, String);

/// Publishes one fired alert: the Redis relay, or a test double.
trait PushAlert: Send + Sync + 'static {
    /// Publishes `alert_json` for `user_id`'s sockets.
    fn push(
        &self,
        user_id: i64,
        alert_json: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
}

impl PushAlert for AlertRelay {
    async fn push(&self, user_id: i64, alert_json: &str) -> Result<(), BusError> {
        self.publish(user_id, alert_json).await.map(|_listeners| ())
    }
}

/// A sink that queues each fired alert for [`relay_fired`] without blocking.
/// When the queue is full the push is dropped; that is logged once when it
/// starts and once when the queue has room again (with the count dropped).
fn queue_sink(tx: mpsc::Sender<Push>) -> AlertSink {
    // Pushes dropped since the queue was last found with room (0: not full).
    let dropped = AtomicU64::new(0);
    Arc::new(move |fired: &FiredAlert| {
        match tx.try_send((fired.alert.user_id, fired.to_json())) {
            Ok(()) => {
                if dropped.load(Relaxed) > 0 {
                    let dropped = dropped.swap(0, Relaxed);
                    if dropped > 0 {
                        tracing::info!(dropped, "Fired-alert push queue has room again");
                    }
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if dropped.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(
                        capacity = PUSH_QUEUE,
                        alert_id = fired.alert.id,
                        "Fired-alert push queue is full: dropping pushes until it drains \
                         (the alerts stay fired in the store)"
                    );
                }
            }
            // The relay task ended: the role is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    })
}

/// Publishes queued fired alerts in order. A failed publish is retried after
/// `backoff` (doubling, capped) until it succeeds or `shutdown`; Redis going
/// down and coming back are each logged once, not per retry.
async fn relay_fired<P: PushAlert>(
    pusher: P,
    mut rx: mpsc::Receiver<Push>,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut down = false;
    let unpushed = loop {
        let (user, alert) = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break 0,
            },
            _ = shutdown.cancelled() => break rx.len(),
        };
        backoff.reset();
        let delivered = loop {
            let res = tokio::select! {
                r = pusher.push(user, &alert) => r,
                _ = shutdown.cancelled() => break false,
            };
            match res {
                Ok(()) => break true,
                Err(e) => {
                    if !down {
                        down = true;
                        tracing::warn!(
                            error = %e,
                            user,
                            "Publishing fired alerts to the gateways failed; retrying with backoff"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.cancelled() => break false,
                    }
                }
            }
        };
        if !delivered {
            // Shut down mid-retry: this alert and the queued ones stay unpushed.
            break 1 + rx.len();
        }
        if down {
            down = false;
            tracing::info!(queued = rx.len(), "Publishing fired alerts works again");
        }
    };
    if unpushed > 0 {
        tracing::warn!(
            unpushed,
            "Stopping with fired alerts not pushed to the gateways (they stay fired in the store)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use marketmux_alerts::{Alert, Condition};
    use marketmux_core::Symbol;
    use parking_lot::Mutex;

    use super::*;

    /// Fails its first `fail_first` calls, then records what it published.
    #[derive(Clone, Default)]
    struct FlakyPusher {
        fail_first: usize,
        calls: Arc<AtomicUsize>,
        published: Arc<Mutex<Vec<Push>>>,
    }

    impl PushAlert for FlakyPusher {
        async fn push(&self, user_id: i64, alert_json: &str) -> Result<(), BusError> {
            if self.calls.fetch_add(1, Relaxed) < self.fail_first {
                return Err(BusError::Unavailable("redis down (test)".into()));
            }
            self.published.lock().push((user_id, alert_json.to_owned()));
            Ok(())
        }
    }

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(4), Jitter::None)
    }

    fn fired(id: i64) -> FiredAlert {
        FiredAlert {
            alert: Alert {
                id,
                user_id: 7,
                symbol: Symbol::new("AAPL").unwrap(),
                condition: Condition::Above,
                target_price: 1.0,
                active: false,
                created_at: Default::default(),
                triggered_at: None,
                triggered_price: Some(1.5),
            },
        }
    }

    #[tokio::test]
    async fn failed_publishes_are_retried_until_delivered_in_order() {
        let pusher = FlakyPusher {
            fail_first: 5,
            ..FlakyPusher::default()
        };
        let (tx, rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay_fired(pusher.clone(), rx, fast(), shutdown.clone()));
        let sink = queue_sink(tx);
        for id in 1..=3 {
            sink(&fired(id));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while pusher.published.lock().len() < 3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("all pushes delivered once the publisher recovers");
        let got: Vec<String> = pusher
            .published
            .lock()
            .iter()
            .map(|(_, a)| a.clone())
            .collect();
        let want: Vec<String> = (1..=3).map(|id| fired(id).to_json()).collect();
        assert_eq!(got, want);
        assert_eq!(pusher.calls.load(Relaxed), 5 + 3);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_retrying_and_a_full_queue_never_blocks_the_sink() {
        let pusher = FlakyPusher {
            fail_first: usize::MAX,
            ..FlakyPusher::default()
        };
        let (tx, rx) = mpsc::channel(2);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay_fired(pusher.clone(), rx, fast(), shutdown.clone()));
        let sink = queue_sink(tx);
        // One in flight, two queued, the rest dropped without blocking.
        for id in 1..=50 {
            sink(&fired(id));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(pusher.calls.load(Relaxed) > 1, "the head alert is retried");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay stops at shutdown")
            .unwrap();
        assert!(pusher.published.lock().is_empty());
        sink(&fired(51)); // closed queue: ignored
    }
}
