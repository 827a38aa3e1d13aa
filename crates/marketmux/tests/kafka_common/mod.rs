//! The whole pipeline, in-process, against any Kafka-protocol broker:
//! `POST /api/v1/ticks` on two gateways → Kafka → two bridges (one killed
//! mid-stream) → Redis → both gateways → WebSocket clients.
//!
//! Used by `kafka_mock.rs` (librdkafka's mock cluster) and `kafka_tansu.rs`
//! (a tansu broker started by scripts/test). Needs the Redis at
//! 127.0.0.1:6379 (or MARKETMUX_TEST_REDIS_URL); keys live under a unique
//! prefix and are deleted at the end.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux::cli::{Cli, Role};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use marketmux_kafka::{KafkaConfig, StartFrom, TickConsumer};
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use tokio_tungstenite::tungstenite::Message;

#[path = "../redis_common/mod.rs"]
mod redis_common;
pub use redis_common::{admin, cleanup, redis_url};

use crate::scrape::scrape;
use marketmux_test_support::{eventually, wait_for};

/// A tag unique to this run, usable in symbols and key prefixes.
pub fn run_tag() -> String {
    let now = Timestamp::now().0 as u64 % 0x00FF_FFFF_FFFF;
    format!("K{:X}", now ^ u64::from(std::process::id()))
}

fn role(args: &[&str]) -> Role {
    let mut argv = vec!["marketmux"];
    argv.extend_from_slice(args);
    Cli::parse_from(argv).role.expect("a role")
}

pub async fn gateway(brokers: &str, redis: &str, prefix: &str) -> Node {
    let Role::Gateway(args) = role(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--kafka-brokers",
        brokers,
    ]) else {
        unreachable!()
    };
    marketmux::roles::gateway::start(args)
        .await
        .expect("gateway starts")
}

pub async fn bridge(brokers: &str, redis: &str, prefix: &str, group: &str) -> Node {
    let Role::Bridge(args) = role(&[
        "bridge",
        "--kafka-brokers",
        brokers,
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--group",
        group,
        "--start-from",
        "earliest",
        "--metrics-listen",
        "127.0.0.1:0",
    ]) else {
        unreachable!()
    };
    marketmux::roles::bridge::start(args)
        .await
        .expect("bridge starts")
}

/// Last price seen per symbol on one socket, every distinct price it got,
/// how many ticks, and the `seq`s of each symbol in arrival order.
#[derive(Default)]
pub struct SocketView {
    pub last: HashMap<String, f64>,
    pub prices: HashSet<u64>,
    pub ticks: usize,
    pub seqs: HashMap<String, Vec<u64>>,
}

impl SocketView {
    /// Symbols whose `seq` did not increase from one tick to the next (a
    /// tick seen twice, or an older one after a newer one).
    pub fn out_of_order(&self) -> Vec<String> {
        self.seqs
            .iter()
            .filter(|(_, s)| s.windows(2).any(|w| w[0] >= w[1]) || s.contains(&0))
            .map(|(sym, s)| format!("{sym}: {s:?}"))
            .collect()
    }
}

/// A client on `addr` following `symbols`; its view is updated in the background.
pub async fn socket(addr: SocketAddr, symbols: &[String]) -> Arc<Mutex<SocketView>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket");
    ws.send(Message::text(
        json!({"action": "subscribe", "symbols": symbols}).to_string(),
    ))
    .await
    .unwrap();
    let view = Arc::new(Mutex::new(SocketView::default()));
    let v = view.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("subscribed within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            let j: Json = serde_json::from_str(&t).unwrap();
            if j["type"] == "subscribed" {
                break;
            }
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let j: Json = serde_json::from_str(&t).unwrap_or(Json::Null);
                if j["type"] == "tick" {
                    let mut v = v.lock();
                    let price = j["price"].as_f64().unwrap_or_default();
                    let symbol = j["symbol"].as_str().unwrap_or_default().to_owned();
                    v.ticks += 1;
                    v.prices.insert(price as u64);
                    let seq = j["seq"].as_u64().unwrap_or_default();
                    v.seqs.entry(symbol.clone()).or_default().push(seq);
                    v.last.insert(symbol, price);
                }
            }
        }
    });
    view
}

/// What was published on the prefix's tick channels for this run's symbols.
#[derive(Default)]
pub struct Published {
    /// Every distinct price.
    pub prices: HashSet<u64>,
    /// Every message (a tick published twice counts twice).
    pub messages: usize,
}

impl Published {
    pub fn len(&self) -> usize {
        self.prices.len()
    }
}

