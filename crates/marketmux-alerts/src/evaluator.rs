//! [`Evaluator`]: checks ticks against the [`AlertIndex`] and fires through the
//! store, exactly once.
//!
//! A tick takes the alerts it crosses out of the index (O(log n + fired)) and
//! calls [`AlertStore::fire`] for each. Only when the store answers `true`
//! (this caller flipped the row) is the alert handed to the sink, so several
//! evaluators on one database, replays and restarts never fire twice. When the
//! store fails, the fire is kept pending (not dropped) and retried by
//! [`Evaluator::retry_pending`] until the store answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marketmux_core::Tick;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::inbox::TickInbox;
use crate::index::AlertIndex;
use crate::model::{timestamp_to_utc, Alert, FiredAlert};
use crate::store::{AlertStore, StoreError};

/// Receives each alert this evaluator fired (e.g. pushes it to the user's
/// sockets). Called once per alert; must not block.
pub type AlertSink = Arc<dyn Fn(&FiredAlert) + Send + Sync>;

/// How often fires that failed on a store error are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A crossing the store has not confirmed yet.
struct PendingFire {
    alert: Alert,
    price: f64,
    at: DateTime<Utc>,
}

/// Counters, read by tests and metrics.
#[derive(Debug, Default)]
pub struct EvaluatorStats {
    /// Ticks evaluated.
    pub ticks: AtomicU64,
    /// Alerts this evaluator fired (store said true).
    pub fired: AtomicU64,
    /// Crossings another evaluator (or a delete) got to first (store said false).
    pub lost_races: AtomicU64,
    /// Fire attempts that failed on a store error (kept pending).
    pub store_errors: AtomicU64,
}

/// The in-memory index of active alerts plus the fires waiting for the store.
pub struct Evaluator {
    store: Arc<dyn AlertStore>,
    index: Mutex<AlertIndex>,
    pending: Mutex<BTreeMap<i64, PendingFire>>,
    sink: AlertSink,
    /// Counters.
    pub stats: EvaluatorStats,
}

impl Evaluator {
    /// An evaluator with an empty index; call [`Evaluator::reload`] to fill it.
    pub fn new(store: Arc<dyn AlertStore>, sink: AlertSink) -> Arc<Self> {
        Arc::new(Self {
            store,
            index: Mutex::new(AlertIndex::new()),
            pending: Mutex::new(BTreeMap::new()),
            sink,
            stats: EvaluatorStats::default(),
        })
    }

    /// Rebuilds the index from the store's active alerts (skipping those with
    /// a pending fire). Returns the number indexed.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let active = self.store.load_active().await?;
        let mut fresh = AlertIndex::new();
        {
            let pending = self.pending.lock();
            for a in active {
                if !pending.contains_key(&a.id) {
                    fresh.insert(a);
                }
            }
        }
        let n = fresh.len();
        *self.index.lock() = fresh;
        Ok(n)
    }

    /// Starts watching a newly created alert.
    pub fn track(&self, alert: Alert) {
        self.index.lock().insert(alert);
    }

    /// Stops watching a deleted alert.
    pub fn forget(&self, id: i64) {
        self.index.lock().remove(id);
        self.pending.lock().remove(&id);
    }

    /// Alerts indexed.
    pub fn len(&self) -> usize {
        self.index.lock().len()
    }

    /// Whether no alert is indexed.
    pub fn is_empty(&self) -> bool {
        self.index.lock().is_empty()
    }

    /// Fires waiting for the store.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Evaluates one tick; returns how many alerts it fired.
    pub async fn on_tick(&self, tick: &Tick) -> usize {
        self.stats.ticks.fetch_add(1, Relaxed);
        let crossed = self.index.lock().take_crossed(&tick.symbol, tick.price);
        if crossed.is_empty() {
            return 0;
        }
        let at = timestamp_to_utc(tick.timestamp);
        let mut fired = 0;
        let mut store_down = false;
        for alert in crossed {
            let pf = PendingFire {
                alert,
                price: tick.price,
                at,
            };
            if store_down {
                // The store just failed: queue the rest without waiting on it again.
                self.keep_pending(pf);
                continue;
            }
            match self.try_fire(pf).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                Err(()) => store_down = true,
            }
        }
        fired
    }

    /// Retries the pending fires in id order, stopping at the first store
    /// error. Returns how many are still pending.
    pub async fn retry_pending(&self) -> usize {
        loop {
            let next = {
                let mut p = self.pending.lock();
                p.pop_first()
            };
            let Some((_, pf)) = next else { return 0 };
            if self.try_fire(pf).await.is_err() {
                return self.pending_len();
            }
        }
    }

    /// One conditional update. `Ok(fired)`, or `Err(())` once kept pending.
    async fn try_fire(&self, pf: PendingFire) -> Result<bool, ()> {
        match self.store.fire(pf.alert.id, pf.price, pf.at).await {
            Ok(true) => {
                self.stats.fired.fetch_add(1, Relaxed);
                let mut alert = pf.alert;
                alert.active = false;
                alert.triggered_at = Some(pf.at);
                alert.triggered_price = Some(pf.price);
                tracing::info!(
                    alert_id = alert.id,
                    user_id = alert.user_id,
                    symbol = alert.symbol.as_str(),
                    price = pf.price,
                    "Alert fired"
                );
                (self.sink)(&FiredAlert { alert });
                Ok(true)
            }
            Ok(false) => {
                self.stats.lost_races.fetch_add(1, Relaxed);
                tracing::debug!(
                    alert_id = pf.alert.id,
                    "Alert already fired or deleted elsewhere"
                );
                Ok(false)
            }
            Err(e) => {
                self.stats.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(alert_id = pf.alert.id, error = %e, "Alert fire failed; kept pending");
                self.keep_pending(pf);
                Err(())
            }
        }
    }

    fn keep_pending(&self, pf: PendingFire) {
        // The first crossing wins: a later one for the same alert is not kept.
        self.pending.lock().entry(pf.alert.id).or_insert(pf);
    }

    /// The evaluation loop: drains `inbox`, retries pending fires every
    /// [`RETRY_EVERY`], and optionally reloads the index every `reload_every`
    /// (to see alerts created through other instances). Ends at `shutdown`;
    /// fires still pending then stay active in the store and fire on the next
    /// crossing after a restart.
    pub async fn run(
        self: Arc<Self>,
        inbox: Arc<TickInbox>,
        reload_every: Option<Duration>,
        shutdown: CancellationToken,
    ) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload =
            tokio::time::interval(reload_every.unwrap_or(Duration::from_secs(86_400 * 365)));
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.tick().await;
        loop {
            tokio::select! {
                _ = inbox.ready() => {
                    for tick in inbox.drain() {
                        self.on_tick(&tick).await;
                    }
                }
                _ = retry.tick() => {
                    if self.pending_len() > 0 {
                        let left = self.retry_pending().await;
                        if left == 0 {
                            tracing::info!("Pending alert fires delivered; store is back");
                        }
                    }
                }
                _ = reload.tick(), if reload_every.is_some() => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "Alert index reload failed; keeping the current one");
                    }
                }
                _ = shutdown.cancelled() => {
                    let pending = self.pending_len();
                    if pending > 0 {
                        tracing::warn!(pending, "Stopping with unconfirmed alert fires; they stay active in the store");
                    }
                    return;
                }
            }
        }
    }
}
