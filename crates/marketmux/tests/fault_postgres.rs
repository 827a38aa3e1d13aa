//! Fault: PostgreSQL restarts while alerts are crossing.
//!
//! A PostgreSQL server of the test's own (initdb in a temp dir, a free
//! port), tansu (MARKETMUX_TEST_TANSU, set by scripts/test), an alerts
//! instance and a gateway serving its API as REST (`--alerts-url`), both
//! child processes; Redis at 127.0.0.1:6379 carries the fired alerts.
//! Crossings before, during and after a fast shutdown of PostgreSQL: while
//! it is down the API answers 503 and the fires wait (pending, offsets
//! held); once it is back every crossed alert is stored and pushed exactly
//! once, replays fire nothing, uncrossed alerts stay active.

mod fault_common;
mod kafka_common;
mod scrape;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fault_common::broker::Tansu;
use fault_common::postgres::OwnPostgres;
use fault_common::{roles, AlertWatch};
use marketmux_alerts::grpc::GrpcAlertClient;
use marketmux_alerts::{AlertService, NewAlert};
use marketmux_bus::TickPublisher;
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use marketmux_test_support::{eventually, wait_for_value, TempDir};
use sqlx::Connection as _;

/// Symbols, and alerts per symbol: ABOVE 10, 20, ..., 100.
const SYMBOLS: usize = 4;
const TARGETS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_alerts_cross_fires_each_once() {
    let dir = TempDir::new("fault-postgres");
    let mut pg = OwnPostgres::start(dir.path()).await;
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("the test's own PostgreSQL answers");
    sqlx::query("CREATE DATABASE marketmux")
        .execute(&mut conn)
        .await
        .expect("create the database");
    drop(conn);
    let db = pg.url("marketmux");

    let redis = kafka_common::redis_url();
    let admin = kafka_common::admin(&redis).await;
    let tag = kafka_common::run_tag();
    let prefix = format!("mmtest:fpg:{tag}:");
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("{tag}.P{i}")).collect();

    let tansu = Tansu::start(dir.path(), 2).await;
    let brokers = tansu.brokers();
    let alerts = roles::alerts(
        "alerts",
        dir.path(),
        &brokers,
        &db,
        &redis,
        &prefix,
        &format!("mmtest-fpg-{tag}"),
    )
    .await;
    let alerts_url = format!("http://{}", alerts.addr);
    let gateway = roles::gateway(
        "gateway",
        dir.path(),
        &redis,
        &prefix,
        &["--alerts-url", &alerts_url],
    )
    .await;
    let watch = AlertWatch::start(&redis, &prefix).await;
    let client = GrpcAlertClient::connect_lazy(&alerts_url).expect("gRPC client");
    // alert id -> (symbol index, target)
    let mut alerts_by_id: HashMap<i64, (usize, f64)> = HashMap::new();
    for (k, symbol) in symbols.iter().enumerate() {
        for j in 1..=TARGETS {
            let target = 10.0 * j as f64;
            let new = NewAlert::parse(k as i64 + 1, symbol, target, "ABOVE").unwrap();
            let id = client.create(new).await.expect("create over gRPC").id;
            alerts_by_id.insert(id, (k, target));
        }
    }
    let publisher =
        KafkaPublisher::new(&KafkaConfig::new(brokers.clone()), "fault-postgres").unwrap();
    let publish = |price: f64| {
        let ticks: Vec<Tick> = symbols
            .iter()
            .map(|s| Tick::new(Symbol::new(s).unwrap(), price, Timestamp::now(), None).unwrap())
            .collect();
        let publisher = &publisher;
        async move { publisher.publish(ticks).await.expect("publish to tansu") }
    };
    let fired_up_to =
        |top: f64| -> usize { alerts_by_id.values().filter(|(_, t)| *t <= top).count() };

    // Before: 15 crosses the 10s.
    publish(15.0).await;
    eventually(
        "the first crossings pushed",
        Duration::from_secs(60),
        || watch.counts().0 >= fired_up_to(15.0),
    )
    .await;

    // PostgreSQL goes down; crossings keep coming.
    pg.stop_server().await;
    let down_at = Instant::now();
    publish(35.0).await;
    publish(55.0).await;
    let http = reqwest::Client::new();
    let list = format!("http://{}/alerts?user_id=1", gateway.addr);
    let mut statuses = Vec::new();
    let pending_wanted = (fired_up_to(55.0) - fired_up_to(15.0)) as f64;
    let mut pending = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && (pending < pending_wanted || statuses.last() != Some(&503)) {
        let m = scrape::scrape(alerts.metrics).await;
        pending = m["marketmux_alerts_pending_fires"];
        statuses.push(
            http.get(&list)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16()),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "the alert API while PostgreSQL is down: {statuses:?}"
    );
    assert_eq!(
        pending, pending_wanted,
        "the crossings wait as pending fires"
    );
    let pushed_while_down = watch.counts().0;
    assert_eq!(
        pushed_while_down,
        fired_up_to(15.0),
        "nothing fires while the store is down"
    );
    let created = http
        .post(format!("http://{}/alerts", gateway.addr))
        .json(&serde_json::json!({"user_id": 1, "symbol": symbols[0], "target_price": 1000.0, "condition": "ABOVE"}))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    assert_eq!(created, 503, "creating an alert while PostgreSQL is down");

    // Back: the pending fires are stored and pushed; later crossings and a
    // replay of every crossing fire what they should, once.
    pg.start_server().await;
    let outage = down_at.elapsed();
    eventually("the pending fires pushed", Duration::from_secs(60), || {
        watch.counts().0 >= fired_up_to(55.0)
    })
    .await;
    wait_for_value(
        "the alert API once PostgreSQL is back",
        200,
        Duration::from_secs(30),
        || async {
            http.get(&list)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        },
    )
    .await;
    publish(75.0).await;
    for price in [15.0, 35.0, 55.0, 75.0] {
        publish(price).await; // replays
    }
    eventually(
        "the later crossings pushed",
        Duration::from_secs(60),
        || watch.counts().0 >= fired_up_to(75.0),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let fires = watch.fires();
    let (fired, extra) = watch.counts();
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE NOT active AND triggered_at IS NOT NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE active")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    println!(
        "fault=postgres outage={outage:.1?} alerts={} crossed={} fired_before={} pending_while_down={pending} \
         fired={fired} duplicate_fires={extra} stored_fired={stored} still_active={active} api_while_down={:?}",
        alerts_by_id.len(),
        fired_up_to(75.0),
        fired_up_to(15.0),
        statuses.last(),
    );
    for (id, (_, target)) in &alerts_by_id {
        let want = usize::from(*target <= 75.0);
        assert_eq!(
            fires.get(id).copied().unwrap_or(0),
            want,
            "alert {id} (target {target})"
        );
    }
    assert_eq!(fires.len(), fired_up_to(75.0), "no other alert pushed");
    assert_eq!(stored as usize, fired_up_to(75.0), "stored as fired");
    assert_eq!(
        active as usize,
        alerts_by_id.len() - fired_up_to(75.0),
        "the rest still active"
    );
    drop(conn);
    kafka_common::cleanup(&admin, &prefix).await;
    drop(gateway);
    drop(alerts);
    drop(tansu);
    drop(pg);
}