/// Every distinct price of this run's symbols (named `{tag}...`) published
/// on the prefix's tick channels. The bridges read the topic from its start,
/// so other tests' ticks on a shared broker are published too: they are ignored.
pub async fn channel_watch(
    redis: &str,
    prefix: &str,
    tag: &str,
) -> (SubscriberClient, Arc<Mutex<Published>>) {
    let config = marketmux_bus::RedisConfig {
        url: redis.into(),
        ..Default::default()
    };
    let sub = config.connect_subscriber().await.expect("redis subscriber");
    let seen = Arc::new(Mutex::new(Published::default()));
    let s = seen.clone();
    let tag = tag.to_owned();
    let mut rx = sub.message_rx();
    tokio::spawn(async move {
        while let Ok(m) = rx.recv().await {
            let text: String = m.value.convert().unwrap_or_default();
            let j: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
            let ours = j["symbol"].as_str().is_some_and(|s| s.starts_with(&tag));
            if let (true, Some(p)) = (ours, j["price"].as_f64()) {
                let mut s = s.lock();
                s.prices.insert(p as u64);
                s.messages += 1;
            }
        }
    });
    sub.psubscribe(format!("{prefix}ticks:*"))
        .await
        .expect("psubscribe");
    (sub, seen)
}

/// Runs the pipeline with `n` ticks over 8 symbols and checks that none is lost.
/// `exactly_once_in_kafka`: the broker keeps no duplicate of a retried
/// idempotent produce (true of librdkafka's mock cluster and of Kafka; tansu
/// has been seen to keep a few under load).
pub async fn pipeline(brokers: &str, n: usize, exactly_once_in_kafka: bool) {
    const CHUNK: usize = 50;
    let redis = redis_url();
    let admin = admin(&redis).await;
    let tag = run_tag();
    let prefix = format!("mmtest:kafka:{tag}:");
    let symbols: Vec<String> = (0..8).map(|i| format!("{tag}.S{i}")).collect();
    let group = format!("mmtest-bridge-{tag}");

    let (ga, gb) = (
        gateway(brokers, &redis, &prefix).await,
        gateway(brokers, &redis, &prefix).await,
    );
    let bridge_a = bridge(brokers, &redis, &prefix, &group).await;
    let bridge_b = bridge(brokers, &redis, &prefix, &group).await;
    let (_sub, published) = channel_watch(&redis, &prefix, &tag).await;
    let views = [
        socket(ga.http_addr(), &symbols).await,
        socket(ga.http_addr(), &symbols).await,
        socket(gb.http_addr(), &symbols).await,
        socket(gb.http_addr(), &symbols).await,
    ];

    // Tick i: symbol i % 8, unique price i + 1, increasing timestamps.
    let t0 = Timestamp::now().0;
    let mut latest: HashMap<String, f64> = HashMap::new();
    let http = reqwest::Client::new();
    let mut bridge_a = Some(bridge_a);
    for (c, start) in (0..n).step_by(CHUNK).enumerate() {
        let body: Vec<Json> = (start..(start + CHUNK).min(n))
            .map(|i| {
                let symbol = &symbols[i % symbols.len()];
                let price = (i + 1) as f64;
                latest.insert(symbol.clone(), price);
                json!({"symbol": symbol, "price": price, "timestamp": Timestamp(t0 + i as i64 * 1_000).to_rfc3339()})
            })
            .collect();
        let addr = if c % 2 == 0 {
            ga.http_addr()
        } else {
            gb.http_addr()
        };
        let r = http
            .post(format!("http://{addr}/api/v1/ticks"))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(
            r.status().as_u16(),
            202,
            "{}",
            r.text().await.unwrap_or_default()
        );
        if c == 0 {
            // The bridges are consuming before we go on.
            eventually(
                "the first chunk in Redis pub/sub",
                Duration::from_secs(60),
                || published.lock().len() >= CHUNK,
            )
            .await;
        }
        if start >= n / 2 {
            if let Some(killed) = bridge_a.take() {
                // Killed mid-stream: no graceful stop, whatever it had not committed is read again.
                killed.task.abort();
                let _ = killed.task.await;
            }
        }
    }

    // N in Kafka: a fresh group reads the topic from the start.
    let counter = TickConsumer::new(
        &KafkaConfig::new(brokers),
        &format!("mmtest-count-{tag}"),
        StartFrom::Earliest,
    )
    .unwrap();
    let mut in_kafka = 0usize;
    let mut prices = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while prices.len() < n && Instant::now() < deadline {
        if let Ok(Ok(batch)) =
            tokio::time::timeout(Duration::from_millis(500), counter.next_batch()).await
        {
            for t in batch
                .ticks
                .iter()
                .filter(|t| t.tick.symbol.as_str().starts_with(&tag))
            {
                in_kafka += 1;
                prices.insert(t.tick.price as u64);
            }
        }
    }
    assert_eq!(prices.len(), n, "every posted tick is in Kafka");
    if exactly_once_in_kafka {
        assert_eq!(
            in_kafka, n,
            "and only once (idempotent producer, one POST each)"
        );
    } else if in_kafka != n {
        eprintln!("the broker stored {} duplicate records", in_kafka - n);
    }
    drop(counter);

    // N through the surviving bridge into Redis pub/sub.
    eventually(
        "every tick published in Redis",
        Duration::from_secs(60),
        || published.lock().len() == n,
    )
    .await;
    assert_eq!(
        published.lock().prices,
        (1..=n as u64).collect::<HashSet<u64>>()
    );

    // The latest of each symbol in Redis and on both gateways' /price.
    for symbol in &symbols {
        let stored: String = admin.get(format!("{prefix}price:{symbol}")).await.unwrap();
        let stored: Json = serde_json::from_str(&stored).unwrap();
        assert_eq!(
            stored["price"].as_f64(),
            Some(latest[symbol]),
            "{symbol} in Redis"
        );
        for g in [&ga, &gb] {
            let j: Json = http
                .get(format!("http://{}/price/{symbol}", g.http_addr()))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                j["price"].as_f64(),
                Some(latest[symbol]),
                "/price/{symbol}: {j}"
            );
        }
    }
    // Every socket on both gateways ends on the latest price of every symbol.
    for (i, view) in views.iter().enumerate() {
        eventually(
            &format!("socket {i} on the latest prices"),
            Duration::from_secs(30),
            || {
                let v = view.lock();
                symbols.iter().all(|s| v.last.get(s) == Some(&latest[s]))
            },
        )
        .await;
    }
    // None lost on the way to the sockets either: the queues never reach their
    // conflation bound here, so every socket saw every one of the n prices.
    let all: HashSet<u64> = (1..=n as u64).collect();
    for (i, view) in views.iter().enumerate() {
        eventually(
            &format!("socket {i} received all {n} ticks"),
            Duration::from_secs(30),
            || view.lock().prices == all,
        )
        .await;
        let v = view.lock();
        assert_eq!(v.ticks, n, "socket {i}: {} ticks for {n} prices", v.ticks);
        assert_eq!(v.out_of_order(), Vec::<String>::new(), "socket {i}");
    }
    // A record the surviving bridge read again reached Redis' channels at most once.
    if exactly_once_in_kafka {
        assert_eq!(published.lock().messages, n, "published once each");
    }

    bridge_b.stop().await.unwrap();
    ga.stop().await.unwrap();
    gb.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

