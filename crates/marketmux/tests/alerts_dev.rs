//! Alerts end to end on a `marketmux dev` node (in process, embedded store):
//! create over REST, a socket identified as the user hears the crossing once,
//! replays fire nothing, and a restart on the same data dir keeps the alerts.

mod dev_common;

use std::time::Duration;

use dev_common::start_dev;
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux_test_support::TempDir;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn post_tick(http: &reqwest::Client, base: &str, symbol: &str, price: f64) {
    let r = http
        .post(format!("{base}/api/v1/ticks"))
        .json(&json!({"symbol": symbol, "price": price, "timestamp": "2026-05-12T15:04:05Z"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "tick refused: {}", r.status());
}

/// The next text frame that is not a tick, pong or control reply, within `wait`.
async fn next_alert(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "alert" {
                    return Some(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

async fn identified_socket(addr: std::net::SocketAddr, user: i64) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"action":"identify","user_id":user}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(r#"{"action":"ping"}"#))
        .await
        .unwrap();
    // Requests are handled in order: the pong means identify is done.
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("pong in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "pong" {
                return ws;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_tick_pushes_the_alert_once_and_alerts_survive_a_restart() {
    let data = TempDir::new("alerts-dev");
    let http = reqwest::Client::new();

    let node = start_dev(data.path(), &[]).await;
    let addr = node.http_addr();
    let base = format!("http://{addr}");
    let r = http
        .post(format!("{base}/alerts"))
        .json(
            &json!({"user_id": 7, "symbol": "ZZTEST", "target_price": 100.0, "condition": "ABOVE"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    let keep = http
        .post(format!("{base}/alerts"))
        .json(
            &json!({"user_id": 7, "symbol": "ZZTEST", "target_price": 50.0, "condition": "BELOW"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), 201);
    let bad = http
        .post(format!("{base}/alerts"))
        .json(&json!({"user_id": 7, "symbol": "ZZTEST", "target_price": 1.0, "condition": "NEAR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_condition"
    );

    let mut mine = identified_socket(addr, 7).await;
    let mut other = identified_socket(addr, 8).await;

    post_tick(&http, &base, "ZZTEST", 99.0).await;
    assert!(
        next_alert(&mut mine, Duration::from_millis(300))
            .await
            .is_none(),
        "99 < 100"
    );

    post_tick(&http, &base, "ZZTEST", 101.0).await;
    let msg = next_alert(&mut mine, Duration::from_secs(5))
        .await
        .expect("the alert");
    assert_eq!(msg["alert"]["id"], id);
    assert_eq!(msg["alert"]["symbol"], "ZZTEST");
    assert_eq!(msg["alert"]["triggered_price"], 101.0);
    assert_eq!(msg["alert"]["active"], false);

    // Replays of the same ticks, and more crossings: nothing more.
    for p in [99.0, 101.0, 150.0, 101.0] {
        post_tick(&http, &base, "ZZTEST", p).await;
    }
    assert!(next_alert(&mut mine, Duration::from_millis(500))
        .await
        .is_none());
    assert!(
        next_alert(&mut other, Duration::from_millis(100))
            .await
            .is_none(),
        "user 8 hears nothing"
    );

    let listed: Value = http
        .get(format!("{base}/alerts?user_id=7"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 2);
    let active: Value = http
        .get(format!("{base}/alerts?user_id=7&active_only=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(active["alerts"].as_array().unwrap().len(), 1);
    drop((mine, other));
    node.stop().await.unwrap();

    // Restart on the same data dir: both alerts are there; the fired one stays fired.
    let node = start_dev(data.path(), &[]).await;
    let addr = node.http_addr();
    let base = format!("http://{addr}");
    let listed: Value = http
        .get(format!("{base}/alerts?user_id=7"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alerts = listed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "{listed}");
    let fired = alerts.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(fired["active"], false);
    assert_eq!(fired["triggered_price"], 101.0);

    let mut mine = identified_socket(addr, 7).await;
    post_tick(&http, &base, "ZZTEST", 200.0).await;
    assert!(
        next_alert(&mut mine, Duration::from_millis(500))
            .await
            .is_none(),
        "fired before the restart"
    );
    post_tick(&http, &base, "ZZTEST", 49.0).await;
    let msg = next_alert(&mut mine, Duration::from_secs(5))
        .await
        .expect("the BELOW alert, reloaded");
    assert_eq!(msg["alert"]["condition"], "BELOW");

    let r = http
        .delete(format!("{base}/alerts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(format!("{base}/alerts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    drop(mine);
    node.stop().await.unwrap();
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_database_url_uses_postgresql() {
    use sqlx::Connection as _;
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {admin} (user postgres, trust auth); install and start it: {e}")
    });
    let name = format!("marketmux_test_{:016x}", rand_id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let data = TempDir::new("alerts-devpg");
    let outcome = tokio::spawn({
        let (url, data) = (url.clone(), data.path().to_path_buf());
        async move {
            let http = reqwest::Client::new();
            let node = start_dev(&data, &["--database-url", &url]).await;
            let addr = node.http_addr();
            let base = format!("http://{addr}");
            let r = http
                .post(format!("{base}/alerts"))
                .json(&json!({"user_id": 3, "symbol": "ZZPG", "target_price": 10.0, "condition": "BELOW"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let mut ws = identified_socket(addr, 3).await;
            post_tick(&http, &base, "ZZPG", 9.5).await;
            let msg = next_alert(&mut ws, Duration::from_secs(5)).await.expect("the alert");
            assert_eq!(msg["alert"]["triggered_price"], 9.5);
            drop(ws);
            node.stop().await.unwrap();
        }
    })
    .await;
    let rows: i64 = {
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM alerts WHERE NOT active")
            .fetch_one(&mut db)
            .await
            .unwrap_or(-1)
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
    let sqlite_made = data.path().join("alerts.sqlite3").exists();
    outcome.unwrap();
    assert_eq!(rows, 1, "the fired alert is stored in PostgreSQL");
    assert!(!sqlite_made, "no embedded store when PostgreSQL is given");
}
