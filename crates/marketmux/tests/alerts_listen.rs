//! Two `alerts` instances in one consumer group on one PostgreSQL database,
//! with `--reload-secs 3600` so the periodic reload cannot be what makes
//! anything pass: an alert created through instance A is evaluated by
//! instance B at once (a crossing tick published 50 ms later, on a
//! partition B owns, fires it exactly once), and an alert deleted through A
//! leaves B's index at once (a crossing 50 ms later touches nothing).

mod alerts_common;
mod scrape;

use std::time::{Duration, Instant};

use marketmux::node::Node;
use marketmux_alerts::grpc::GrpcAlertClient;
use marketmux_alerts::{AlertService, ListQuery, NewAlert};
use marketmux_bus::TickPublisher;
use marketmux_core::Tick;
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use rdkafka::mocking::MockCluster;

use alerts_common::{alerts_role, create_db, drop_db};
use marketmux_test_support::tick;
use scrape::scrape;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_created_or_deleted_through_one_instance_is_seen_by_the_other_at_once() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 2, 1)
        .expect("create market_ticks");
    let brokers = cluster.bootstrap_servers();
    let (name, db) = create_db("listen").await;
    let result = tokio::spawn(run(brokers, db)).await;
    drop_db(&name).await;
    result.unwrap();
}

/// One instance's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    ticks: f64,
    fired: f64,
    lost_races: f64,
    indexed: f64,
}

async fn counts(node: &Node) -> Counts {
    let m = scrape(node.metrics_addr()).await;
    Counts {
        ticks: m["marketmux_alerts_ticks_total"],
        fired: m["marketmux_alerts_fired_total"],
        lost_races: m["marketmux_alerts_lost_races_total"],
        indexed: m["marketmux_alerts_indexed"],
    }
}

/// A price that crosses none of the test's alerts. An instance evaluates
/// its ticks one after the other, each fire included, so once a trailing
/// quiet tick is counted, every tick before it is fully done.
const QUIET: f64 = 75.0;

/// `prices` on `symbol`, then one [`QUIET`] tick.
fn ticks_then_quiet(symbol: &str, prices: &[f64]) -> Vec<Tick> {
    prices
        .iter()
        .chain([&QUIET])
        .map(|p| tick(symbol, *p))
        .collect()
}

/// Waits until `a` and `b` together evaluated `more` ticks past `before`;
/// returns their counts then.
async fn evaluated(a: &Node, b: &Node, before: (Counts, Counts), more: f64) -> (Counts, Counts) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = (counts(a).await, counts(b).await);
        let done = now.0.ticks + now.1.ticks - before.0.ticks - before.1.ticks;
        if done >= more {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "ticks not evaluated within 20 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(brokers: String, db: String) {
    let a = alerts_role(&brokers, &db, "3600").await;
    let b = alerts_role(&brokers, &db, "3600").await;
    let publisher = KafkaPublisher::new(&KafkaConfig::new(brokers.clone()), "test").unwrap();
    let symbols: Vec<String> = (0..16).map(|i| format!("LSN{i}")).collect();

    // Until the group has settled with a partition on each instance: a round
    // of quiet ticks on every symbol is evaluated by both.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = (counts(&a).await, counts(&b).await);
        let round: Vec<Tick> = symbols.iter().map(|s| tick(s, 1.0)).collect();
        publisher.publish(round).await.unwrap();
        let after = evaluated(&a, &b, before, symbols.len() as f64).await;
        if after.0.ticks > before.0.ticks && after.1.ticks > before.1.ticks {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never gave both instances a partition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A symbol whose partition B owns: one tick each until B evaluates one.
    let mut on_b = None;
    for s in &symbols {
        let before = (counts(&a).await, counts(&b).await);
        publisher.publish(vec![tick(s, 1.0)]).await.unwrap();
        let after = evaluated(&a, &b, before, 1.0).await;
        if after.1.ticks > before.1.ticks {
            on_b = Some(s.clone());
            break;
        }
    }
    let sym = on_b.expect("some symbol on B's partition");

    // Created through A, crossed 50 ms later on B's partition: B fires it once.
    let client = GrpcAlertClient::connect_lazy(&format!("http://{}", a.http_addr())).unwrap();
    let before = (counts(&a).await, counts(&b).await);
    let created = client
        .create(NewAlert::parse(1, &sym, 100.0, "ABOVE").unwrap())
        .await
        .expect("create through A");
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher
        .publish(ticks_then_quiet(&sym, &[101.0]))
        .await
        .unwrap();
    let after = evaluated(&a, &b, before, 2.0).await;
    assert_eq!(
        after.1.fired - before.1.fired,
        1.0,
        "B fired the alert created through A 50 ms before: {after:?}"
    );
    assert_eq!(after.0.fired, before.0.fired, "A does not own {sym}");
    let page = client.list(1, ListQuery::default()).await.unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert_eq!(page.alerts[0].id, created.id);
    assert_eq!(page.alerts[0].triggered_price, Some(101.0));

    // Crossing again (and again): nothing more fires anywhere.
    let before = after;
    publisher
        .publish(ticks_then_quiet(&sym, &[102.0, 103.0]))
        .await
        .unwrap();
    let after = evaluated(&a, &b, before, 3.0).await;
    assert_eq!(
        (after.0.fired, after.1.fired),
        (before.0.fired, before.1.fired),
        "fired exactly once"
    );

    // Created then deleted through A: B indexes it, then drops it at once.
    let doomed = client
        .create(NewAlert::parse(2, &sym, 50.0, "BELOW").unwrap())
        .await
        .expect("create through A");
    let created_at = Instant::now();
    while counts(&b).await.indexed < 1.0 {
        assert!(
            created_at.elapsed() < Duration::from_secs(2),
            "B never indexed the new alert"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "created through A, in B's index (seen on B's /metrics) {:?} later",
        created_at.elapsed()
    );
    assert!(client.delete(doomed.id, Some(2)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = (counts(&a).await, counts(&b).await);
    assert_eq!(before.1.indexed, 0.0, "B dropped the deleted alert");
    publisher
        .publish(ticks_then_quiet(&sym, &[49.0]))
        .await
        .unwrap();
    let after = evaluated(&a, &b, before, 2.0).await;
    assert_eq!(after.1.fired, before.1.fired, "nothing fired");
    assert_eq!(
        after.1.lost_races, before.1.lost_races,
        "B did not even try: the deleted alert was out of its index"
    );

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
