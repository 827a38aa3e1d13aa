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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
#[derive(Clone)]
struct PendingFire {
    alert: Alert,
    price: f64,
    at: DateTime<Utc>,
    /// An update for it was sent and failed without an answer: the store may
    /// have committed it (a connection lost after the commit, before the
    /// reply). A later "already fired" is then checked against what it stored.
    sent: bool,
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
    /// The last fire attempt failed on a store error: new crossings are
    /// queued as pending at once instead of each waiting for the store to
    /// time out again (the retry, every [`RETRY_EVERY`], probes it).
    store_down: AtomicBool,
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
            store_down: AtomicBool::new(false),
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
        let mut store_down = self.store_down.load(Relaxed);
        for alert in crossed {
            let pf = PendingFire {
                alert,
                price: tick.price,
                at,
                sent: false,
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
    ///
    /// A fire stays in the pending set while it is tried (an attempt may wait
    /// out the store's timeout): it still counts in [`Self::pending_len`],
    /// and a reload meanwhile keeps its alert out of the index.
    pub async fn retry_pending(&self) -> usize {
        loop {
            let next = self
                .pending
                .lock()
                .first_key_value()
                .map(|(_, pf)| pf.clone());
            let Some(pf) = next else { return 0 };
            let id = pf.alert.id;
            if self.try_fire(pf).await.is_err() {
                return self.pending_len();
            }
            self.pending.lock().remove(&id);
        }
    }

    /// One conditional update. `Ok(fired)`, or `Err(())` once kept pending.
    async fn try_fire(&self, mut pf: PendingFire) -> Result<bool, ()> {
        let fired = match self.store.fire(pf.alert.id, pf.price, pf.at).await {
            Ok(false) if pf.sent => self.committed_before(&pf).await,
            other => other,
        };
        self.store_down.store(fired.is_err(), Relaxed);
        match fired {
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
                pf.sent = true;
                self.keep_pending(pf);
                Err(())
            }
        }
    }

    /// Whether an earlier, unanswered update of `pf` is what the store holds:
    /// fired at exactly this crossing's price and time (microseconds, as
    /// stored). Then that update committed, nobody was told, and this
    /// evaluator still owes the push; otherwise another instance or a delete
    /// got there first.
    async fn committed_before(&self, pf: &PendingFire) -> Result<bool, StoreError> {
        let stored = self.store.get(pf.alert.id).await?;
        Ok(stored.is_some_and(|a| {
            !a.active && a.triggered_price == Some(pf.price) && a.triggered_at == Some(pf.at)
        }))
    }

    fn keep_pending(&self, pf: PendingFire) {
        // The first crossing wins: a later one for the same alert is not kept.
        // An alert whose fire is pending is out of the index, so the entry
        // found is this same crossing, retried: it keeps the `sent` mark.
        let sent = pf.sent;
        self.pending
            .lock()
            .entry(pf.alert.id)
            .and_modify(|kept| kept.sent |= sent)
            .or_insert(pf);
    }

    /// The evaluation loop: evaluates every batch of `feed`, retries pending
    /// fires [`RETRY_EVERY`] after the last retry ended (whether or not ticks
    /// arrive), and optionally reloads the index every `reload_every` (the
    /// safety net behind the change feed). A batch is settled with the feed
    /// once no fire is pending. While fires are pending the feed keeps being
    /// read and evaluated without waiting on the store (its crossings join
    /// the pending set), and what is read meanwhile is held
    /// ([`TickFeed::absorb`]: only what settling needs) and settled as soon
    /// as a retry has stored every pending fire, even if no other batch
    /// arrives. A failed read is retried with backoff. Ends at `shutdown` (or
    /// when the feed ends); fires still pending then stay active in the
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
        // Batches evaluated while fires were pending, folded into one (only
        // what settling needs): settled once the store has taken every fire.
        let mut held: Option<F::Batch> = None;
        loop {
            tokio::select! {
                batch = feed.next_batch() => match batch {
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
                        // While the store is down a crossing joins the pending
                        // set at once, so an outage never slows the feed.
                        for tick in F::ticks(&batch) {
                            self.on_tick(tick).await;
                        }
                        let holding = held.is_some();
                        let batch = match held.take() {
                            Some(mut h) => {
                                F::absorb(&mut h, batch);
                                h
                            }
                            None => batch,
                        };
                        let pending = self.pending_len();
                        if pending == 0 {
                            feed.settled(batch);
                        } else if F::HOLDS_UNSETTLED {
                            // Unsettled: a restart replays these ticks; the store's
                            // conditional update keeps the replay from firing anything twice.
                            if !holding {
                                tracing::warn!(pending, "Alert store unavailable; holding the feed's position until pending fires are stored");
                            }
                            let mut h = F::Batch::default();
                            F::absorb(&mut h, batch);
                            held = Some(h);
                        }
                    }
                },
                _ = retry.tick() => {
                    if self.pending_len() > 0 && self.retry_pending().await == 0 {
                        tracing::info!("Pending alert fires delivered; store is back");
                    }
                    // A retry against a store that is down waits out its
                    // timeout: the next one comes a full period after this
                    // one ended, so batches are read in between.
                    retry.reset();
                    // Only this loop adds pending fires: none is pending now,
                    // so what was held may be settled without waiting for a
                    // batch (a quiet feed may not bring one for long).
                    if self.pending_len() == 0 {
                        if let Some(h) = held.take() {
                            feed.settled(h);
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
                    } else if let Some(h) = held.take() {
                        feed.settled(h);
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
    use marketmux_test_support::eventually;
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
        /// The next this many `fire`s commit, then fail as a connection
        /// lost before the reply would.
        lose_replies: Mutex<usize>,
        /// The next this many calls (`fire`, `get`) fail before doing anything.
        down_for: Mutex<usize>,
        /// Every call (`fire`, `get`) fails while set: the database is down.
        down: std::sync::atomic::AtomicBool,
        /// Holds the next `fire` before it runs (a store that is slow to fail).
        fire_gate: Mutex<Option<Gate>>,
        /// While `down`, each `fire` takes this long to fail (a pool waiting
        /// out its acquire timeout against a stopped database).
        slow_failure: Mutex<Option<Duration>>,
    }

    impl MemStore {
        /// Fails a call while the store is `down` or `down_for` lasts.
        fn check_up(&self) -> Result<(), StoreError> {
            if self.down.load(Relaxed) {
                return Err(StoreError::Unavailable("database down (test)".into()));
            }
            let mut down = self.down_for.lock();
            if *down > 0 {
                *down -= 1;
                return Err(StoreError::Unavailable("connection refused (test)".into()));
            }
            Ok(())
        }
    }

    impl MemStore {
        /// Holds the next `fire` until released; returns (started, release).
        fn hold_next_fire(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (started_tx, started_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel();
            *self.fire_gate.lock() = Some(Gate {
                read: started_tx,
                release: release_rx,
            });
            (started_rx, release_tx)
        }

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
            self.check_up()?;
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
            let gate = self.fire_gate.lock().take();
            if let Some(g) = gate {
                let _ = g.read.send(());
                let _ = g.release.await;
            }
            let slow = *self.slow_failure.lock();
            if let Some(wait) = slow.filter(|_| self.down.load(Relaxed)) {
                tokio::time::sleep(wait).await;
            }
            self.check_up()?;
            let fired = {
                let mut alerts = self.alerts.lock();
                match alerts.iter_mut().find(|a| a.id == id && a.active) {
                    Some(a) => {
                        a.active = false;
                        a.triggered_at = Some(at);
                        a.triggered_price = Some(price);
                        true
                    }
                    None => false,
                }
            };
            let mut lose = self.lose_replies.lock();
            if *lose > 0 {
                *lose -= 1;
                return Err(StoreError::Unavailable(
                    "connection lost after commit (test)".into(),
                ));
            }
            Ok(fired)
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

    #[tokio::test]
    async fn a_fire_committed_without_a_reply_is_pushed_once_on_retry() {
        let (store, ev, fired) = setup();
        let lost = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        let other = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 101.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        // The first update commits but its reply is lost (a PostgreSQL
        // restart between the commit and the answer); the second is then
        // queued without being sent.
        *store.lose_replies.lock() = 1;
        assert_eq!(ev.on_tick(&tick("AAPL", 102.0)).await, 0);
        assert_eq!(ev.pending_len(), 2, "both wait for the store");
        assert!(fired.lock().is_empty());
        let stored = store.get(lost.id).await.unwrap().unwrap();
        assert!(!stored.active, "the first one is fired in the store");
        // Its retry finds it fired, at this crossing's price and time: the
        // update was its own, and the push is still owed.
        assert_eq!(ev.retry_pending().await, 0);
        assert_eq!(*fired.lock(), vec![lost.id, other.id], "each pushed once");
        assert_eq!(ev.stats.fired.load(Relaxed), 2);
        assert_eq!(ev.stats.lost_races.load(Relaxed), 0);
        // Replays of the crossing push nothing more.
        ev.track(store.get(lost.id).await.unwrap().unwrap());
        assert_eq!(ev.on_tick(&tick("AAPL", 103.0)).await, 0);
        assert_eq!(fired.lock().len(), 2);
    }

    #[tokio::test]
    async fn an_alert_fired_elsewhere_meanwhile_is_not_pushed_by_the_retry() {
        let (store, ev, fired) = setup();
        let alert = store
            .create_unbounded(&new_alert("MSFT", Condition::Below, 50.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        *store.down_for.lock() = 1; // the update never reaches the store
        assert_eq!(ev.on_tick(&tick("MSFT", 49.0)).await, 0);
        assert_eq!(ev.pending_len(), 1);
        // Another instance fires it on another tick while this one waits.
        assert!(store
            .fire(alert.id, 48.0, timestamp_to_utc(Timestamp::now()))
            .await
            .unwrap());
        assert_eq!(ev.retry_pending().await, 0);
        assert!(fired.lock().is_empty(), "the other instance pushed it");
        assert_eq!(ev.stats.lost_races.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn once_the_store_failed_later_crossings_queue_without_waiting_on_it() {
        let (store, ev, fired) = setup();
        let a = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        let m = store
            .create_unbounded(&new_alert("MSFT", Condition::Above, 100.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        *store.down_for.lock() = 1;
        assert_eq!(ev.on_tick(&tick("AAPL", 101.0)).await, 0);
        // The store would answer now, but this crossing is queued without an
        // attempt: while it is down, each attempt waits out a timeout.
        assert_eq!(ev.on_tick(&tick("MSFT", 101.0)).await, 0);
        assert_eq!(ev.pending_len(), 2);
        assert!(store.get(m.id).await.unwrap().unwrap().active);
        // The retry probes the store and stores both.
        assert_eq!(ev.retry_pending().await, 0);
        assert_eq!(*fired.lock(), vec![a.id, m.id]);
        // A success clears the mark: the next crossing is fired at once.
        let late = store
            .create_unbounded(&new_alert("NVDA", Condition::Below, 10.0))
            .await
            .unwrap();
        ev.track(late.clone());
        assert_eq!(ev.on_tick(&tick("NVDA", 9.0)).await, 1);
    }

    #[tokio::test]
    async fn a_fire_being_retried_still_counts_as_pending_and_stays_out_of_the_index() {
        let (store, ev, fired) = setup();
        let a = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        let b = store
            .create_unbounded(&new_alert("MSFT", Condition::Above, 100.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        store.down.store(true, Relaxed);
        assert_eq!(ev.on_tick(&tick("AAPL", 101.0)).await, 0);
        assert_eq!(ev.on_tick(&tick("MSFT", 101.0)).await, 0);
        assert_eq!(ev.pending_len(), 2);
        // The retry's attempt waits on the store (as on a pool timeout).
        let (started, release) = store.hold_next_fire();
        let retry = tokio::spawn({
            let ev = ev.clone();
            async move { ev.retry_pending().await }
        });
        started.await.unwrap();
        assert_eq!(ev.pending_len(), 2, "the fire being tried is still pending");
        // A reload meanwhile (the store answers reads again) must not put
        // the alert being retried back in the index.
        store.down.store(false, Relaxed);
        ev.reload().await.unwrap();
        assert_eq!(ev.len(), 0, "both pending alerts stay out of the index");
        store.down.store(true, Relaxed);
        release.send(()).unwrap();
        assert_eq!(retry.await.unwrap(), 2);
        // Once the store is back, each fires and is pushed once.
        store.down.store(false, Relaxed);
        assert_eq!(ev.retry_pending().await, 0);
        assert_eq!(*fired.lock(), vec![a.id, b.id]);
        assert_eq!(ev.on_tick(&tick("AAPL", 102.0)).await, 0);
        assert_eq!(fired.lock().len(), 2);
    }

    /// A batch of [`ReplayingFeed`]: ticks, and the position after them.
    #[derive(Default)]
    struct Numbered {
        ticks: Vec<Tick>,
        upto: u64,
    }

    /// A feed that replays unsettled batches (as Kafka does), fed by the test;
    /// records the position of each batch it was told is settled.
    struct ReplayingFeed {
        batches: tokio::sync::mpsc::UnboundedReceiver<Numbered>,
        settled: Arc<Mutex<Vec<u64>>>,
    }

    impl TickFeed for ReplayingFeed {
        type Batch = Numbered;
        type Error = std::convert::Infallible;

        const HOLDS_UNSETTLED: bool = true;

        async fn next_batch(&mut self) -> Option<Result<Numbered, Self::Error>> {
            self.batches.recv().await.map(Ok)
        }

        fn ticks(batch: &Numbered) -> impl Iterator<Item = &Tick> {
            batch.ticks.iter()
        }

        fn absorb(held: &mut Numbered, later: Numbered) {
            held.upto = held.upto.max(later.upto);
            held.ticks = Vec::new();
        }

        fn settled(&mut self, batch: Numbered) {
            self.settled.lock().push(batch.upto);
        }
    }

    /// [`Evaluator::run`] on a [`ReplayingFeed`], in a task of its own.
    struct RunningFeed {
        /// Hands the loop its next batch.
        tx: tokio::sync::mpsc::UnboundedSender<Numbered>,
        /// The position of each batch the loop settled, in order.
        settled: Arc<Mutex<Vec<u64>>>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl RunningFeed {
        fn start(ev: &Arc<Evaluator>) -> Self {
            let (tx, batches) = tokio::sync::mpsc::unbounded_channel();
            let settled = Arc::new(Mutex::new(Vec::new()));
            let feed = ReplayingFeed {
                batches,
                settled: settled.clone(),
            };
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(ev.clone().run(feed, None, shutdown.clone()));
            Self {
                tx,
                settled,
                shutdown,
                task,
            }
        }

        /// Hands the loop a batch of one tick, ending at position `upto`.
        fn send(&self, upto: u64, tick: Tick) {
            self.tx
                .send(Numbered {
                    ticks: vec![tick],
                    upto,
                })
                .unwrap();
        }

        /// The positions settled so far.
        fn settled(&self) -> Vec<u64> {
            self.settled.lock().clone()
        }

        /// Stops the loop and waits for it to end.
        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_read_while_a_fire_is_pending_are_settled_once_a_retry_stores_it() {
        let (store, ev, fired) = setup();
        let alert = store
            .create_unbounded(&new_alert("AAPL", Condition::Above, 100.0))
            .await
            .unwrap();
        ev.reload().await.unwrap();
        store.down.store(true, Relaxed);

        let feed = RunningFeed::start(&ev);

        feed.send(1, tick("AAPL", 101.0));
        let within = Duration::from_secs(30);
        eventually("the crossing kept pending", within, || {
            ev.pending_len() == 1
        })
        .await;
        // A later batch is still read and held.
        feed.send(2, tick("MSFT", 5.0));
        eventually("the second batch evaluated", within, || {
            ev.stats.ticks.load(Relaxed) == 2
        })
        .await;
        // Several retries while the store is down: nothing is settled.
        tokio::time::sleep(RETRY_EVERY * 3).await;
        assert!(feed.settled().is_empty(), "settled {:?}", feed.settled());
        assert!(fired.lock().is_empty());

        // The store is back and no tick arrives (a quiet partition): the
        // retry stores the fire and settles everything read meanwhile.
        store.down.store(false, Relaxed);
        eventually("the held batches settled", within, || {
            !feed.settled().is_empty()
        })
        .await;
        assert_eq!(feed.settled(), vec![2], "one settle up to the last batch");
        assert_eq!(
            *fired.lock(),
            vec![alert.id],
            "the pending fire is delivered by a retry"
        );
        assert_eq!(ev.pending_len(), 0);

        // With nothing pending, each batch settles as it is evaluated.
        feed.send(3, tick("MSFT", 6.0));
        eventually("the next batch settled", within, || {
            feed.settled().len() == 2
        })
        .await;
        assert_eq!(feed.settled(), vec![2, 3]);
        feed.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_slow_to_fail_does_not_hold_back_the_feed() {
        let (store, ev, fired) = setup();
        let symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA"];
        for sym in symbols {
            store
                .create_unbounded(&new_alert(sym, Condition::Above, 100.0))
                .await
                .unwrap();
        }
        ev.reload().await.unwrap();
        // Every attempt waits 3 s before failing, as a pool does against a
        // stopped database.
        *store.slow_failure.lock() = Some(Duration::from_secs(3));
        store.down.store(true, Relaxed);

        let feed = RunningFeed::start(&ev);
        for (n, sym) in symbols.iter().enumerate() {
            feed.send(n as u64 + 1, tick(sym, 101.0));
        }
        // The first crossing waits out one failed attempt and a retry may
        // wait out another; the other batches must not each wait for one.
        eventually(
            "every crossing kept pending",
            Duration::from_secs(10),
            || ev.pending_len() == symbols.len(),
        )
        .await;
        assert!(feed.settled().is_empty(), "settled {:?}", feed.settled());

        store.down.store(false, Relaxed);
        eventually("the held batches settled", Duration::from_secs(30), || {
            !feed.settled().is_empty()
        })
        .await;
        assert_eq!(feed.settled(), vec![symbols.len() as u64]);
        assert_eq!(fired.lock().len(), symbols.len());
        feed.stop().await;
    }
}
