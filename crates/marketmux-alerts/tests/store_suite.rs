//! One suite, two stores: every case runs against PostgreSQL (a fresh
//! database per test) and the embedded SQLite store (a fresh directory).

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::*;
use marketmux_alerts::{AlertStore, Condition, Evaluator, ListQuery, StoreError};
use marketmux_test_support::tick;

/// The cases, each taking a fresh, empty store.
mod cases {
    use super::*;

    pub async fn create_list_delete(store: Arc<dyn AlertStore>) {
        let a1 = store
            .add(&new_alert(7, "AAPL", "ABOVE", 150.0))
            .await
            .unwrap();
        let a2 = store
            .add(&new_alert(7, "MSFT", "BELOW", 300.5))
            .await
            .unwrap();
        let a3 = store
            .add(&new_alert(7, "AAPL", "BELOW", 100.0))
            .await
            .unwrap();
        let other = store
            .add(&new_alert(8, "AAPL", "ABOVE", 1.0))
            .await
            .unwrap();
        assert!(a1.active && a1.triggered_at.is_none() && a1.triggered_price.is_none());
        assert_eq!(a1.user_id, 7);
        assert_eq!(a1.symbol.as_str(), "AAPL");
        assert_eq!(a1.condition, Condition::Above);
        assert_eq!(a1.target_price, 150.0);
        assert!(a2.id > a1.id && a3.id > a2.id);

        let all = store.list_all(7, false).await.unwrap();
        assert_eq!(
            all.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![a1.id, a2.id, a3.id],
            "ascending ids, only user 7"
        );
        assert_eq!(all[0], a1, "what create returned is what is stored");
        assert_eq!(store.get(a1.id).await.unwrap(), Some(a1.clone()));
        assert_eq!(store.get(987_654).await.unwrap(), None);

        let at = Utc::now();
        assert!(store.fire(a2.id, 299.0, at).await.unwrap());
        let active = store.list_all(7, true).await.unwrap();
        assert_eq!(
            active.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![a1.id, a3.id]
        );
        let all = store.list_all(7, false).await.unwrap();
        let fired = all.iter().find(|a| a.id == a2.id).unwrap();
        assert!(!fired.active);
        assert_eq!(fired.triggered_price, Some(299.0));
        let t = fired.triggered_at.unwrap();
        assert!((t - at).num_milliseconds().abs() <= 1, "{t} vs {at}");

        assert!(
            !store.delete(a1.id, Some(8)).await.unwrap(),
            "not user 8's alert"
        );
        assert!(store.delete(a1.id, Some(7)).await.unwrap());
        assert!(!store.delete(a1.id, None).await.unwrap(), "already gone");
        assert!(store.delete(other.id, None).await.unwrap());
        assert_eq!(store.list_all(7, false).await.unwrap().len(), 2);
        assert!(store.list_all(999, false).await.unwrap().is_empty());
    }

    pub async fn fire_is_exactly_once(store: Arc<dyn AlertStore>) {
        let a = store.add(&new_alert(1, "X", "ABOVE", 10.0)).await.unwrap();
        assert!(store.fire(a.id, 11.0, Utc::now()).await.unwrap());
        assert!(!store.fire(a.id, 12.0, Utc::now()).await.unwrap());
        let stored = &store.list_all(1, false).await.unwrap()[0];
        assert_eq!(
            stored.triggered_price,
            Some(11.0),
            "the second fire changed nothing"
        );

        let b = store.add(&new_alert(1, "X", "ABOVE", 10.0)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.fire(b.id, 10.0 + i as f64, Utc::now()).await.unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1);
        assert!(
            !store.fire(987_654, 1.0, Utc::now()).await.unwrap(),
            "unknown id"
        );
    }

