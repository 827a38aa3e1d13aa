//! Gateway nodes on the Redis edge bus, in-process (`roles::gateway::start`),
//! against a real Redis.
//!
//! - Most tests use the Redis at 127.0.0.1:6379 (or MARKETMUX_TEST_REDIS_URL),
//!   each under its own key prefix, and delete their keys at the end.
//! - The restart test starts its own `redis-server` on a free port, kills it
//!   and starts it again on the same port.

mod gateway_common;
mod scrape;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser as _;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux::cli::{Cli, Role};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use marketmux_test_support::OwnRedis;
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use gateway_common::{admin, cleanup, redis_url, start_gateway};
use marketmux_test_support::wait_for_value;
use scrape::scrape;

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

async fn numsub(admin: &Client, channel: &str) -> i64 {
    let v: Vec<Value> = admin.pubsub_numsub(channel).await.unwrap();
    v[1].clone().convert().unwrap()
}

/// Starts a gateway node on a free loopback port.
async fn gateway(url: &str, prefix: &str) -> Node {
    gateway_with(url, prefix, &[]).await
}

/// Starts a gateway node with `extra` flags.
async fn gateway_with(url: &str, prefix: &str, extra: &[&str]) -> Node {
    let mut argv = vec!["--redis-unsubscribe-linger-secs", "0.3"];
    argv.extend_from_slice(extra);
    start_gateway(url, prefix, &argv).await
}

async fn client(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, msg: Json) {
    ws.send(Message::text(msg.to_string())).await.unwrap();
}

/// The next JSON text message, within `within`.
async fn next_json(ws: &mut Ws, within: Duration) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match msg {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(c))) => panic!("server closed the socket: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => panic!("socket ended"),
        }
    }
}

/// Waits for a message of `kind` (and of `symbol`, for ticks), skipping others.
async fn expect(ws: &mut Ws, kind: &str, symbol: Option<&str>) -> Json {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(m) = next_json(ws, deadline.saturating_duration_since(Instant::now())).await {
        if m["type"] == kind && symbol.is_none_or(|s| m["symbol"] == s) {
            return m;
        }
    }
    panic!("no {kind} message for {symbol:?} within 5 s");
}

async fn subscribe(ws: &mut Ws, symbol: &str) {
    send(ws, json!({"action": "subscribe", "symbol": symbol})).await;
    expect(ws, "subscribed", None).await;
}

fn tick(symbol: &str, price: f64, ts: Timestamp) -> Json {
    json!({"symbol": symbol, "price": price, "timestamp": ts.to_rfc3339()})
}

