//! [`Evaluator`]: checks ticks against the [`AlertIndex`] and fires through the
//! store, exactly once.
//!
//! A tick takes the alerts it crosses out of the index (O(log n + fired)) and
//! calls [`AlertStore::fire`] for each. Only when the store answers `true`
//! (this caller flipped the row) is the alert handed to the sink, so several
//! evaluators on one database, replays and restarts never fire twice. When the
//! store fails, the fire is kept pending (not dropped) and retried by
//! [`Evaluator::retry_pending`] until the store answers.
//!
//! A reload reads the store without holding the index, so the index keeps
//! changing meanwhile (creates, deletes, fires). Those changes are journaled
//! while a reload is in flight and replayed onto its snapshot before the swap,
//! so an alert tracked during a reload is never lost from the index.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marketmux_core::{Backoff, Jitter, Tick};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::feed::TickFeed;
use crate::index::AlertIndex;
use crate::model::{timestamp_to_utc, Alert, FiredAlert};
use crate::store::{AlertStore, StoreError};

/// Receives each alert this evaluator fired (e.g. pushes it to the user's
/// sockets). Called once per alert; must not block.
pub type AlertSink = Arc<dyn Fn(&FiredAlert) + Send + Sync>;

/// How often fires that failed on a store error are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A failed feed read is retried after this long, doubling...
const READ_RETRY_FIRST: Duration = Duration::from_millis(500);
/// ...up to this long.
const READ_RETRY_MAX: Duration = Duration::from_secs(5);

/// A crossing the store has not confirmed yet.
struct PendingFire {
    alert: Alert,
    price: f64,
    at: DateTime<Utc>,
}

/// An index change made while a reload was reading the store.
enum Change {
    /// [`Evaluator::track`]: (re)insert this alert.
    Track(Alert),
    /// [`Evaluator::forget`], or taken by a tick: drop this id.
    Remove(i64),
}

/// The index and what reloads need to keep it consistent. One mutex, so a
/// change is either in the index before a reload's swap (and journaled) or
/// made on the swapped-in index.
#[derive(Default)]
struct Live {
    index: AlertIndex,
    /// Reloads between their `load_active` call and their end.
    reloading: usize,
    /// Changes made while `reloading > 0`; `journal[0]` has sequence number `base`.
    journal: Vec<Change>,
    base: u64,
    /// Sequence number at which the snapshot now in `index` was read; an
    /// older, slower reload does not replace it.
    snapshot_seq: u64,
}

impl Live {
    /// Sequence number of the next change.
    fn next_seq(&self) -> u64 {
        self.base + self.journal.len() as u64
    }

    fn record(&mut self, change: impl FnOnce() -> Change) {
        if self.reloading > 0 {
            self.journal.push(change());
        }
    }
}

/// Ends a reload's journaling however the reload ends (done, failed, dropped).
struct ReloadGuard<'a>(&'a Mutex<Live>);