/// Every record read twice: a second bridge (a group of its own, from the
/// topic's start) re-reads every record a first bridge forwarded, as a
/// surviving bridge re-reads a dead one's uncommitted batch. Redis drops
/// them where `seq` is assigned: nothing is published again, no socket gets
/// a tick twice, and the second bridge counts them as dropped duplicates.
/// Needs a topic of its own (a fresh broker).
pub async fn every_record_read_twice(brokers: &str) {
    const N: usize = 200;
    let redis = redis_url();
    let admin = admin(&redis).await;
    let tag = run_tag();
    let prefix = format!("mmtest:redeliver:{tag}:");
    let symbols: Vec<String> = (0..4).map(|i| format!("{tag}.R{i}")).collect();
    let gw = gateway(brokers, &redis, &prefix).await;
    let first = bridge(brokers, &redis, &prefix, &format!("mmtest-first-{tag}")).await;
    let (_sub, published) = channel_watch(&redis, &prefix, &tag).await;
    let view = socket(gw.http_addr(), &symbols).await;
    let t0 = Timestamp::now().0;
    let body: Vec<Json> = (0..N)
        .map(|i| {
            json!({"symbol": symbols[i % symbols.len()], "price": (i + 1) as f64,
                        "timestamp": Timestamp(t0 + i as i64 * 1_000).to_rfc3339()})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/ticks", gw.http_addr()))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    eventually("the socket got every tick", Duration::from_secs(60), || {
        view.lock().prices.len() == N
    })
    .await;
    first.stop().await.unwrap();

    let second = bridge(brokers, &redis, &prefix, &format!("mmtest-second-{tag}")).await;
    let mut dropped = 0.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dropped < N as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = scrape(second.metrics_addr()).await;
        dropped = m["marketmux_bridge_dropped_duplicates_total"];
    }
    assert_eq!(
        dropped, N as f64,
        "the second bridge's records were all dropped"
    );
    let m = scrape(second.metrics_addr()).await;
    assert_eq!(m["marketmux_bridge_ticks_forwarded_total"], 0.0);
    // Anything published again would have arrived by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(published.lock().messages, N, "each tick published once");
    let (ticks, out_of_order) = {
        let v = view.lock();
        (v.ticks, v.out_of_order())
    };
    assert_eq!(ticks, N, "no socket got a tick twice");
    assert_eq!(out_of_order, Vec::<String>::new());
    second.stop().await.unwrap();
    gw.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