/// The status of `POST /api/v1/ticks` (0 if the request itself failed).
async fn post(http: &reqwest::Client, addr: SocketAddr, body: &Json) -> u16 {
    http.post(format!("http://{addr}/api/v1/ticks"))
        .json(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Json) {
    let r = http
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

#[tokio::test]
async fn a_tick_posted_at_one_node_reaches_the_clients_and_price_of_another() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = unique_prefix("two-nodes");
    let (a, b) = (gateway(&url, &prefix).await, gateway(&url, &prefix).await);
    let (a_addr, b_addr) = (a.http_addr(), b.http_addr());
    let http = reqwest::Client::new();
    let (aapl, msft) = (format!("{prefix}ticks:AAPL"), format!("{prefix}ticks:MSFT"));

    // Interest: nobody follows AAPL yet, so no node is subscribed to it.
    assert_eq!(numsub(&admin, &aapl).await, 0);
    let mut ws = client(b_addr).await;
    subscribe(&mut ws, "AAPL").await;
    // Exactly one subscriber: B's one connection; A has no client for it.
    wait_for_value("B subscribed to AAPL", 1, Duration::from_secs(5), || {
        numsub(&admin, &aapl)
    })
    .await;
    assert_eq!(numsub(&admin, &msft).await, 0);

    let now = Timestamp::now();
    assert_eq!(post(&http, a_addr, &tick("AAPL", 123.45, now)).await, 202);
    let got = expect(&mut ws, "tick", Some("AAPL")).await;
    assert_eq!(got["price"], 123.45);
    assert_eq!(got["timestamp"], now.to_rfc3339());
    let (status, price) = get(&http, b_addr, "/price/AAPL").await;
    assert_eq!(status, 200, "{price}");
    assert_eq!(price["price"], 123.45);
    assert_eq!(get(&http, b_addr, "/price/MSFT").await.0, 404);

    // Out of order through REST: the older tick is delivered (accepted order)
    // but does not replace the newer latest price.
    let newer = Timestamp(now.0 + 2_000_000);
    let older = Timestamp(now.0 + 1_000_000);
    let body = json!([tick("AAPL", 130.0, newer), tick("AAPL", 125.0, older)]);
    assert_eq!(post(&http, a_addr, &body).await, 202);
    assert_eq!(expect(&mut ws, "tick", Some("AAPL")).await["price"], 130.0);
    assert_eq!(expect(&mut ws, "tick", Some("AAPL")).await["price"], 125.0);
    assert_eq!(get(&http, b_addr, "/price/AAPL").await.1["price"], 130.0);
    assert_eq!(get(&http, a_addr, "/price/AAPL").await.1["price"], 130.0);

    // Snapshot from Redis for a symbol B has never seen.
    assert_eq!(post(&http, a_addr, &tick("NVDA", 900.5, now)).await, 202);
    let mut second = client(b_addr).await;
    subscribe(&mut second, "NVDA").await;
    assert_eq!(
        expect(&mut second, "tick", Some("NVDA")).await["price"],
        900.5
    );

    // The last client leaves: B unsubscribes after the linger.
    send(&mut ws, json!({"action": "unsubscribe", "symbol": "AAPL"})).await;
    expect(&mut ws, "unsubscribed", None).await;
    wait_for_value("B dropped AAPL", 0, Duration::from_secs(5), || {
        numsub(&admin, &aapl)
    })
    .await;

    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

#[tokio::test]
async fn sharded_nodes_share_ticks_through_spublish() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = unique_prefix("sharded");
    let sharded = ["--redis-sharded"];
    let a = gateway_with(&url, &prefix, &sharded).await;
    let b = gateway_with(&url, &prefix, &sharded).await;
    let http = reqwest::Client::new();
    let channel = format!("{prefix}ticks:{{{prefix}price:MSFT}}");
    let mut ws = client(b.http_addr()).await;
    subscribe(&mut ws, "MSFT").await;
    wait_for_value("B shard-subscribed", 1, Duration::from_secs(5), || async {
        let v: Vec<Value> = admin.pubsub_shardnumsub(&channel).await.unwrap();
        v[1].clone().convert::<i64>().unwrap()
    })
    .await;
    let now = Timestamp::now();
    assert_eq!(
        post(&http, a.http_addr(), &tick("MSFT", 415.5, now)).await,
        202
    );
    assert_eq!(expect(&mut ws, "tick", Some("MSFT")).await["price"], 415.5);
    assert_eq!(
        get(&http, b.http_addr(), "/price/MSFT").await.1["price"],
        415.5
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

#[tokio::test]
async fn a_gateway_without_redis_refuses_to_start_with_a_clear_error() {
    let cli = Cli::parse_from([
        "marketmux",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        "redis://127.0.0.1:1",
    ]);
    let Some(Role::Gateway(args)) = cli.role else {
        panic!("not a gateway")
    };
    let err = match marketmux::roles::gateway::start(args).await {
        Ok(_) => panic!("started without Redis"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cannot connect to Redis"), "{err}");
}

const REDIS_UP: &str = "marketmux_component_up{component=\"redis\"}";
const PUBLISH_ERRORS: &str = "marketmux_errors_total{component=\"redis\",op=\"publish\"}";

#[tokio::test]
async fn clients_keep_their_socket_and_get_ticks_again_after_redis_restarts() {
    // Component errors are counted through the process-wide recorder.
    assert!(marketmux_metrics::install_global_recorder());
    let mut redis = OwnRedis::start();
    let port = redis.port();
    redis.wait_up().await;
    let url = redis.url();
    let admin = admin(&url).await;
    let (a, b) = (gateway(&url, "").await, gateway(&url, "").await);
    let (a_addr, b_addr) = (a.http_addr(), b.http_addr());
    let http = reqwest::Client::new();

    let mut ws = client(b_addr).await;
    subscribe(&mut ws, "AAPL").await;
    wait_for_value("B subscribed", 1, Duration::from_secs(5), || {
        numsub(&admin, "ticks:AAPL")
    })
    .await;
    assert_eq!(
        post(&http, a_addr, &tick("AAPL", 1.0, Timestamp::now())).await,
        202
    );
    assert_eq!(expect(&mut ws, "tick", Some("AAPL")).await["price"], 1.0);
    assert_eq!(get(&http, b_addr, "/ready").await.0, 200);
    let before = scrape(a_addr).await;
    assert_eq!(before[REDIS_UP], 1.0);

    // Redis goes away: B is not ready, but alive, and the socket stays open.
    redis.kill();
    wait_for_value("B not ready", 503, Duration::from_secs(5), || async {
        get(&http, b_addr, "/ready").await.0
    })
    .await;
    assert_eq!(get(&http, b_addr, "/health").await.0, 200);
    let (status, body) = get(&http, b_addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.to_string().contains("redis"), "{body}");
    assert_eq!(
        post(&http, a_addr, &tick("AAPL", 2.0, Timestamp::now())).await,
        503
    );
    // /metrics tells the operator why: Redis down, and the refused publish counted.
    let during = scrape(a_addr).await;
    assert_eq!(during[REDIS_UP], 0.0);
    assert!(
        during[PUBLISH_ERRORS] > before[PUBLISH_ERRORS],
        "{} -> {}",
        before[PUBLISH_ERRORS],
        during[PUBLISH_ERRORS]
    );

    // Same port, empty data (no scripts, no subscriptions): the nodes reconnect,
    // resubscribe and reload the script by themselves.
    let _redis = OwnRedis::start_on(port);
    _redis.wait_up().await;
    wait_for_value("B ready again", 200, Duration::from_secs(15), || async {
        get(&http, b_addr, "/ready").await.0
    })
    .await;
    let admin = self::admin(&url).await;
    assert_eq!(numsub(&admin, "ticks:AAPL").await, 1);
    wait_for_value(
        "A accepts ticks again",
        202,
        Duration::from_secs(15),
        || async { post(&http, a_addr, &tick("AAPL", 3.0, Timestamp::now())).await },
    )
    .await;
    // The same socket, with no action of the client, gets the new tick; the
    // tick refused with 503 during the outage was never sent to Redis.
    let got = expect(&mut ws, "tick", Some("AAPL")).await;
    assert_eq!(got["price"], 3.0);
    assert_eq!(get(&http, b_addr, "/price/AAPL").await.1["price"], 3.0);

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Subscribes `ws` to `count` symbols named `{tag}{n}`, `per_frame` to a
/// frame, without waiting for the replies.
async fn subscribe_many(ws: &mut Ws, tag: &str, count: usize, per_frame: usize) {
    let names: Vec<String> = (0..count).map(|n| format!("{tag}{n}")).collect();
    for chunk in names.chunks(per_frame) {
        send(ws, json!({"action": "subscribe", "symbols": chunk})).await;
    }
}

/// How long `GET /price/{symbol}` takes, with its status.
async fn timed_price(http: &reqwest::Client, addr: SocketAddr, symbol: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = get(http, addr, &format!("/price/{symbol}")).await.0;
    (status, started.elapsed())
}

#[tokio::test]
async fn a_subscribe_flood_leaves_price_reads_working() {
    const SOCKETS: usize = 32;
    const SYMBOLS: usize = 1024;
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let url = redis.url();
    // A small bound on waiting reads, so that this flood goes past it; no
    // bound on one address's subscriptions, so that all 32,768 are made.
    let node = gateway_with(
        &url,
        "",
        &[
            "--redis-max-pending-reads",
            "2000",
            "--max-subscriptions-per-ip",
            "0",
        ],
    )
    .await;
    let addr = node.http_addr();
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, addr, &tick("AAPL", 7.0, Timestamp::now())).await,
        202
    );

    // Every socket asks for 1,024 symbols nobody has seen, in 4 frames of 256.
    let mut sockets = Vec::new();
    for n in 0..SOCKETS {
        let mut ws = client(addr).await;
        subscribe_many(&mut ws, &format!("F{n}X"), SYMBOLS, 256).await;
        sockets.push(ws);
    }
    // Ingest amid the flood is answered (its PING waits behind the big
    // SUBSCRIBEs on the subscriber connection): accepted or refused, never stuck.
    let during = post(&http, addr, &tick("AAPL", 7.5, Timestamp::now())).await;
    assert!(
        during == 202 || during == 503,
        "POST amid the flood: {during}"
    );
    // Each socket's four subscribes are answered (acks first, snapshots after).
    for ws in &mut sockets {
        for _ in 0..4 {
            expect(ws, "subscribed", None).await;
        }
    }
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }

    // Reads go out at once again: never a 503, never a wait for a later
    // command (such as the next readiness PING) to push them out.
    let mut total = Duration::ZERO;
    for _ in 0..10 {
        let (status, took) = timed_price(&http, addr, "AAPL").await;
        assert_eq!(status, 200, "GET /price/AAPL after the flood, in {took:?}");
        total += took;
    }
    assert!(
        total < Duration::from_secs(2),
        "10 x GET /price/AAPL took {total:?}"
    );
    wait_for_value(
        "ingest after the flood",
        202,
        Duration::from_secs(10),
        || async { post(&http, addr, &tick("AAPL", 8.0, Timestamp::now())).await },
    )
    .await;
    assert_eq!(get(&http, addr, "/price/AAPL").await.1["price"], 8.0);
    node.stop().await.unwrap();
}

/// Waits for a tick of `symbol` at `price`, skipping other messages; false
/// after `within`.
async fn receives_price(ws: &mut Ws, symbol: &str, price: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while let Some(m) = next_json(ws, deadline.saturating_duration_since(Instant::now())).await {
        if m["type"] == "tick" && m["symbol"] == symbol && m["price"] == price {
            return true;
        }
    }
    false
}

/// `CLIENT KILL TYPE pubsub`: Redis drops every subscriber connection (the
/// node's) and keeps the command connections.
async fn drop_subscriber_connections(admin: &Client) -> i64 {
    admin
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::FirstKey, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tick_answered_202_reaches_the_nodes_clients_across_a_subscriber_drop() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let url = redis.url();
    let admin = admin(&url).await;
    let node = gateway(&url, "").await;
    let addr = node.http_addr();
    let http = reqwest::Client::new();
    let mut ws = client(addr).await;
    subscribe(&mut ws, "AAPL").await;
    let ready = || async { get(&http, addr, "/ready").await.0 };
    for round in 0..3 {
        wait_for_value("subscribed", 1, Duration::from_secs(10), || {
            numsub(&admin, "ticks:AAPL")
        })
        .await;
        wait_for_value("ready", 200, Duration::from_secs(10), ready).await;
        // The node's subscriber connection goes; its command connection
        // stays, so Redis itself accepts the tick at once.
        assert!(drop_subscriber_connections(&admin).await >= 1);
        let price = 100.0 + f64::from(round);
        match post(&http, addr, &tick("AAPL", price, Timestamp::now())).await {
            202 => assert!(
                receives_price(&mut ws, "AAPL", price, Duration::from_secs(10)).await,
                "round {round}: a tick answered 202 never reached the node's client"
            ),
            503 => {}
            other => panic!("round {round}: POST answered {other}"),
        }
    }
    // Once the node serves again, ticks are accepted and delivered.
    wait_for_value("ready again", 200, Duration::from_secs(10), ready).await;
    assert_eq!(
        post(&http, addr, &tick("AAPL", 200.0, Timestamp::now())).await,
        202
    );
    assert!(receives_price(&mut ws, "AAPL", 200.0, Duration::from_secs(10)).await);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn ready_is_503_while_redis_is_frozen_and_200_once_it_answers_again() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let node = gateway(&redis.url(), "").await;
    let addr = node.http_addr();
    let http = reqwest::Client::new();
    let mut ws = client(addr).await;
    subscribe(&mut ws, "AAPL").await;
    let ready = || async { get(&http, addr, "/ready").await.0 };
    wait_for_value("ready", 200, Duration::from_secs(5), ready).await;

    // SIGSTOP: every socket to Redis stays open, nothing is answered.
    redis.pause();
    wait_for_value("unready while frozen", 503, Duration::from_secs(5), ready).await;
    let (_, body) = get(&http, addr, "/ready").await;
    assert!(body.to_string().contains("PING"), "{body}");
    assert_eq!(get(&http, addr, "/health").await.0, 200);
    // Ingest is refused while the node cannot serve.
    let started = Instant::now();
    assert_eq!(
        post(&http, addr, &tick("AAPL", 1.0, Timestamp::now())).await,
        503
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    redis.resume();
    wait_for_value("ready after thaw", 200, Duration::from_secs(10), ready).await;
    assert_eq!(
        post(&http, addr, &tick("AAPL", 2.0, Timestamp::now())).await,
        202
    );
    assert!(receives_price(&mut ws, "AAPL", 2.0, Duration::from_secs(5)).await);
    node.stop().await.unwrap();
}

/// A Lua script that keeps Redis busy for `ms` milliseconds.
const BUSY_LUA: &str = "local t = redis.call('TIME') \
    local deadline = t[1] * 1000000 + t[2] + ARGV[1] * 1000 \
    repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= deadline \
    return 0";

#[tokio::test]
async fn a_tick_accepted_just_before_the_subscriber_drops_is_delivered_or_refused() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let url = redis.url();
    let admin = admin(&url).await;
    let node = gateway(&url, "").await;
    let addr = node.http_addr();
    let http = reqwest::Client::new();
    let mut ws = client(addr).await;
    subscribe(&mut ws, "AAPL").await;
    wait_for_value("subscribed", 1, Duration::from_secs(10), || {
        numsub(&admin, "ticks:AAPL")
    })
    .await;
    wait_for_value("ready", 200, Duration::from_secs(10), || async {
        get(&http, addr, "/ready").await.0
    })
    .await;

    // Redis runs a 500 ms script, then, from the same pipeline, drops the
    // node's subscriber connection; the POST arrives during the script, while
    // the node still serves, so Redis publishes its tick after the drop.
    let busy = admin.pipeline();
    let eval = CustomCommand::new_static("EVAL", ClusterHash::FirstKey, false);
    let kill = CustomCommand::new_static("CLIENT", ClusterHash::FirstKey, false);
    let () = busy.custom(eval, vec![BUSY_LUA, "0", "500"]).await.unwrap();
    let () = busy
        .custom(kill, vec!["KILL", "TYPE", "pubsub"])
        .await
        .unwrap();
    let script = tokio::spawn(async move { busy.all::<Value>().await });
    // Lets the pipeline reach Redis before the POST does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    match post(&http, addr, &tick("AAPL", 77.0, Timestamp::now())).await {
        202 => assert!(
            receives_price(&mut ws, "AAPL", 77.0, Duration::from_secs(10)).await,
            "a tick answered 202 never reached the node's client"
        ),
        503 => {}
        other => panic!("POST answered {other}"),
    }
    script.await.unwrap().unwrap();
    node.stop().await.unwrap();
}