impl Drop for ReloadGuard<'_> {
    fn drop(&mut self) {
        let mut live = self.0.lock();
        live.reloading -= 1;
        if live.reloading == 0 {
            live.base = live.next_seq();
            live.journal.clear();
        }
    }
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
    live: Mutex<Live>,
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
            live: Mutex::new(Live::default()),
            pending: Mutex::new(BTreeMap::new()),
            sink,
            stats: EvaluatorStats::default(),
        })
    }

    /// Rebuilds the index from the store's active alerts (skipping those with
    /// a pending fire). Returns the number indexed.
    ///
    /// Alerts tracked, forgotten or fired while the store is being read are
    /// replayed onto the snapshot before it replaces the index, so none is
    /// lost or resurrected by the swap.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let start = {
            let mut live = self.live.lock();
            live.reloading += 1;
            live.next_seq()
        };
        let _journaling = ReloadGuard(&self.live);
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
        let mut live = self.live.lock();
        if start < live.snapshot_seq {
            // A reload that read the store later already swapped its snapshot in.
            return Ok(live.index.len());
        }
        // `base <= start`: the journal is only cleared when no reload is in flight.
        let from = usize::try_from(start - live.base).unwrap_or(usize::MAX);
        for change in live.journal.iter().skip(from) {
            match change {
                Change::Track(a) => fresh.insert(a.clone()),
                Change::Remove(id) => {
                    fresh.remove(*id);
                }
            }
        }
        let n = fresh.len();
        live.index = fresh;
        live.snapshot_seq = start;
        Ok(n)
    }

    /// Starts watching an active alert (created, or read again). An alert
    /// whose fire is pending stays out of the index: the retry fires it.
    pub fn track(&self, alert: Alert) {
        if self.pending.lock().contains_key(&alert.id) {
            return;
        }
        let mut live = self.live.lock();
        live.record(|| Change::Track(alert.clone()));
        live.index.insert(alert);
    }

    /// Stops watching a deleted alert.
    pub fn forget(&self, id: i64) {
        {
            let mut live = self.live.lock();
            live.record(|| Change::Remove(id));
            live.index.remove(id);
        }
        self.pending.lock().remove(&id);
    }

    /// Alerts indexed.
    pub fn len(&self) -> usize {
        self.live.lock().index.len()
    }

    /// Whether no alert is indexed.
    pub fn is_empty(&self) -> bool {
        self.live.lock().index.is_empty()
    }

    /// Fires waiting for the store.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Evaluates one tick; returns how many alerts it fired.
    pub async fn on_tick(&self, tick: &Tick) -> usize {
        self.stats.ticks.fetch_add(1, Relaxed);
        let crossed = {
            let mut live = self.live.lock();
            let crossed = live.index.take_crossed(&tick.symbol, tick.price);
            // Keep an in-flight reload from putting them back: O(fired).
            for a in &crossed {
                live.record(|| Change::Remove(a.id));
            }
            crossed
        };
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

    /// The evaluation loop: evaluates every batch of `feed`, retries pending
    /// fires every [`RETRY_EVERY`], and optionally reloads the index every
    /// `reload_every` (the safety net behind the change feed). A batch is
    /// settled with the feed once no fire is pending; a feed that holds
    /// unsettled batches is read at most once per retry while fires are
    /// pending, and its every batch first retries them. A failed read is retried with backoff. Ends at `shutdown`
    /// (or when the feed ends); fires still pending then stay active in the
    /// store and fire on the next crossing after a restart.
    pub async fn run<F: TickFeed>(
        self: Arc<Self>,
        mut feed: F,
        reload_every: Option<Duration>,
        shutdown: CancellationToken,
    ) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload =
            tokio::time::interval(reload_every.unwrap_or(Duration::from_secs(86_400 * 365)));
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.tick().await;
        let mut read_retry = Backoff::new(READ_RETRY_FIRST, READ_RETRY_MAX, Jitter::None);
        // The feed waits for the next retry: fires are pending and it holds unsettled batches.
        let mut paused = false;
        loop {
            tokio::select! {
                batch = feed.next_batch(), if !paused => match batch {
                    None => return,
                    Some(Err(e)) => {
                        let wait = read_retry.next_delay();
                        tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "Tick feed read failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Some(Ok(batch)) => {
                        read_retry.reset();
                        if F::HOLDS_UNSETTLED && self.pending_len() > 0 {
                            // The store may be back: settle this batch if it can be.
                            self.retry_pending().await;
                        }
                        for tick in F::ticks(&batch) {
                            self.on_tick(tick).await;
                        }
                        let pending = self.pending_len();
                        if pending == 0 {
                            feed.settled(batch);
                        } else if F::HOLDS_UNSETTLED {
                            // Unsettled: a restart replays these ticks; the store's
                            // conditional update keeps the replay from firing anything twice.
                            tracing::warn!(pending, "Alert store unavailable; holding the feed's position until pending fires are stored");
                            paused = true;
                        }
                    }
                },
                _ = retry.tick() => {
                    paused = false;
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

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use marketmux_core::{Symbol, Timestamp};
    use tokio::sync::oneshot;

    use super::*;
    use crate::model::{Condition, NewAlert};
    use crate::page::{AlertPage, ListQuery};

    /// A held `load_active`: tells the test it has read the alerts, then
    /// waits for the test to let it return.
    struct Gate {
        read: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    /// An in-memory store whose next `load_active` can be held open.
    #[derive(Default)]
    struct MemStore {
        alerts: Mutex<Vec<Alert>>,
        gate: Mutex<Option<Gate>>,
        /// `fire` fails (the database is down) while set.
        fail_fires: std::sync::atomic::AtomicBool,
    }

    impl MemStore {
        /// Holds the next `load_active` after it read; returns (read, release).
        fn hold_next_load(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (read_tx, read_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel();
            *self.gate.lock() = Some(Gate {
                read: read_tx,
                release: release_rx,
            });
            (read_rx, release_tx)
        }
    }

    #[async_trait]
    impl AlertStore for MemStore {
        async fn create(&self, new: &NewAlert, _max_active: u32) -> Result<Alert, StoreError> {
            let mut alerts = self.alerts.lock();
            let alert = Alert {
                id: alerts.len() as i64 + 1,
                user_id: new.user_id,
                symbol: new.symbol,
                condition: new.condition,
                target_price: new.target_price,
                active: true,
                created_at: Utc::now(),
                triggered_at: None,
                triggered_price: None,
            };
            alerts.push(alert.clone());
            Ok(alert)
        }

        async fn list(&self, user_id: i64, query: &ListQuery) -> Result<AlertPage, StoreError> {
            let rows = self
                .alerts
                .lock()
                .iter()
                .filter(|a| a.user_id == user_id && (a.active || !query.active_only))
                .filter(|a| a.id > query.after())
                .take(query.fetch_rows() as usize)
                .cloned()
                .collect();
            Ok(AlertPage::from_rows(rows, query))
        }

        async fn get(&self, id: i64) -> Result<Option<Alert>, StoreError> {
            Ok(self.alerts.lock().iter().find(|a| a.id == id).cloned())
        }

        async fn delete(&self, id: i64, _user_id: Option<i64>) -> Result<bool, StoreError> {
            let mut alerts = self.alerts.lock();
            let before = alerts.len();
            alerts.retain(|a| a.id != id);
            Ok(alerts.len() < before)
        }

        async fn load_active(&self) -> Result<Vec<Alert>, StoreError> {
            let snapshot: Vec<Alert> = self
                .alerts
                .lock()
                .iter()
                .filter(|a| a.active)
                .cloned()
                .collect();
            let gate = self.gate.lock().take();
            if let Some(g) = gate {
                let _ = g.read.send(());
                let _ = g.release.await;
            }
            Ok(snapshot)
        }

        async fn fire(&self, id: i64, price: f64, at: DateTime<Utc>) -> Result<bool, StoreError> {
            if self.fail_fires.load(Relaxed) {
                return Err(StoreError::Unavailable("database down (test)".into()));
            }
            let mut alerts = self.alerts.lock();
            match alerts.iter_mut().find(|a| a.id == id && a.active) {
                Some(a) => {
                    a.active = false;
                    a.triggered_at = Some(at);
                    a.triggered_price = Some(price);
                    Ok(true)
                }
                None => Ok(false),
            }
        }

        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    impl MemStore {
        async fn create_unbounded(&self, new: &NewAlert) -> Result<Alert, StoreError> {
            self.create(new, u32::MAX).await
        }
    }

    fn new_alert(sym: &str, condition: Condition, target_price: f64) -> NewAlert {
        NewAlert {
            user_id: 7,
            symbol: Symbol::new(sym).unwrap(),
            condition,
            target_price,
        }
    }

    fn tick(sym: &str, price: f64) -> Tick {
        Tick::new(Symbol::new(sym).unwrap(), price, Timestamp::now(), None).unwrap()
    }

    /// An evaluator over a fresh `MemStore`, and the ids its sink received.
    fn setup() -> (Arc<MemStore>, Arc<Evaluator>, Arc<Mutex<Vec<i64>>>) {
        let store = Arc::new(MemStore::default());
        let fired = Arc::new(Mutex::new(Vec::new()));
        let seen = fired.clone();
        let sink: AlertSink = Arc::new(move |f: &FiredAlert| seen.lock().push(f.alert.id));
        let ev = Evaluator::new(store.clone(), sink);
        (store, ev, fired)
    }

    #[tokio::test]
    async fn alert_tracked_during_a_reload_survives_the_swap_and_fires() {
        let (store, ev, fired) = setup();
        store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        assert_eq!(ev.reload().await.unwrap(), 1);

        let (read, release) = store.hold_next_load();
        let reloading = tokio::spawn({
            let ev = ev.clone();
            async move { ev.reload().await }
        });
        read.await.unwrap();
        // Created and tracked after the snapshot was read, before the swap.
        let created = store
            .create_unbounded(&new_alert("MSFT", Condition::Below, 50.0))
            .await
            .unwrap();
        ev.track(created.clone());
        release.send(()).unwrap();
        assert_eq!(reloading.await.unwrap().unwrap(), 2);
        assert_eq!(ev.len(), 2, "the alert tracked mid-reload is still indexed");

        assert_eq!(ev.on_tick(&tick("MSFT", 49.5)).await, 1);
        assert_eq!(*fired.lock(), vec![created.id]);
        assert_eq!(ev.len(), 1);
    }

    #[tokio::test]
    async fn forget_and_fire_during_a_reload_are_not_undone_by_the_swap() {
        let (store, ev, fired) = setup();
        let gone = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        let hit = store
            .create_unbounded(&new_alert("AAPL", Condition::Below, 90.0))
            .await
            .unwrap();
        assert_eq!(ev.reload().await.unwrap(), 2);

        let (read, release) = store.hold_next_load();
        let reloading = tokio::spawn({
            let ev = ev.clone();
            async move { ev.reload().await }
        });
        read.await.unwrap();
        // Both were active in the snapshot; neither may come back.
        assert!(store.delete(gone.id, None).await.unwrap());
        ev.forget(gone.id);
        assert_eq!(ev.on_tick(&tick("AAPL", 89.0)).await, 1);
        release.send(()).unwrap();
        assert_eq!(reloading.await.unwrap().unwrap(), 0);
        assert!(ev.is_empty());

        assert_eq!(ev.on_tick(&tick("AAPL", 200.0)).await, 0);
        assert_eq!(ev.on_tick(&tick("AAPL", 1.0)).await, 0);
        assert_eq!(*fired.lock(), vec![hit.id]);
        assert_eq!(ev.stats.lost_races.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_slow_reload_does_not_replace_a_newer_snapshot() {
        let (store, ev, _fired) = setup();
        let (read, release) = store.hold_next_load();
        let slow = tokio::spawn({
            let ev = ev.clone();
            async move { ev.reload().await }
        });
        read.await.unwrap();
        let local = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        ev.track(local);
        // Created through another instance: only a reload sees it.
        let remote = store
            .create_unbounded(&new_alert("MSFT", Condition::Above, 10.0))
            .await
            .unwrap();
        assert_eq!(ev.reload().await.unwrap(), 2);
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev.on_tick(&tick("MSFT", 11.0)).await, 1, "{remote:?} kept");
    }

    /// A feed that replays unsettled batches (as Kafka does), fed by the test;
    /// records the first tick price of each batch it was told is settled.
    struct ReplayingFeed {
        batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Tick>>,
        settled: Arc<Mutex<Vec<f64>>>,
    }

    impl TickFeed for ReplayingFeed {
        type Batch = Vec<Tick>;
        type Error = std::convert::Infallible;

        const HOLDS_UNSETTLED: bool = true;

        async fn next_batch(&mut self) -> Option<Result<Vec<Tick>, Self::Error>> {
            self.batches.recv().await.map(Ok)
        }

        fn ticks(batch: &Vec<Tick>) -> impl Iterator<Item = &Tick> {
            batch.iter()
        }

        fn settled(&mut self, batch: Vec<Tick>) {
            self.settled.lock().push(batch[0].price);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_fire_is_pending_is_never_settled_and_the_fire_is_retried() {
        let (store, ev, fired) = setup();
        let alert = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        store.fail_fires.store(true, Relaxed);

        let (tx, batches) = tokio::sync::mpsc::unbounded_channel();
        let settled = Arc::new(Mutex::new(Vec::new()));
        let feed = ReplayingFeed {
            batches,
            settled: settled.clone(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ev.clone().run(feed, None, shutdown.clone()));

        tx.send(vec![tick("AAPL", 101.0)]).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while ev.pending_len() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the crossing was not kept pending"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Several retries while the store is down: nothing is settled.
        tokio::time::sleep(RETRY_EVERY * 3).await;
        assert!(settled.lock().is_empty(), "settled {:?}", settled.lock());
        assert!(fired.lock().is_empty());

        store.fail_fires.store(false, Relaxed);
        tx.send(vec![tick("MSFT", 5.0)]).unwrap();
        while settled.lock().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing settled once the store is back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *fired.lock(),
            vec![alert.id],
            "the pending fire is delivered by a retry"
        );
        // The batch that crossed stays unsettled (a restart would replay it);
        // the next one, evaluated with nothing pending, settles.
        assert_eq!(*settled.lock(), vec![5.0]);
        assert_eq!(ev.pending_len(), 0);
        shutdown.cancel();
        task.await.unwrap();
    }
}