/// A fake Finnhub: accepts one client, waits for its subscriptions, then
/// sends `batches` trade batches of `per_batch` trades over `symbols`
/// (prices 1, 2, 3, ... in order) and keeps the socket open.
async fn fake_finnhub(symbols: Vec<String>, batches: usize, per_batch: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut subscribed = 0;
        while subscribed < symbols.len() {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let j: Json = serde_json::from_str(&t).unwrap();
                assert_eq!(j["type"], "subscribe");
                subscribed += 1;
            }
        }
        let t0 = Timestamp::now().0 / 1_000_000;
        for b in 0..batches {
            let data: Vec<Json> = (0..per_batch)
                .map(|k| {
                    let i = b * per_batch + k;
                    json!({"s": symbols[i % symbols.len()], "p": (i + 1) as f64, "v": 1, "t": t0 + i as i64})
                })
                .collect();
            let frame = json!({"type": "trade", "data": data}).to_string();
            ws.send(Message::text(frame)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Hold the connection until the client goes away.
        while let Some(Ok(_)) = ws.next().await {}
    });
    addr
}

/// Finnhub (fake) → `marketmux ingest` → Kafka → bridge → Redis → gateway → socket.
pub async fn ingest_pipeline(brokers: &str) {
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 10;
    let n = BATCHES * PER_BATCH;
    let redis = redis_url();
    let admin = admin(&redis).await;
    let tag = run_tag();
    let prefix = format!("mmtest:ingest:{tag}:");
    let symbols: Vec<String> = (0..4).map(|i| format!("{tag}.F{i}")).collect();
    let gw = gateway(brokers, &redis, &prefix).await;
    let bridge = bridge(brokers, &redis, &prefix, &format!("mmtest-ingest-{tag}")).await;
    let (_sub, published) = channel_watch(&redis, &prefix, &tag).await;
    let view = socket(gw.http_addr(), &symbols).await;

    let finnhub = fake_finnhub(symbols.clone(), BATCHES, PER_BATCH).await;
    let url = format!("ws://{finnhub}");
    let list = symbols.join(",");
    let Role::Ingest(args) = role(&[
        "ingest",
        "--kafka-brokers",
        brokers,
        "--finnhub-url",
        &url,
        "--finnhub-token",
        "test",
        "--symbols",
        &list,
        "--metrics-listen",
        "127.0.0.1:0",
    ]) else {
        unreachable!()
    };
    let ingest = marketmux::roles::ingest::start(args)
        .await
        .expect("ingest starts");

    eventually(
        "every trade published in Redis",
        Duration::from_secs(60),
        || published.lock().len() == n,
    )
    .await;
    // Trade i has price i + 1: the last of each symbol is among the last batch.
    let latest: HashMap<&String, f64> = symbols
        .iter()
        .enumerate()
        .map(|(k, s)| (s, (n - symbols.len() + k + 1) as f64))
        .collect();
    eventually(
        "the socket on the latest prices",
        Duration::from_secs(30),
        || {
            let v = view.lock();
            symbols.iter().all(|s| v.last.get(s) == Some(&latest[s]))
        },
    )
    .await;
    // Each role's /metrics counts what went through it.
    assert!(marketmux_metrics::install_global_recorder());
    let fed = scrape(ingest.metrics_addr()).await;
    assert_eq!(fed["marketmux_ingest_trades_total"], n as f64);
    assert_eq!(fed["marketmux_ingest_published_total"], n as f64);
    assert_eq!(fed["marketmux_component_up{component=\"kafka\"}"], 1.0);
    // The bridge counts a batch once Redis's reply is in, which can come
    // after a subscriber has already seen the batch's ticks.
    let forwarded = wait_for(
        "the bridge to count every forwarded tick",
        Duration::from_secs(10),
        || async {
            let m = scrape(bridge.metrics_addr()).await;
            (m["marketmux_bridge_ticks_forwarded_total"] >= n as f64).then_some(m)
        },
    )
    .await;
    assert!(forwarded["marketmux_bridge_ticks_forwarded_total"] >= n as f64);
    assert!(forwarded["marketmux_bridge_records_total"] >= n as f64);
    assert_eq!(forwarded["marketmux_bridge_undecodable_total"], 0.0);
    ingest.stop().await.unwrap();
    bridge.stop().await.unwrap();
    gw.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}
