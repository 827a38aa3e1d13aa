//! Resuming streams across gateway nodes on one Redis, end to end: nodes
//! started as the binary starts them (`roles::gateway::start`), real sockets,
//! real Redis.
//!
//! - Most tests use the Redis at 127.0.0.1:6379 (or MARKETMUX_TEST_REDIS_URL),
//!   each under its own key prefix, and delete their keys at the end.
//! - The flush test starts a `redis-server` of its own (it empties it).

mod gateway_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fred::prelude::*;
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use marketmux_test_support::OwnRedis;
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use gateway_common::{admin, cleanup, redis_url, start_gateway};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "mmtest:{test}:{}:{}:{}:",
        std::process::id(),
        Timestamp::now().0,
        N.fetch_add(1, Relaxed)
    )
}

/// A gateway node on a free loopback port, with `extra` flags.
async fn gateway(url: &str, prefix: &str, extra: &[&str]) -> Node {
    let mut argv = vec!["--drain-secs", "0.2"];
    argv.extend_from_slice(extra);
    start_gateway(url, prefix, &argv).await
}

async fn client(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

/// The next JSON text message; panics after 5 s.
async fn next(ws: &mut Ws) -> Json {
    try_next(ws, Duration::from_secs(5))
        .await
        .expect("a message within 5 s")
}

async fn try_next(ws: &mut Ws, within: Duration) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()? {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(c))) => panic!("server closed the socket: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => panic!("socket ended"),
        }
    }
}

/// Sends a subscribe and returns its reply.
async fn subscribe(ws: &mut Ws, request: Json) -> Json {
    ws.send(Message::text(request.to_string())).await.unwrap();
    let reply = next(ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

/// The next `n` messages, each a tick: their (seq, price).
async fn ticks(ws: &mut Ws, n: usize) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let m = next(ws).await;
        assert_eq!(m["type"], "tick", "{m}");
        out.push((m["seq"].as_u64().unwrap(), m["price"].as_f64().unwrap()));
    }
    out
}

async fn quiet(ws: &mut Ws) {
    if let Some(m) = try_next(ws, Duration::from_millis(300)).await {
        panic!("unexpected message: {m}");
    }
}

