//! Cost of evaluating one tick against 100,000 active alerts on one symbol.
//!
//! The index is what a tick costs in memory; the store is an in-memory stub
//! whose `fire` always succeeds, so the "fires a few" case measures the
//! evaluator, not a database round trip.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use marketmux_alerts::{
    Alert, AlertIndex, AlertPage, AlertStore, Condition, Evaluator, FiredAlert, ListQuery,
    NewAlert, StoreError,
};
use marketmux_core::{Symbol, Tick, Timestamp};
use parking_lot::Mutex;

const ALERTS: i64 = 100_000;

/// Every alert: half ABOVE with targets 1000.00..1500.00, half BELOW with
/// targets 500.00..999.99; a tick at 999.995 fires none.
fn alerts() -> Vec<Alert> {
    let sym = Symbol::new("AAPL").unwrap();
    (0..ALERTS)
        .map(|i| {
            let (condition, target_price) = if i % 2 == 0 {
                (Condition::Above, 1000.0 + (i / 2) as f64 / 100.0)
            } else {
                (Condition::Below, 999.99 - (i / 2) as f64 / 100.0)
            };
            Alert {
                id: i + 1,
                user_id: 1 + i % 1000,
                symbol: sym,
                condition,
                target_price,
                active: true,
                created_at: Utc::now(),
                triggered_at: None,
                triggered_price: None,
            }
        })
        .collect()
}

struct StubStore(Vec<Alert>);

#[async_trait]
impl AlertStore for StubStore {
    async fn create(&self, _: &NewAlert, _: u32) -> Result<Alert, StoreError> {
        Err(StoreError::Internal("stub".into()))
    }
    async fn list(&self, _: i64, _: &ListQuery) -> Result<AlertPage, StoreError> {
        Ok(AlertPage {
            alerts: Vec::new(),
            next_after_id: None,
        })
    }
    async fn get(&self, _: i64) -> Result<Option<Alert>, StoreError> {
        Ok(None)
    }
    async fn delete(&self, _: i64, _: Option<i64>) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn load_active(&self) -> Result<Vec<Alert>, StoreError> {
        Ok(self.0.clone())
    }
    async fn fire(&self, _: i64, _: f64, _: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn tick(price: f64) -> Tick {
    Tick::new(Symbol::new("AAPL").unwrap(), price, Timestamp::now(), None).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let all = alerts();
    let store = Arc::new(StubStore(all.clone()));
    let sink = Arc::new(|_: &FiredAlert| {});
    let ev = Evaluator::new(store.clone(), sink.clone());
    rt.block_on(ev.reload()).unwrap();
    assert_eq!(ev.len(), ALERTS as usize);

    let mut g = c.benchmark_group("evaluate_100k_alerts_one_symbol");
    // No alert crossed: the index is untouched, so no rebuild is needed.
    let quiet = tick(999.995);
    g.bench_function("tick_fires_none", |b| {
        b.iter(|| rt.block_on(ev.on_tick(&quiet)))
    });
    // The index alone (no async, no store): the lookup itself.
    let mut ix = AlertIndex::new();
    for a in &all {
        ix.insert(a.clone());
    }
    let sym = Symbol::new("AAPL").unwrap();
    g.bench_function("index_lookup_fires_none", |b| {
        b.iter(|| ix.take_crossed(&sym, 999.995).len())
    });
    // 3 ABOVE alerts crossed (targets 1000.00, 1000.01, 1000.02). Firing
    // removes them, so each iteration puts them back (3 inserts, O(log n)
    // each): the figure slightly overstates the cost of the fire itself.
    let fired: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let f2 = fired.clone();
    let ev3 = Evaluator::new(
        store.clone(),
        Arc::new(move |f: &FiredAlert| f2.lock().push(f.alert.clone())),
    );
    rt.block_on(ev3.reload()).unwrap();
    let few = tick(1000.02);
    g.bench_function("tick_fires_3_then_reindex_them", |b| {
        b.iter(|| {
            let n = rt.block_on(ev3.on_tick(&few));
            assert_eq!(n, 3);
            for mut a in fired.lock().drain(..) {
                a.active = true;
                ev3.track(a);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
