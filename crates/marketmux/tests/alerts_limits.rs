//! The per-user cap and paging of `/alerts` over real HTTP on a `marketmux
//! dev` node, on the embedded store and on PostgreSQL: 50 parallel creates
//! for one user with `--max-alerts-per-user 10` store exactly 10 (the rest
//! answer 409 `too_many_alerts`), and `GET /alerts` pages walk them all.

mod dev_common;

use dev_common::start_dev;
use marketmux::node::Node;
use marketmux_core::Timestamp;
use marketmux_test_support::TempDir;
use serde_json::{json, Value};
use sqlx::Connection as _;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CAP: usize = 10;

async fn start_limited(dir: &TempDir, database_url: Option<&str>) -> Node {
    let cap = CAP.to_string();
    let mut extra = vec!["--max-alerts-per-user", &cap];
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    start_dev(dir.path(), &extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_parallel_creates_on_the_embedded_store() {
    let dir = TempDir::new("alerts-limits");
    let node = start_limited(&dir, None).await;
    check_cap_and_pages(&node).await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_parallel_creates_on_postgres() {
    let mut conn = sqlx::PgConnection::connect(ADMIN).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {ADMIN} (user postgres, trust auth); install and start it: {e}")
    });
    let name = format!(
        "marketmux_test_limits_{:016x}",
        Timestamp::now().0 as u64 ^ u64::from(std::process::id()) << 32
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let result = tokio::spawn(async move {
        let dir = TempDir::new("alerts-limits");
        let node = start_limited(&dir, Some(&url)).await;
        check_cap_and_pages(&node).await;
        node.stop().await.unwrap();
    })
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
    result.unwrap();
}

async fn check_cap_and_pages(node: &Node) {
    let base = format!("http://{}", node.http_addr());
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/alerts"))
                .json(&json!({"user_id": 7, "symbol": "AAPL", "target_price": 100.0 + f64::from(i), "condition": "ABOVE"}))
                .send()
                .await
                .expect("POST /alerts");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("a JSON answer");
            (status, body)
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => created += 1,
            409 => {
                assert_eq!(body["error"]["code"], "too_many_alerts", "{body}");
                assert!(body["error"]["message"].is_string(), "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, refused), (CAP, 50 - CAP));

    // Pages of 3: 3 + 3 + 3 + 1, ascending ids, each alert once.
    let mut ids = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{base}/alerts?user_id=7&limit=3");
        if let Some(a) = after {
            url.push_str(&format!("&after_id={a}"));
        }
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        pages += 1;
        ids.extend(
            page["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap()),
        );
        match page.get("next_after_id").and_then(Value::as_i64) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ascending, no duplicate");
    assert_eq!(ids.len(), CAP);

    for bad in ["limit=0", "limit=1001", "after_id=-4", "limit=x"] {
        let r = http
            .get(format!("{base}/alerts?user_id=7&{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_query", "{bad}: {e}");
    }
}
