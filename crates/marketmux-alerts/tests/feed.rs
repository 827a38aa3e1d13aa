//! The PostgreSQL change feed (`LISTEN/NOTIFY`) between two stores on one
//! database, as two instances see it: a create, a fire and a delete made
//! through one reach the other's evaluator at once, and a listener whose
//! connection is killed comes back and asks for a full reload.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use marketmux_alerts::{follow, AlertStore, Evaluator, StoreEvent};
use marketmux_test_support::{eventually, tick};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn next_event(feed: &mut mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("an event within 10 s")
        .expect("the feed is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_fires_and_deletes_through_one_store_reach_the_other_at_once() {
    let db = PgTestDb::new().await;
    let here: Arc<dyn AlertStore> = Arc::new(db.store().await);
    let there: Arc<dyn AlertStore> = Arc::new(db.store().await);
    let rec = Recorder::default();
    let ev = Evaluator::new(there.clone(), rec.sink());
    let stop = CancellationToken::new();
    let task =
        follow::spawn(there.clone(), ev.clone(), stop.clone()).expect("PostgreSQL has a feed");

    // Let the listener start (its first step is a full reload).
    let first = here
        .add(&new_alert(1, "AAPL", "ABOVE", 100.0))
        .await
        .unwrap();
    eventually("first alert indexed", Duration::from_secs(5), || {
        ev.len() == 1
    })
    .await;

    let mut lags = Vec::new();
    for i in 0..20 {
        // Counted before the create: its notification may be applied
        // before `add` returns.
        let n = ev.len();
        let a = here
            .add(&new_alert(2, "MSFT", "BELOW", 10.0 + i as f64))
            .await
            .unwrap();
        lags.push(eventually("create seen", Duration::from_secs(2), || ev.len() == n + 1).await);
        assert!(here.delete(a.id, None).await.unwrap());
        eventually("delete seen", Duration::from_secs(2), || ev.len() == n).await;
    }
    lags.sort();
    println!(
        "create through one store -> indexed by the other: median {:?}, max {:?} (20 creates)",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // The other evaluator fires it, once.
    assert_eq!(ev.on_tick(&tick("AAPL", 101.0)).await, 1);
    assert_eq!(ev.on_tick(&tick("AAPL", 102.0)).await, 0);
    assert_eq!(rec.ids(), vec![first.id]);

    // Fired through the first store: the other drops it without trying.
    let b = here.add(&new_alert(3, "TSLA", "ABOVE", 5.0)).await.unwrap();
    eventually("indexed", Duration::from_secs(2), || ev.len() == 1).await;
    assert!(here.fire(b.id, 6.0, Utc::now()).await.unwrap());
    eventually("fire seen", Duration::from_secs(2), || ev.is_empty()).await;
    assert_eq!(ev.on_tick(&tick("TSLA", 7.0)).await, 0);
    assert_eq!(
        ev.stats
            .lost_races
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the follower stops at shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_and_asks_for_a_full_reload() {
    let db = PgTestDb::new().await;
    let store = db.store().await;
    let stop = CancellationToken::new();
    let mut feed = store.watch(stop.clone()).expect("PostgreSQL has a feed");
    assert_eq!(
        next_event(&mut feed).await,
        StoreEvent::Resync,
        "starts with a reload"
    );

    let a = store
        .add(&new_alert(1, "AAPL", "ABOVE", 1.0))
        .await
        .unwrap();
    assert_eq!(next_event(&mut feed).await, StoreEvent::Changed(a.id));

    // The server ends the listening session (as a restart or failover would).
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listening session");
    assert_eq!(
        next_event(&mut feed).await,
        StoreEvent::Resync,
        "what was announced while it was gone is read again"
    );

    // Listening again.
    assert!(store.delete(a.id, None).await.unwrap());
    assert_eq!(next_event(&mut feed).await, StoreEvent::Removed(a.id));
    stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await;
    assert_eq!(end.expect("the feed ends at shutdown"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_read_leads_to_reloads_until_the_store_answers() {
    let dir = TempDir::new();
    let inner: Arc<dyn AlertStore> = Arc::new(sqlite_store(&dir).await);
    let store = SwitchableStore::new(inner.clone());
    let ev = Evaluator::new(store.clone(), Recorder::default().sink());
    let (tx, feed) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let task = tokio::spawn(follow::follow(
        store.clone(),
        ev.clone(),
        feed,
        stop.clone(),
    ));

    let a = inner
        .add(&new_alert(1, "AAPL", "ABOVE", 1.0))
        .await
        .unwrap();
    store.set_down(true);
    tx.send(StoreEvent::Changed(a.id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ev.is_empty(), "the store is down: nothing read yet");
    // Created while the store was unreadable, announced by nobody.
    let b = inner
        .add(&new_alert(1, "MSFT", "ABOVE", 1.0))
        .await
        .unwrap();
    store.set_down(false);
    eventually("both indexed by a reload", Duration::from_secs(5), || {
        ev.len() == 2
    })
    .await;
    assert_eq!(
        ev.on_tick(&tick("MSFT", 2.0)).await,
        1,
        "{b:?} is evaluated"
    );

    stop.cancel();
    task.await.unwrap();
}
