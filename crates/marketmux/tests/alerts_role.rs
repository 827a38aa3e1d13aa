//! The `alerts` role on librdkafka's mock cluster and a real PostgreSQL
//! (a database of its own): two instances in one consumer group, alerts
//! created through one instance's gRPC API, crossing ticks (and two replays)
//! produced to `market_ticks`: every alert fires, at the first crossing's
//! price. (That no alert fires twice is the store's conditional update,
//! checked with racing evaluators in the marketmux-alerts suite.)

mod alerts_common;
mod scrape;

use std::time::Duration;

use marketmux::node::Node;
use marketmux_alerts::grpc::GrpcAlertClient;
use marketmux_alerts::{AlertService, ListQuery, NewAlert};
use marketmux_bus::TickPublisher;
use marketmux_core::Tick;
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use marketmux_test_support::{tick, wait_for_value};
use rdkafka::mocking::MockCluster;

use alerts_common::{alerts_role, create_db, drop_db};
use scrape::scrape;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_fire_every_alert() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 4, 1)
        .expect("create market_ticks");
    let brokers = cluster.bootstrap_servers();
    let (name, db) = create_db("role").await;
    let result = tokio::spawn(run(brokers, db)).await;
    drop_db(&name).await;
    result.unwrap();
}

async fn run(brokers: String, db: String) {
    let a = alerts_role(&brokers, &db, "0.5").await;
    let b = alerts_role(&brokers, &db, "0.5").await;
    let client = GrpcAlertClient::connect_lazy(&format!("http://{}", a.http_addr())).unwrap();
    let symbols = ["AL1", "AL2", "AL3", "AL4", "AL5", "AL6"];
    let mut ids = Vec::new();
    for (i, s) in symbols.iter().enumerate() {
        for (cond, target) in [("ABOVE", 100.0), ("BELOW", 50.0)] {
            let new = NewAlert::parse(1 + i as i64, s, target, cond).unwrap();
            ids.push(client.create(new).await.expect("create over gRPC").id);
        }
    }
    // Instance b learns of the alerts created through a from the change feed
    // (and its periodic reload, 0.5 s here).
    for node in [&a, &b] {
        wait_for_value(
            "every alert indexed",
            ids.len() as f64,
            Duration::from_secs(10),
            || async { scrape(node.metrics_addr()).await["marketmux_alerts_indexed"] },
        )
        .await;
    }

    let publisher = KafkaPublisher::new(&KafkaConfig::new(brokers.clone()), "test").unwrap();
    let quiet: Vec<Tick> = symbols.iter().map(|s| tick(s, 75.0)).collect();
    publisher.publish(quiet).await.unwrap();
    let crossing: Vec<Tick> = symbols
        .iter()
        .flat_map(|s| [tick(s, 120.0), tick(s, 40.0)])
        .collect();
    for _ in 0..3 {
        publisher.publish(crossing.clone()).await.unwrap(); // and two replays
    }

    wait_for_value(
        "alerts still active",
        0,
        Duration::from_secs(30),
        || async {
            let mut active = 0;
            for i in 0..symbols.len() {
                let query = ListQuery::new(true, None, None).unwrap();
                active += client.list(1 + i as i64, query).await.unwrap().alerts.len();
            }
            active
        },
    )
    .await;
    for i in 0..symbols.len() {
        let page = client
            .list(1 + i as i64, ListQuery::default())
            .await
            .unwrap();
        for alert in page.alerts {
            assert!(!alert.active);
            let p = alert.triggered_price.expect("triggered price");
            match alert.condition {
                marketmux_alerts::Condition::Above => assert_eq!(p, 120.0),
                marketmux_alerts::Condition::Below => assert_eq!(p, 40.0),
            }
        }
    }
    // Each alert fired by exactly one instance, as their /metrics agree.
    let fired = fired_count(&a).await + fired_count(&b).await;
    assert_eq!(fired, ids.len() as f64);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// `marketmux_alerts_fired_total` of one instance, from its `/metrics`.
async fn fired_count(node: &Node) -> f64 {
    scrape(node.metrics_addr()).await["marketmux_alerts_fired_total"]
}