    pub async fn load_active_skips_fired(store: Arc<dyn AlertStore>) {
        let a = store.add(&new_alert(1, "X", "ABOVE", 10.0)).await.unwrap();
        let b = store.add(&new_alert(2, "Y", "BELOW", 5.0)).await.unwrap();
        store.fire(a.id, 10.0, Utc::now()).await.unwrap();
        let active = store.load_active().await.unwrap();
        assert_eq!(active.iter().map(|x| x.id).collect::<Vec<_>>(), vec![b.id]);
        store.ping().await.unwrap();
    }

    pub async fn evaluator_fires_once_and_replay_fires_nothing(store: Arc<dyn AlertStore>) {
        let above = store
            .add(&new_alert(1, "AAPL", "ABOVE", 150.0))
            .await
            .unwrap();
        let below = store
            .add(&new_alert(1, "AAPL", "BELOW", 100.0))
            .await
            .unwrap();
        let rec = Recorder::default();
        let ev = Evaluator::new(store.clone(), rec.sink());
        assert_eq!(ev.reload().await.unwrap(), 2);

        let ticks = [
            tick("AAPL", 149.99),
            tick("MSFT", 500.0),
            tick("AAPL", 120.0),
        ];
        for t in &ticks {
            assert_eq!(ev.on_tick(t).await, 0, "no crossing at {}", t.price);
        }
        assert!(rec.ids().is_empty());

        let crossing = [tick("AAPL", 150.0), tick("AAPL", 151.0), tick("AAPL", 99.0)];
        for t in &crossing {
            ev.on_tick(t).await;
        }
        assert_eq!(rec.ids(), vec![above.id, below.id]);
        let fired = rec.0.lock()[0].clone();
        assert_eq!(
            fired.alert.triggered_price,
            Some(150.0),
            "inclusive: 150 reaches 150"
        );
        assert!(!fired.alert.active);
        assert!(fired.to_json().contains(r#""symbol":"AAPL""#));

        // Replay everything, on this evaluator and on a fresh one (a restart).
        for t in ticks.iter().chain(&crossing) {
            ev.on_tick(t).await;
        }
        let ev2 = Evaluator::new(store.clone(), rec.sink());
        assert_eq!(ev2.reload().await.unwrap(), 0);
        for t in ticks.iter().chain(&crossing) {
            ev2.on_tick(t).await;
        }
        assert_eq!(rec.ids().len(), 2, "nothing fired twice");
        assert!(store.list_all(1, true).await.unwrap().is_empty());
    }

    pub async fn two_evaluators_fire_each_alert_once(store: Arc<dyn AlertStore>) {
        let mut ids = Vec::new();
        for i in 0..40 {
            let cond = if i % 2 == 0 { "ABOVE" } else { "BELOW" };
            let target = if i % 2 == 0 {
                100.0 + i as f64
            } else {
                50.0 - i as f64 / 10.0
            };
            ids.push(
                store
                    .add(&new_alert(1 + i % 3, "BTC", cond, target))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let rec = Recorder::default();
        let a = Evaluator::new(store.clone(), rec.sink());
        let b = Evaluator::new(store.clone(), rec.sink());
        a.reload().await.unwrap();
        b.reload().await.unwrap();
        let ticks = vec![
            tick("BTC", 75.0),
            tick("BTC", 200.0),
            tick("BTC", 1.0),
            tick("BTC", 200.0),
        ];
        let (ta, tb) = (ticks.clone(), ticks);
        let ha = tokio::spawn(async move {
            for t in &ta {
                a.on_tick(t).await;
            }
            a
        });
        let hb = tokio::spawn(async move {
            for t in &tb {
                b.on_tick(t).await;
            }
            b
        });
        let (a, b) = (ha.await.unwrap(), hb.await.unwrap());
        let mut fired = rec.ids();
        fired.sort();
        assert_eq!(fired, ids, "every alert fired exactly once across both");
        let won = |e: &Evaluator| e.stats.fired.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(won(&a) + won(&b), 40);
    }

    pub async fn the_per_user_cap_counts_active_alerts(store: Arc<dyn AlertStore>) {
        let mut made = Vec::new();
        for i in 0..3 {
            made.push(
                store
                    .create(&new_alert(5, "AAPL", "ABOVE", 10.0 + i as f64), 3)
                    .await
                    .unwrap(),
            );
        }
        match store.create(&new_alert(5, "AAPL", "ABOVE", 20.0), 3).await {
            Err(StoreError::TooManyAlerts {
                user_id: 5,
                limit: 3,
            }) => {}
            other => panic!("expected TooManyAlerts, got {other:?}"),
        }
        assert_eq!(
            store.list_all(5, false).await.unwrap(),
            made,
            "nothing stored past the cap"
        );
        // Another user is not affected.
        store
            .create(&new_alert(6, "AAPL", "ABOVE", 1.0), 3)
            .await
            .unwrap();
        // A fired alert frees a place; so does a deleted one.
        assert!(store.fire(made[0].id, 11.0, Utc::now()).await.unwrap());
        store
            .create(&new_alert(5, "MSFT", "BELOW", 1.0), 3)
            .await
            .unwrap();
        assert!(store
            .create(&new_alert(5, "MSFT", "BELOW", 2.0), 3)
            .await
            .is_err());
        assert!(store.delete(made[1].id, Some(5)).await.unwrap());
        store
            .create(&new_alert(5, "MSFT", "BELOW", 3.0), 3)
            .await
            .unwrap();
        assert_eq!(store.list_all(5, true).await.unwrap().len(), 3);
        assert_eq!(store.list_all(5, false).await.unwrap().len(), 4);
    }

    pub async fn concurrent_creates_never_pass_the_cap(store: Arc<dyn AlertStore>) {
        const CAP: u32 = 10;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.create(&new_alert(9, "AAPL", "ABOVE", 1.0 + i as f64), CAP)
                    .await
            }));
        }
        let (mut created, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::TooManyAlerts { .. }) => refused += 1,
                Err(e) => panic!("create failed: {e}"),
            }
        }
        assert_eq!((created, refused), (CAP, 50 - CAP));
        assert_eq!(store.list_all(9, true).await.unwrap().len(), CAP as usize);
    }

    pub async fn pages_walk_every_alert_once_in_id_order(store: Arc<dyn AlertStore>) {
        let mut ids = Vec::new();
        for i in 0..25 {
            ids.push(
                store
                    .add(&new_alert(4, "AAPL", "ABOVE", 1.0 + i as f64))
                    .await
                    .unwrap()
                    .id,
            );
        }
        store
            .add(&new_alert(99, "AAPL", "ABOVE", 1.0))
            .await
            .unwrap();
        let q = |after: Option<i64>, limit| ListQuery::new(false, after, Some(limit)).unwrap();
        let first = store.list(4, &q(None, 10)).await.unwrap();
        assert_eq!(
            first.alerts.iter().map(|a| a.id).collect::<Vec<_>>(),
            ids[..10]
        );
        assert_eq!(first.next_after_id, Some(ids[9]));
        // Deleting what was already seen moves nothing on the next page.
        assert!(store.delete(ids[3], None).await.unwrap());
        let second = store.list(4, &q(first.next_after_id, 10)).await.unwrap();
        assert_eq!(
            second.alerts.iter().map(|a| a.id).collect::<Vec<_>>(),
            ids[10..20]
        );
        let last = store.list(4, &q(second.next_after_id, 10)).await.unwrap();
        assert_eq!(
            last.alerts.iter().map(|a| a.id).collect::<Vec<_>>(),
            ids[20..]
        );
        assert_eq!(last.next_after_id, None, "the last page says so");
        // A page that ends exactly at the last alert has no next page.
        let exact = store.list(4, &q(Some(ids[14]), 10)).await.unwrap();
        assert_eq!(exact.alerts.len(), 10);
        assert_eq!(exact.next_after_id, None);
        let beyond = store.list(4, &q(Some(ids[24]), 10)).await.unwrap();
        assert!(beyond.alerts.is_empty() && beyond.next_after_id.is_none());
        // active_only pages over active alerts only.
        for id in &ids[..20] {
            store.fire(*id, 100.0, Utc::now()).await.unwrap();
        }
        let active = store
            .list(4, &ListQuery::new(true, None, Some(3)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            active.alerts.iter().map(|a| a.id).collect::<Vec<_>>(),
            ids[20..23]
        );
        assert_eq!(active.next_after_id, Some(ids[22]));
    }

    pub async fn failed_fires_stay_pending_until_the_store_is_back(store: Arc<dyn AlertStore>) {
        let sw = SwitchableStore::new(store.clone());
        let a = store
            .add(&new_alert(1, "ETH", "ABOVE", 10.0))
            .await
            .unwrap();
        let b = store
            .add(&new_alert(1, "ETH", "ABOVE", 11.0))
            .await
            .unwrap();
        let rec = Recorder::default();
        let ev = Evaluator::new(sw.clone(), rec.sink());
        ev.reload().await.unwrap();

        sw.set_down(true);
        assert_eq!(ev.on_tick(&tick("ETH", 12.0)).await, 0);
        assert_eq!(ev.pending_len(), 2);
        ev.on_tick(&tick("ETH", 13.0)).await; // replay while down: no duplicate pending
        assert_eq!(ev.pending_len(), 2);
        assert_eq!(ev.retry_pending().await, 2, "still down");
        assert!(rec.ids().is_empty());

        sw.set_down(false);
        assert_eq!(ev.retry_pending().await, 0);
        assert_eq!(rec.ids(), vec![a.id, b.id]);
        assert_eq!(
            rec.0.lock()[0].alert.triggered_price,
            Some(12.0),
            "first crossing kept"
        );
        ev.on_tick(&tick("ETH", 14.0)).await;
        assert_eq!(ev.retry_pending().await, 0);
        assert_eq!(rec.ids().len(), 2);
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = PgTestDb::new().await;
                    cases::$case(Arc::new(db.store().await)).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = TempDir::new();
                    cases::$case(Arc::new(sqlite_store(&dir).await)).await;
                }
            )*
        }
    };
}

