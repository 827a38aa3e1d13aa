//! Fault: the Kafka broker goes away mid-stream and comes back.
//!
//! tansu (scripts/test sets MARKETMUX_TEST_TANSU), two gateways whose
//! `POST /api/v1/ticks` goes to Kafka, two bridges, one alerts instance, all
//! child processes; Redis at 127.0.0.1:6379 and PostgreSQL at
//! 127.0.0.1:5432 (a database of the test's own). While ticks are posted,
//! the broker goes away (every connection reset, new ones refused) for 5 s,
//! then comes back. Every tick answered 202 reaches each of four
//! sockets exactly once, in `seq` order, and every alert fires exactly once.

mod alerts_common;
mod fault_common;
mod kafka_common;
mod scrape;

use std::sync::Arc;
use std::time::Duration;

use fault_common::broker::Tansu;
use fault_common::{crossing_alerts, post_ticks, roles, settle, AlertWatch, Posted, Tally};
use marketmux_test_support::{eventually, TempDir};
use parking_lot::Mutex;

/// Ticks posted, in chunks of `CHUNK`.
const N: usize = 4_000;
const CHUNK: usize = 20;
/// How long the broker is away: under the producers' delivery timeout and
/// the consumers' session timeout (10 s each). Longer outages against tansu
/// 0.6 are a known limit (docs/kafka.md): tansu answers the idempotent
/// producer's epoch bump after a delivery timeout with ProducerFenced, and
/// the bridges' group did not resume within 90 s.
const OUTAGE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_mid_stream_loses_and_doubles_nothing() {
    let dir = TempDir::new("fault-broker");
    let (db_name, db) = alerts_common::create_db("fbroker").await;
    let result = tokio::spawn(run(dir.path().to_path_buf(), db)).await;
    alerts_common::drop_db(&db_name).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn run(dir: std::path::PathBuf, db: String) {
    let redis = kafka_common::redis_url();
    let admin = kafka_common::admin(&redis).await;
    let tag = kafka_common::run_tag();
    let prefix = format!("mmtest:fbroker:{tag}:");
    let symbols: Vec<String> = (0..8).map(|i| format!("{tag}.B{i}")).collect();

    let tansu = Tansu::start(&dir, 6).await;
    let brokers = tansu.brokers();
    let kafka = ["--kafka-brokers", brokers.as_str()];
    let ga = roles::gateway("gateway A", &dir, &redis, &prefix, &kafka).await;
    let gb = roles::gateway("gateway B", &dir, &redis, &prefix, &kafka).await;
    let group = format!("mmtest-fbroker-{tag}");
    let _ba = roles::bridge("bridge A", &dir, &brokers, &redis, &prefix, &group).await;
    let _bb = roles::bridge("bridge B", &dir, &brokers, &redis, &prefix, &group).await;
    let alerts = roles::alerts(
        "alerts",
        &dir,
        &brokers,
        &db,
        &redis,
        &prefix,
        &format!("mmtest-fbroker-alerts-{tag}"),
    )
    .await;
    let watch = AlertWatch::start(&redis, &prefix).await;
    let alert_ids = crossing_alerts(alerts.addr, &symbols, N, 6).await;
    let views = [
        kafka_common::socket(ga.addr, &symbols).await,
        kafka_common::socket(ga.addr, &symbols).await,
        kafka_common::socket(gb.addr, &symbols).await,
        kafka_common::socket(gb.addr, &symbols).await,
    ];

    let posted = Arc::new(Mutex::new(Posted::default()));
    let sender = tokio::spawn(post_ticks(
        vec![ga.addr, gb.addr],
        symbols.clone(),
        N,
        CHUNK,
        Duration::from_millis(10),
        posted.clone(),
    ));
    // The broker goes away a third of the way in.
    eventually(
        "a third of the ticks accepted",
        Duration::from_secs(120),
        || posted.lock().accepted.len() >= N / 3,
    )
    .await;
    tansu.stop();
    let stopped_at = posted.lock().sent;
    tokio::time::sleep(OUTAGE).await;
    tansu.resume().await;
    let resumed_at = posted.lock().sent;
    tokio::time::timeout(Duration::from_secs(300), sender)
        .await
        .expect("the sender finishes")
        .expect("the sender does not panic");

    let accepted = posted.lock().accepted.clone();
    let tallies = settle(&views, &accepted, Duration::from_secs(90)).await;
    eventually("every alert pushed", Duration::from_secs(60), || {
        watch.counts().0 >= alert_ids.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fired, extra_pushes) = watch.counts();
    let total = Tally::sum(&tallies);
    {
        let p = posted.lock();
        println!(
            "fault=broker outage={OUTAGE:?} sent={} accepted={} statuses={:?} (broker stopped after {stopped_at} sent, back after {resumed_at}) \
             sockets=4 {total} alerts={} fired={fired} duplicate_fires={extra_pushes}",
            p.sent,
            accepted.len(),
            p.statuses,
            alert_ids.len(),
        );
    }
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(
            (t.missing, t.duplicated, t.out_of_order),
            (0, 0, 0),
            "socket {i}: {t}"
        );
    }
    assert!(accepted.len() > N / 2, "most ticks were accepted");
    let fires = watch.fires();
    for id in &alert_ids {
        assert_eq!(
            fires.get(id),
            Some(&1),
            "alert {id} pushed exactly once: {fires:?}"
        );
    }
    assert_eq!(fires.len(), alert_ids.len(), "no other alert fired");
    kafka_common::cleanup(&admin, &prefix).await;
    drop(tansu);
}
