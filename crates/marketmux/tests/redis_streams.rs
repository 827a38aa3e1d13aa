//! One stream per symbol across gateway nodes on one Redis, over real
//! sockets: ticks posted at either node reach the clients of both with the
//! same `seq`, one more per tick, in order; a node started later continues
//! the sequence; after Redis loses its data the sequence starts again. Uses the Redis at 127.0.0.1:6379 (or
//! MARKETMUX_TEST_REDIS_URL) under a key prefix of its own, deleted at the end.

mod gateway_common;

use std::net::SocketAddr;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use gateway_common::{admin, cleanup, redis_url, start_gateway};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn gateway(url: &str, prefix: &str) -> Node {
    gateway_with(url, prefix, &[]).await
}

async fn gateway_with(url: &str, prefix: &str, extra: &[&str]) -> Node {
    let mut argv = vec!["--drain-secs", "0"];
    argv.extend_from_slice(extra);
    start_gateway(url, prefix, &argv).await
}

async fn subscribed(addr: SocketAddr, symbol: &str) -> Ws {
    subscribed_to(addr, &[symbol]).await
}

async fn subscribed_to(addr: SocketAddr, symbols: &[&str]) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"action": "subscribe", "symbols": symbols}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let j = next(&mut ws).await;
        if j["type"] == "subscribed" {
            return ws;
        }
    }
}

async fn next(ws: &mut Ws) -> Json {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// `(symbol, price, seq)` of the next `n` ticks.
async fn named_ticks(ws: &mut Ws, n: usize) -> Vec<(String, f64, u64)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let j = next(ws).await;
        if j["type"] == "tick" {
            got.push((
                j["symbol"].as_str().unwrap().to_owned(),
                j["price"].as_f64().unwrap(),
                j["seq"].as_u64().unwrap_or(0),
            ));
        }
    }
    got
}

/// `(price, seq)` of the next `n` ticks.
async fn ticks(ws: &mut Ws, n: usize) -> Vec<(f64, u64)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let j = next(ws).await;
        if j["type"] == "tick" {
            got.push((j["price"].as_f64().unwrap(), j["seq"].as_u64().unwrap_or(0)));
        }
    }
    got
}

async fn post(addr: SocketAddr, symbol: &str, prices: &[f64]) {
    let body: Vec<Json> = prices
        .iter()
        .map(|p| json!({"symbol": symbol, "price": p, "timestamp": Timestamp::now().to_rfc3339()}))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/ticks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_send_the_same_seq_for_the_same_tick() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = format!(
        "mmtest:streams:{}:{}:",
        std::process::id(),
        Timestamp::now().0
    );
    let (a, b) = (gateway(&url, &prefix).await, gateway(&url, &prefix).await);
    let mut on_a = subscribed(a.http_addr(), "SEQ").await;
    let mut on_b = subscribed(b.http_addr(), "SEQ").await;
    // Posted at both nodes, alternately: one sequence for the symbol.
    for round in 0..5 {
        let base = f64::from(round * 10);
        post(a.http_addr(), "SEQ", &[base + 1.0, base + 2.0]).await;
        post(b.http_addr(), "SEQ", &[base + 3.0]).await;
    }
    let want: Vec<(f64, u64)> = (0..5)
        .flat_map(|r| {
            let base = f64::from(r * 10);
            [base + 1.0, base + 2.0, base + 3.0]
        })
        .zip(1..)
        .collect();
    assert_eq!(ticks(&mut on_a, 15).await, want);
    assert_eq!(ticks(&mut on_b, 15).await, want);

    // A node that starts now continues the same sequence (its snapshot is
    // the latest tick, with its seq), rather than numbering from 1.
    let c = gateway(&url, &prefix).await;
    let mut on_c = subscribed(c.http_addr(), "SEQ").await;
    assert_eq!(ticks(&mut on_c, 1).await, [(43.0, 15)]);
    post(c.http_addr(), "SEQ", &[50.0]).await;
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(ticks(ws, 1).await, [(50.0, 16)]);
    }
    c.stop().await.unwrap();

    // Redis loses its data: the sequence starts again at 1 on both nodes.
    let cleared: i64 = admin
        .custom(
            CustomCommand::new_static("DEL", ClusterHash::FirstKey, false),
            vec![
                format!("{prefix}stream:{{{prefix}price:SEQ}}"),
                format!("{prefix}history:{{{prefix}price:SEQ}}"),
                format!("{prefix}price:SEQ"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(cleared, 3);
    post(b.http_addr(), "SEQ", &[99.0]).await;
    assert_eq!(ticks(&mut on_a, 1).await, [(99.0, 1)]);
    assert_eq!(ticks(&mut on_b, 1).await, [(99.0, 1)]);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

/// Two gateways with `--redis-sharded` on a Redis Cluster of three masters
/// (started here): symbols on every master, ticks posted at either node
/// reach both nodes' clients with the same seqs, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_gateways_on_a_redis_cluster_share_one_stream_per_symbol() {
    let cluster = marketmux_test_support::OwnRedisCluster::start().await;
    let url = cluster.url();
    let prefix = format!("mmtest:cl:{}:", Timestamp::now().0);
    let keys = marketmux_bus::redis::KeySpace::new(&prefix, true).unwrap();
    let symbols: Vec<String> = (0..12).map(|i| format!("CL{i}")).collect();
    let thirds: std::collections::HashSet<u16> = symbols
        .iter()
        .map(|s| {
            let s = marketmux_core::Symbol::new(s).unwrap();
            fred::util::redis_keyslot(keys.price_key(&s).as_bytes()) / 5462
        })
        .collect();
    assert_eq!(thirds.len(), 3, "symbols on every master");
    let sharded = ["--redis-sharded"];
    let a = gateway_with(&url, &prefix, &sharded).await;
    let b = gateway_with(&url, &prefix, &sharded).await;
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let mut on_a = subscribed_to(a.http_addr(), &names).await;
    let mut on_b = subscribed_to(b.http_addr(), &names).await;
    // A subscribe without `since` may miss a tick published before the
    // node's SSUBSCRIBE took effect (each master is a connection of its
    // own): start once both nodes are subscribed on every master.
    let admin = admin(&url).await;
    for s in &symbols {
        let channel = keys.channel(&marketmux_core::Symbol::new(s).unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v: fred::types::Value = admin.pubsub_shardnumsub(&channel).await.unwrap();
            let pair: Vec<fred::types::Value> = v.convert().unwrap();
            if pair[1].as_i64() == Some(2) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} not subscribed by both nodes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for round in 0..3 {
        let at = if round % 2 == 0 { &a } else { &b };
        for s in &symbols {
            post(at.http_addr(), s, &[f64::from(round + 1)]).await;
        }
    }
    let n = symbols.len() * 3;
    let (got_a, got_b) = (
        named_ticks(&mut on_a, n).await,
        named_ticks(&mut on_b, n).await,
    );
    for s in &symbols {
        let of = |got: &[(String, f64, u64)]| -> Vec<(f64, u64)> {
            got.iter()
                .filter(|t| &t.0 == s)
                .map(|t| (t.1, t.2))
                .collect()
        };
        assert_eq!(of(&got_a), [(1.0, 1), (2.0, 2), (3.0, 3)], "{s} on A");
        assert_eq!(of(&got_b), of(&got_a), "{s} on B");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