suite!(
    create_list_delete,
    fire_is_exactly_once,
    load_active_skips_fired,
    evaluator_fires_once_and_replay_fires_nothing,
    two_evaluators_fire_each_alert_once,
    failed_fires_stay_pending_until_the_store_is_back,
    the_per_user_cap_counts_active_alerts,
    concurrent_creates_never_pass_the_cap,
    pages_walk_every_alert_once_in_id_order,
);

#[tokio::test]
async fn embedded_store_keeps_alerts_across_a_restart() {
    let dir = TempDir::new();
    let (a, b) = {
        let store = sqlite_store(&dir).await;
        let a = store
            .add(&new_alert(3, "AAPL", "ABOVE", 10.0))
            .await
            .unwrap();
        let b = store
            .add(&new_alert(3, "AAPL", "BELOW", 5.0))
            .await
            .unwrap();
        store.fire(b.id, 4.0, Utc::now()).await.unwrap();
        store.close().await;
        (a, b)
    };
    let store = sqlite_store(&dir).await;
    let all = store.list_all(3, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], a);
    assert_eq!(all[1].id, b.id);
    assert!(!all[1].active);
    assert_eq!(store.load_active().await.unwrap(), vec![a]);
    let c = store
        .add(&new_alert(3, "AAPL", "ABOVE", 1.0))
        .await
        .unwrap();
    assert!(c.id > b.id, "ids keep growing after a restart");
}

#[tokio::test]
async fn postgres_migrations_run_twice_and_users_are_created_on_demand() {
    let db = PgTestDb::new().await;
    let s1 = db.store().await;
    let s2 = db.store().await; // migrations again: a no-op
    s1.add(&new_alert(42, "AAPL", "ABOVE", 1.0)).await.unwrap();
    s2.add(&new_alert(42, "AAPL", "ABOVE", 2.0)).await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = 42")
        .fetch_one(s1.pool())
        .await
        .unwrap();
    assert_eq!(users, 1);
}
