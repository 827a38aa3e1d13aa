//! The distributed alert path: a gateway (JWT on, `--alerts-url`) serves
//! `/alerts` through the alerts role's gRPC API; the alerts role evaluates
//! ticks from Kafka (librdkafka's mock cluster) against PostgreSQL and
//! publishes the fired alert on Redis; the gateway pushes it to the user's
//! socket, once.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use futures_util::StreamExt as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use marketmux::cli::{Cli, Role};
use marketmux_bus::TickPublisher;
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SECRET: &str = "multinode-secret-of-at-least-32-bytes";

fn token(user: i64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fired_by_the_alerts_role_reaches_the_users_socket_on_a_gateway() {
    let mut conn = sqlx::PgConnection::connect(ADMIN).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {ADMIN} (user postgres, trust auth); install and start it: {e}")
    });
    let tag = format!(
        "{:x}",
        Timestamp::now().0 as u64 ^ u64::from(std::process::id())
    );
    let db_name = format!("marketmux_test_mn_{tag}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 2, 1)
        .expect("create market_ticks");
    let brokers = cluster.bootstrap_servers();
    let result = tokio::spawn(run(
        tag.clone(),
        format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
        brokers,
    ))
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
    result.unwrap();
}

async fn run(tag: String, db: String, brokers: String) {
    let redis = std::env::var("MARKETMUX_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("mmtest:mn{tag}:");
    let cli = Cli::parse_from([
        "marketmux",
        "alerts",
        "--kafka-brokers",
        &brokers,
        "--database-url",
        &db,
        "--grpc-listen",
        "127.0.0.1:0",
        "--start-from",
        "earliest",
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix,
    ]);
    let Some(Role::Alerts(args)) = cli.role else {
        panic!("alerts role")
    };
    let alerts = marketmux::roles::alerts::start(args)
        .await
        .expect("alerts role starts (needs Redis at 127.0.0.1:6379)");
    let alerts_url = format!("http://{}", alerts.http_addr());

    let cli = Cli::parse_from([
        "marketmux",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix,
        "--alerts-url",
        &alerts_url,
        "--jwt-secret",
        SECRET,
        "--drain-secs",
        "0",
    ]);
    let Some(Role::Gateway(args)) = cli.role else {
        panic!("gateway role")
    };
    let gateway = marketmux::roles::gateway::start(args)
        .await
        .expect("gateway starts");
    let base = format!("http://{}", gateway.http_addr());

    // User 7's socket and alert; user 8's socket must hear nothing.
    let (mut ws7, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?token={}",
        gateway.http_addr(),
        token(7)
    ))
    .await
    .unwrap();
    let (mut ws8, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?token={}",
        gateway.http_addr(),
        token(8)
    ))
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/alerts"))
        .bearer_auth(token(7))
        .json(&json!({"symbol":"MNX","target_price":100.0,"condition":"ABOVE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // The alerts role indexed it when it was created through its API.

    let publisher = KafkaPublisher::new(&KafkaConfig::new(brokers.clone()), "test").unwrap();
    let tick = |p: f64| Tick::new(Symbol::new("MNX").unwrap(), p, Timestamp::now(), None).unwrap();
    publisher
        .publish(vec![tick(99.0), tick(101.0), tick(102.0)])
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws7.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "alert" {
                    break v;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no alert on user 7's socket within 30 s: {other:?}"),
        }
    };
    assert_eq!(alert["alert"]["user_id"], 7);
    assert_eq!(alert["alert"]["triggered_price"], 101.0);
    // Nothing for user 8, and nothing more for user 7 (fired once).
    for ws in [&mut ws8, &mut ws7] {
        let quiet = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if t.contains("\"alert\"") {
                        return t.to_string();
                    }
                }
            }
            String::new()
        })
        .await;
        assert!(
            quiet.is_err() || quiet.as_deref() == Ok(""),
            "unexpected alert: {quiet:?}"
        );
    }
    gateway.stop().await.unwrap();
    alerts.stop().await.unwrap();
}