/// Posts ticks of `symbol` at `prices` to `addr`, one request each.
async fn post(addr: SocketAddr, symbol: &str, prices: &[f64]) {
    let http = reqwest::Client::new();
    for p in prices {
        let body =
            json!({"symbol": symbol, "price": p, "timestamp": Timestamp::now().to_rfc3339()});
        let r = http
            .post(format!("http://{addr}/api/v1/ticks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Json) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

/// Two nodes number every tick alike; a client that leaves one node resumes
/// on the other with exactly the ticks it missed, then live ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let url = redis_url();
    let prefix = unique_prefix("resume");
    let admin = admin(&url).await;
    let a = gateway(&url, &prefix, &[]).await;
    let b = gateway(&url, &prefix, &[]).await;

    let mut on_a = client(a.http_addr()).await;
    let mut on_b = client(b.http_addr()).await;
    let reply_a = subscribe(&mut on_a, json!({"action":"subscribe","symbol":"ZZR"})).await;
    let reply_b = subscribe(&mut on_b, json!({"action":"subscribe","symbol":"ZZR"})).await;
    let epoch = reply_a["streams"]["ZZR"]["epoch"].clone();
    assert!(epoch.is_string(), "{reply_a}");
    assert_eq!(
        reply_b["streams"]["ZZR"]["epoch"], epoch,
        "one epoch on every node"
    );

    post(b.http_addr(), "ZZR", &[1.0, 2.0, 3.0]).await;
    let seen = [(1, 1.0), (2, 2.0), (3, 3.0)];
    assert_eq!(ticks(&mut on_a, 3).await, seen);
    assert_eq!(
        ticks(&mut on_b, 3).await,
        seen,
        "the same seq for the same tick"
    );
    drop(on_a);

    post(b.http_addr(), "ZZR", &[4.0, 5.0, 6.0]).await;
    assert_eq!(ticks(&mut on_b, 3).await, [(4, 4.0), (5, 5.0), (6, 6.0)]);
    let mut back = client(b.http_addr()).await;
    let reply = subscribe(
        &mut back,
        json!({"action":"subscribe","symbol":"ZZR","since":{"ZZR":{"seq":3,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(
        reply["streams"]["ZZR"],
        json!({"epoch": epoch, "seq": 6, "recovered": true})
    );
    assert_eq!(ticks(&mut back, 3).await, [(4, 4.0), (5, 5.0), (6, 6.0)]);
    post(a.http_addr(), "ZZR", &[7.0]).await;
    assert_eq!(ticks(&mut back, 1).await, [(7, 7.0)]);
    quiet(&mut back).await;

    let (status, page) = get(a.http_addr(), "/history/ZZR?since=3&limit=3").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["epoch"], epoch);
    let seqs: Vec<u64> = page["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);

    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

/// A position older than the history, of another epoch, or above the head
/// is not recovered: the client gets the latest tick; `GET /history` from
/// such a position answers 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_the_history_cannot_serve_get_the_latest_tick() {
    let url = redis_url();
    let prefix = unique_prefix("refused");
    let admin = admin(&url).await;
    let node = gateway(&url, &prefix, &["--history-size", "5"]).await;
    let prices: Vec<f64> = (1..=20).map(f64::from).collect();
    post(node.http_addr(), "ZZOLD", &prices).await;

    let (status, page) = get(node.http_addr(), "/history/ZZOLD").await;
    assert_eq!(status, 200, "{page}");
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    assert_eq!(page["ticks"].as_array().unwrap().len(), 5);
    let other = if epoch == "zz" { "zy" } else { "zz" };
    for (what, since) in [
        ("older than the history", json!({"seq": 3, "epoch": epoch})),
        ("another epoch", json!({"seq": 18, "epoch": other})),
        ("above the head", json!({"seq": 21, "epoch": epoch})),
    ] {
        let mut ws = client(node.http_addr()).await;
        let reply = subscribe(
            &mut ws,
            json!({"action":"subscribe","symbol":"ZZOLD","since":{"ZZOLD":since}}),
        )
        .await;
        assert_eq!(
            reply["streams"]["ZZOLD"],
            json!({"epoch": epoch, "seq": 20, "recovered": false}),
            "{what}"
        );
        assert_eq!(ticks(&mut ws, 1).await, [(20, 20.0)], "{what}");
        quiet(&mut ws).await;
    }
    let (status, body) = get(node.http_addr(), "/history/ZZOLD?since=3").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (410, &json!("history_gone"))
    );
    let (status, _) = get(node.http_addr(), "/history/ZZNEVER").await;
    assert_eq!(status, 404);

    node.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

/// Redis loses its data: the sequence starts again in a new epoch, and a
/// client that follows the symbol is told so before the new stream's first
/// tick; a position in the lost epoch is not recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_starts_a_new_epoch_and_subscribers_are_told() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let url = redis.url();
    let node = gateway(&url, "mm:", &[]).await;
    let mut ws = client(node.http_addr()).await;
    let reply = subscribe(&mut ws, json!({"action":"subscribe","symbol":"ZZF"})).await;
    let old = reply["streams"]["ZZF"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    post(node.http_addr(), "ZZF", &[1.0, 2.0]).await;
    assert_eq!(ticks(&mut ws, 2).await, [(1, 1.0), (2, 2.0)]);

    let admin = admin(&url).await;
    let _: () = admin.flushall(false).await.unwrap();
    post(node.http_addr(), "ZZF", &[3.0]).await;
    let notice = next(&mut ws).await;
    let new = notice["streams"]["ZZF"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old, "{notice}");
    assert_eq!(
        notice,
        json!({"type":"subscribed","symbols":["ZZF"],
               "streams":{"ZZF":{"epoch":new,"seq":1,"recovered":false}}})
    );
    assert_eq!(ticks(&mut ws, 1).await, [(1, 3.0)]);

    let mut again = client(node.http_addr()).await;
    let reply = subscribe(
        &mut again,
        json!({"action":"subscribe","symbol":"ZZF","since":{"ZZF":{"seq":2,"epoch":old}}}),
    )
    .await;
    assert_eq!(
        reply["streams"]["ZZF"],
        json!({"epoch": new, "seq": 1, "recovered": false})
    );
    assert_eq!(ticks(&mut again, 1).await, [(1, 3.0)]);
    node.stop().await.unwrap();
}

/// The seam under load on Redis: while 2,000 ticks/s of one symbol are
/// posted to one node, clients of another node leave and come back with
/// their position; each ends with every `seq` exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_while_two_thousand_ticks_a_second_arrive() {
    const CLIENTS: usize = 20;
    const BATCH: usize = 20; // every 10 ms: 2,000 ticks/s
    const BATCHES: usize = 200;
    let url = redis_url();
    let prefix = unique_prefix("seam");
    let admin = admin(&url).await;
    let feed_node = gateway(&url, &prefix, &[]).await;
    let node = gateway(&url, &prefix, &[]).await;
    let feed_addr = feed_node.http_addr();
    let feeder = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut every = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u32;
        for _ in 0..BATCHES {
            every.tick().await;
            let batch: Vec<Json> = (0..BATCH)
                .map(|_| {
                    n += 1;
                    json!({"symbol": "ZZSEAM", "price": 100.0 + f64::from(n % 1000) / 10.0,
                           "timestamp": Timestamp::now().to_rfc3339()})
                })
                .collect();
            let r = http
                .post(format!("http://{feed_addr}/api/v1/ticks"))
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    });

    let addr = node.http_addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 + 60 * c as u64)).await;
                let mut ws = client(addr).await;
                let reply =
                    subscribe(&mut ws, json!({"action":"subscribe","symbol":"ZZSEAM"})).await;
                let epoch = reply["streams"]["ZZSEAM"]["epoch"].clone();
                // The latest tick, then a few live ones.
                let mut seen: Vec<u64> = ticks(&mut ws, 5).await.iter().map(|t| t.0).collect();
                drop(ws);
                tokio::time::sleep(Duration::from_millis(20 + 13 * c as u64 % 100)).await;
                let mut ws = client(addr).await;
                let at = *seen.last().unwrap();
                let reply = subscribe(
                    &mut ws,
                    json!({"action":"subscribe","symbol":"ZZSEAM",
                           "since":{"ZZSEAM":{"seq":at,"epoch":epoch}}}),
                )
                .await;
                assert_eq!(reply["streams"]["ZZSEAM"]["recovered"], true, "{reply}");
                let last = (BATCH * BATCHES) as u64;
                while *seen.last().unwrap() < last {
                    let m = next(&mut ws).await;
                    assert_eq!(m["type"], "tick", "{m}");
                    seen.push(m["seq"].as_u64().unwrap());
                }
                (seen, at)
            })
        })
        .collect();
    feeder.await.unwrap();
    for (c, task) in clients.into_iter().enumerate() {
        let (seen, resumed_at) = task.await.unwrap();
        let first = seen[0];
        if let Some(i) = (0..seen.len()).find(|&i| seen[i] != first + i as u64) {
            panic!(
                "client {c} (resumed from {resumed_at}): after seq {} came {}, not {}: a gap or a duplicate",
                seen[i - 1],
                seen[i],
                first + i as u64
            );
        }
        assert_eq!(*seen.last().unwrap(), (BATCH * BATCHES) as u64);
    }
    feed_node.stop().await.unwrap();
    node.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}
