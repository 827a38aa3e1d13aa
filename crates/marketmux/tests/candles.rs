//! Candles over real HTTP: `GET /candles/{symbol}` on a `dev` node and on two
//! gateway nodes sharing one Redis (the same candles on both), across a
//! restart, closed by the clock, a late tick not reopening a closed
//! interval, and the JSON errors.
//!
//! The Redis tests use the Redis at 127.0.0.1:6379 (or
//! MARKETMUX_TEST_REDIS_URL), each under a key prefix of its own, and delete
//! their keys at the end.

mod dev_common;
mod gateway_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use marketmux::node::Node;
use marketmux_core::{Candle, CandleConfig, Interval, Symbol, SymbolCandles, Tick, Timestamp};
use marketmux_test_support::TempDir;
use serde_json::{json, Value as Json};

use gateway_common::{admin, cleanup, redis_url, start_gateway};

/// A grace long enough that ticks of the last seconds are still on time.
const LONG_GRACE_MS: i64 = 60_000;

fn unique(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{test}-{}-{}-{}",
        std::process::id(),
        Timestamp::now().0,
        N.fetch_add(1, Relaxed)
    )
}

/// A dev node whose candle intervals close `grace_ms` after their end.
async fn start_dev_with(data_dir: &Path, grace_ms: i64, extra: &[&str]) -> Node {
    let grace = grace_ms.to_string();
    let mut flags = vec!["--candle-grace-ms", &grace];
    flags.extend_from_slice(extra);
    dev_common::start_dev(data_dir, &flags).await
}

async fn start_dev(data_dir: &Path, grace_ms: i64) -> Node {
    start_dev_with(data_dir, grace_ms, &[]).await
}

fn now_ms() -> i64 {
    Timestamp::now().0 / 1_000_000
}

/// One tick as `POST /api/v1/ticks` takes it.
#[derive(Clone, Copy, Debug)]
struct Sent {
    ms: i64,
    price: f64,
    volume: Option<f64>,
}

impl Sent {
    fn json(&self, symbol: &str) -> Json {
        let mut j = json!({
            "symbol": symbol,
            "price": self.price,
            "timestamp": Timestamp(self.ms * 1_000_000).to_rfc3339(),
        });
        if let Some(v) = self.volume {
            j["volume"] = json!(v);
        }
        j
    }
}

/// A known sequence over three seconds, the first starting at `base` (a
/// whole second): two ticks closing the first two 1s candles, then one.
fn known_sequence(base: i64) -> Vec<Sent> {
    let t = |ms, price, volume| Sent {
        ms: base + ms,
        price,
        volume,
    };
    vec![
        t(0, 100.0, Some(1.0)),
        t(250, 104.5, Some(2.5)),
        t(999, 98.25, None),
        t(1_000, 101.0, Some(0.5)),
        t(1_500, 102.75, Some(3.0)),
        t(3_000, 99.5, Some(1.0)),
    ]
}

/// The same rules in process: what every interval should hold after `sent`.
fn model(symbol: &str, sent: &[Sent], now: i64, grace_ms: i64) -> SymbolCandles {
    let config = CandleConfig {
        history: 1_000,
        grace_ms,
    };
    let mut candles = SymbolCandles::default();
    for (i, s) in sent.iter().enumerate() {
        let mut t = Tick::new(
            Symbol::new(symbol).unwrap(),
            s.price,
            Timestamp(s.ms * 1_000_000),
            s.volume,
        )
        .unwrap();
        t.seq = i as u64 + 1;
        candles.apply(&t, now, &config);
    }
    candles
}

/// A candle as compared: start, open, high, low, close, volume, ticks, closed.
type Row = (String, f64, f64, f64, f64, f64, u64, bool);

fn row_of(j: &Json) -> Row {
    let f = |k: &str| j[k].as_f64().unwrap_or_else(|| panic!("{k} in {j}"));
    (
        j["start"].as_str().unwrap().to_owned(),
        f("open"),
        f("high"),
        f("low"),
        f("close"),
        f("volume"),
        j["ticks"].as_u64().unwrap(),
        j["closed"].as_bool().unwrap(),
    )
}

fn row(c: &Candle, closed: bool) -> Row {
    (
        Timestamp(c.start_ms * 1_000_000).to_rfc3339(),
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.ticks,
        closed,
    )
}

/// What `GET /candles` should answer for `interval` according to the model.
fn expected(model: &SymbolCandles, interval: Interval) -> Vec<Row> {
    model
        .series(interval)
        .last(1_000)
        .iter()
        .map(|(c, closed)| row(c, *closed))
        .collect()
}

async fn post(http: &reqwest::Client, addr: SocketAddr, symbol: &str, sent: &[Sent]) {
    let body: Vec<Json> = sent.iter().map(|s| s.json(symbol)).collect();
    let r = http
        .post(format!("http://{addr}/api/v1/ticks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "ticks refused");
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

/// Every interval's page of `symbol` on the node at `addr`.
async fn all_rows(http: &reqwest::Client, addr: SocketAddr, symbol: &str) -> Vec<Vec<Row>> {
    let mut all = Vec::new();
    for i in Interval::ALL {
        let (status, body) = get(http, addr, &format!("/candles/{symbol}?interval={i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["symbol"], symbol);
        assert_eq!(body["interval"], i.as_str());
        all.push(
            body["candles"]
                .as_array()
                .unwrap()
                .iter()
                .map(row_of)
                .collect(),
        );
    }
    all
}

fn expected_all(model: &SymbolCandles) -> Vec<Vec<Row>> {
    Interval::ALL.iter().map(|i| expected(model, *i)).collect()
}

/// Posts the known sequence (and a late tick) to `addr`; checks the 1s
/// candles by hand and every interval against the model. Returns the model.
async fn post_known_sequence(
    http: &reqwest::Client,
    addr: SocketAddr,
    symbol: &str,
) -> SymbolCandles {
    let base = now_ms() / 1_000 * 1_000 - 5_000;
    let mut sent = known_sequence(base);
    post(http, addr, symbol, &sent).await;
    let start = |ms: i64| Timestamp(ms * 1_000_000).to_rfc3339();
    let by_hand: Vec<Row> = vec![
        (start(base), 100.0, 104.5, 98.25, 98.25, 3.5, 3, true),
        (
            start(base + 1_000),
            101.0,
            102.75,
            101.0,
            102.75,
            3.5,
            2,
            true,
        ),
        (start(base + 3_000), 99.5, 99.5, 99.5, 99.5, 1.0, 1, false),
    ];
    let (status, body) = get(http, addr, &format!("/candles/{symbol}?interval=1s")).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<Row> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    assert_eq!(got, by_hand);
    // `limit` takes the newest, the current one last.
    let (_, body) = get(
        http,
        addr,
        &format!("/candles/{symbol}?interval=1s&limit=2"),
    )
    .await;
    let got: Vec<Row> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    assert_eq!(got, by_hand[1..]);

    // Ten minutes late: its 1s, 1m and 5m intervals are long closed.
    let late = Sent {
        ms: base - 600_000,
        price: 1_000.0,
        volume: Some(50.0),
    };
    post(http, addr, symbol, &[late]).await;
    sent.push(late);
    let (_, body) = get(http, addr, &format!("/candles/{symbol}?interval=1s")).await;
    let got: Vec<Row> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    assert_eq!(got, by_hand, "a late tick reopens nothing");
    let model = model(symbol, &sent, now_ms(), LONG_GRACE_MS);
    assert_eq!(all_rows(http, addr, symbol).await, expected_all(&model));
    model
}

/// The JSON errors of `GET /candles`.
async fn check_errors(http: &reqwest::Client, addr: SocketAddr, known: &str) {
    for (path, status, code) in [
        (
            format!("/candles/{known}?interval=2m"),
            400,
            "invalid_interval",
        ),
        (format!("/candles/{known}"), 400, "invalid_interval"),
        (
            format!("/candles/{known}?interval=1m&limit=0"),
            400,
            "invalid_limit",
        ),
        (
            format!("/candles/{known}?interval=1m&limit=1001"),
            400,
            "invalid_limit",
        ),
        (
            "/candles/NO-SUCH-SYMBOL?interval=1m".to_owned(),
            404,
            "not_found",
        ),
        (
            "/candles/BAD%20SYM?interval=1m".to_owned(),
            400,
            "invalid_symbol",
        ),
    ] {
        let (got, body) = get(http, addr, &path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}

#[tokio::test]
async fn dev_builds_exact_candles_keeps_them_across_a_restart_and_refuses_bad_input() {
    let dir = TempDir::new("candles-dev");
    let http = reqwest::Client::new();
    let node = start_dev(dir.path(), LONG_GRACE_MS).await;
    let symbol = "CNDL";
    let model = post_known_sequence(&http, node.http_addr(), symbol).await;
    check_errors(&http, node.http_addr(), symbol).await;
    let before = all_rows(&http, node.http_addr(), symbol).await;
    node.stop().await.unwrap();

    // Restarted mid-interval on the same data directory: the same current
    // candle and history, and the current candle goes on.
    let node = start_dev(dir.path(), LONG_GRACE_MS).await;
    assert_eq!(all_rows(&http, node.http_addr(), symbol).await, before);
    let current = model.series(Interval::S1).current.unwrap();
    let more = Sent {
        ms: current.start_ms + 500,
        price: 99.0,
        volume: None,
    };
    post(&http, node.http_addr(), symbol, &[more]).await;
    let (_, body) = get(
        &http,
        node.http_addr(),
        &format!("/candles/{symbol}?interval=1s&limit=1"),
    )
    .await;
    let got = row_of(&body["candles"][0]);
    assert_eq!(
        (got.4, got.3, got.6, got.7),
        (99.0, 99.0, 2, false),
        "the restored current candle took the tick: {body}"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn dev_closes_a_candle_by_the_clock_with_no_further_tick() {
    // Late ticks are counted through the process-wide recorder (another
    // test of this binary may have installed it already).
    marketmux_metrics::install_global_recorder();
    let dir = TempDir::new("candles-clock");
    let http = reqwest::Client::new();
    let node = start_dev(dir.path(), 200).await;
    let addr = node.http_addr();
    let sent = Sent {
        ms: now_ms(),
        price: 5.0,
        volume: Some(1.0),
    };
    post(&http, addr, "CLOCK", &[sent]).await;
    let start = Timestamp(sent.ms / 1_000 * 1_000 * 1_000_000).to_rfc3339();
    // Open until its second ends plus 200 ms; closed after, with no tick.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = get(&http, addr, "/candles/CLOCK?interval=1s").await;
        let candles = body["candles"].as_array().unwrap().clone();
        assert_eq!(candles.len(), 1, "{body}");
        assert_eq!(candles[0]["start"], start.as_str());
        if candles[0]["closed"] == true {
            assert!(
                now_ms() >= sent.ms / 1_000 * 1_000 + 1_200,
                "closed too early"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still open after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A tick of that second now is late: the candle stays as it was.
    let late = Sent {
        ms: sent.ms,
        price: 50.0,
        volume: None,
    };
    post(&http, addr, "CLOCK", &[late]).await;
    let (_, body) = get(&http, addr, "/candles/CLOCK?interval=1s").await;
    let candles = body["candles"].as_array().unwrap();
    assert_eq!(candles.len(), 1, "no candle reopened: {body}");
    let got = row_of(&candles[0]);
    assert_eq!((got.1, got.2, got.6, got.7), (5.0, 5.0, 1, true), "{body}");
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("marketmux_candle_late_ticks_total{interval=\"1s\"}")
            && !l.ends_with(" 0")),
        "late tick counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("candle"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn two_gateways_on_one_redis_serve_identical_candles_also_after_a_restart() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = format!("mmtest:{}:", unique("candles"));
    let grace = LONG_GRACE_MS.to_string();
    let flags = ["--candle-grace-ms", grace.as_str()];
    let a = start_gateway(&url, &prefix, &flags).await;
    let b = start_gateway(&url, &prefix, &flags).await;
    let http = reqwest::Client::new();
    let symbol = "CNDL";
    // Posted at A, built in Redis: A and B read the same candles.
    let model = post_known_sequence(&http, a.http_addr(), symbol).await;
    let on_a = all_rows(&http, a.http_addr(), symbol).await;
    assert_eq!(all_rows(&http, b.http_addr(), symbol).await, on_a);
    assert_eq!(on_a, expected_all(&model));
    check_errors(&http, b.http_addr(), symbol).await;

    // B restarted mid-interval: the same current candle and history.
    b.stop().await.unwrap();
    let b = start_gateway(&url, &prefix, &flags).await;
    assert_eq!(all_rows(&http, b.http_addr(), symbol).await, on_a);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, msg: Json) {
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        msg.to_string(),
    ))
    .await
    .unwrap();
}

/// The next JSON message on `ws` (within 5 s).
async fn next(ws: &mut Ws) -> Json {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no message within 5 s: {other:?}"),
        }
    }
}

/// Candle messages on `ws` until one matches `done`; every one returned.
async fn candles_until(ws: &mut Ws, done: impl Fn(&Json) -> bool) -> Vec<Json> {
    let mut got = Vec::new();
    loop {
        let m = next(ws).await;
        assert_ne!(
            m["type"], "tick",
            "a candle subscription gets no ticks: {m}"
        );
        if m["type"] == "candle" {
            let stop = done(&m);
            got.push(m);
            if stop {
                return got;
            }
        }
    }
}

/// Subscribes `ws` to `symbol`'s candles of `intervals`; checks the reply.
async fn subscribe_candles(ws: &mut Ws, symbol: &str, intervals: &[&str]) {
    send(
        ws,
        json!({"action":"subscribe","candles":intervals,"symbols":[symbol],"id":1}),
    )
    .await;
    let reply = next(ws).await;
    assert_eq!(
        reply,
        json!({"type":"subscribed","symbols":[symbol],"candles":intervals,"id":1})
    );
}

/// Live candles for the known sequence, as a socket on `read_at` sees
/// them while ticks are posted at `post_at`: the current candle on
/// subscribe, each change, `closed:true` when a later tick closes one, all
/// equal to what `GET /candles` answers; nothing after an unsubscribe.
async fn live_candles(
    http: &reqwest::Client,
    post_at: SocketAddr,
    read_at: SocketAddr,
    symbol: &str,
) {
    let base = now_ms() / 1_000 * 1_000 - 5_000;
    let sent = known_sequence(base);
    // A first tick before anyone follows: the subscribe gets its candle.
    post(http, post_at, symbol, &sent[..1]).await;
    let mut ws = socket(read_at).await;
    subscribe_candles(&mut ws, symbol, &["1s", "1d"]).await;
    let first = candles_until(&mut ws, |m| m["interval"] == "1d").await;
    assert!(
        first
            .iter()
            .all(|m| m["ticks"] == 1 && m["closed"] == false),
        "{first:?}"
    );
    assert_eq!(
        first.len(),
        2,
        "the current candle of each interval: {first:?}"
    );

    post(http, post_at, symbol, &sent[1..]).await;
    let last_start = Timestamp((base + 3_000) * 1_000_000).to_rfc3339();
    let live = candles_until(&mut ws, |m| {
        m["interval"] == "1s" && m["start"] == last_start.as_str()
    })
    .await;
    // The 1s candles that closed came with closed:true, with their final
    // numbers, in order.
    let closed: Vec<Row> = live
        .iter()
        .filter(|m| m["interval"] == "1s" && m["closed"] == true)
        .map(row_of)
        .collect();
    let (status, body) = get(http, read_at, &format!("/candles/{symbol}?interval=1s")).await;
    assert_eq!(status, 200);
    let stored: Vec<Row> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(row_of)
        .collect();
    assert_eq!(closed, stored[..2], "closed:true carries the stored candle");
    assert_eq!(
        row_of(live.last().unwrap()),
        stored[2],
        "the current candle"
    );
    // The 1d candle's newest update (it may be conflated, never stale) is
    // the stored one once every tick arrived.
    let (_, body) = get(
        http,
        read_at,
        &format!("/candles/{symbol}?interval=1d&limit=1"),
    )
    .await;
    let stored_day = row_of(&body["candles"][0]);
    let mut day = live
        .iter()
        .rev()
        .find(|m| m["interval"] == "1d")
        .map(row_of);
    while day.as_ref() != Some(&stored_day) {
        let more = candles_until(&mut ws, |m| m["interval"] == "1d").await;
        day = more.last().map(row_of);
    }

    send(
        &mut ws,
        json!({"action":"unsubscribe","candles":["1s","1d"],"symbols":[symbol]}),
    )
    .await;
    let mut reply = next(&mut ws).await;
    while reply["type"] == "candle" {
        reply = next(&mut ws).await;
    }
    assert_eq!(
        reply,
        json!({"type":"unsubscribed","symbols":[symbol],"candles":["1s","1d"]})
    );
    post(
        http,
        post_at,
        symbol,
        &[Sent {
            ms: base + 3_500,
            price: 1.0,
            volume: None,
        }],
    )
    .await;
    send(&mut ws, json!({"action":"ping"})).await;
    assert_eq!(
        next(&mut ws).await["type"],
        "pong",
        "no candle after the unsubscribe"
    );
}

#[tokio::test]
async fn dev_sends_live_candles_closed_by_the_next_tick_and_by_the_clock() {
    let dir = TempDir::new("candles-live");
    let http = reqwest::Client::new();
    let node = start_dev(dir.path(), LONG_GRACE_MS).await;
    live_candles(&http, node.http_addr(), node.http_addr(), "LIVE").await;
    node.stop().await.unwrap();

    // The clock closes a live candle with no further tick.
    let node = start_dev(dir.path(), 200).await;
    let addr = node.http_addr();
    let mut ws = socket(addr).await;
    subscribe_candles(&mut ws, "TICKLESS", &["1s"]).await;
    let at = now_ms();
    post(
        &http,
        addr,
        "TICKLESS",
        &[Sent {
            ms: at,
            price: 7.0,
            volume: None,
        }],
    )
    .await;
    let got = candles_until(&mut ws, |m| m["closed"] == true).await;
    let end = at / 1_000 * 1_000 + 1_000;
    assert!(
        now_ms() >= end + 200,
        "closed before its end plus the grace"
    );
    assert_eq!(got.last().map(row_of).map(|r| (r.1, r.6)), Some((7.0, 1)));
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_socket_on_one_gateway_gets_the_candles_of_ticks_posted_at_another() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = format!("mmtest:{}:", unique("candles-live"));
    let grace = LONG_GRACE_MS.to_string();
    let flags = [
        "--candle-grace-ms",
        grace.as_str(),
        "--redis-unsubscribe-linger-secs",
        "0.2",
    ];
    let a = start_gateway(&url, &prefix, &flags).await;
    let b = start_gateway(&url, &prefix, &flags).await;
    let http = reqwest::Client::new();
    live_candles(&http, a.http_addr(), b.http_addr(), "LIVE").await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}

#[tokio::test]
async fn candle_series_per_socket_and_symbols_per_node_are_bounded() {
    let dir = TempDir::new("candles-bounds");
    let flags = ["--max-subscriptions", "3", "--max-topics", "2"];
    let node = start_dev_with(dir.path(), LONG_GRACE_MS, &flags).await;
    let mut a = socket(node.http_addr()).await;
    subscribe_candles(&mut a, "B1", &["1s", "1m"]).await;
    // Two more series would make four on this socket: refused whole.
    send(
        &mut a,
        json!({"action":"subscribe","candles":["1s","1m"],"symbols":["B2"]}),
    )
    .await;
    let err = next(&mut a).await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    subscribe_candles(&mut a, "B2", &["1d"]).await;
    // The node follows the candles of two symbols: a third is refused, on
    // any socket; one already followed is not.
    let mut b = socket(node.http_addr()).await;
    send(
        &mut b,
        json!({"action":"subscribe","candles":["1m"],"symbols":["B3"]}),
    )
    .await;
    let err = next(&mut b).await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("limit of 2 symbols"),
        "{err}"
    );
    subscribe_candles(&mut b, "B1", &["5m"]).await;
    // Leaving frees the place.
    send(
        &mut a,
        json!({"action":"unsubscribe","candles":["1d"],"symbols":["B2"]}),
    )
    .await;
    assert_eq!(next(&mut a).await["type"], "unsubscribed");
    subscribe_candles(&mut b, "B3", &["1m"]).await;
    node.stop().await.unwrap();
}

#[tokio::test]
async fn redis_closes_a_candle_by_the_clock_with_no_further_tick() {
    let url = redis_url();
    let admin = admin(&url).await;
    let prefix = format!("mmtest:{}:", unique("candles-clock"));
    let node = start_gateway(&url, &prefix, &["--candle-grace-ms", "200"]).await;
    let (http, addr) = (reqwest::Client::new(), node.http_addr());
    let sent = Sent {
        ms: now_ms(),
        price: 5.0,
        volume: Some(1.0),
    };
    post(&http, addr, "CLOCK", &[sent]).await;
    let end = sent.ms / 1_000 * 1_000 + 1_000;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = get(&http, addr, "/candles/CLOCK?interval=1s").await;
        let candles = body["candles"].as_array().unwrap().clone();
        assert_eq!(candles.len(), 1, "{body}");
        if candles[0]["closed"] == true {
            assert!(now_ms() >= end + 200, "closed too early");
            break;
        }
        assert!(Instant::now() < deadline, "still open after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late now: no second candle of that second.
    post(
        &http,
        addr,
        "CLOCK",
        &[Sent {
            price: 50.0,
            ..sent
        }],
    )
    .await;
    let (_, body) = get(&http, addr, "/candles/CLOCK?interval=1s").await;
    let candles = body["candles"].as_array().unwrap();
    assert_eq!(candles.len(), 1, "no candle reopened: {body}");
    assert_eq!((row_of(&candles[0]).2, row_of(&candles[0]).6), (5.0, 1));
    node.stop().await.unwrap();
    cleanup(&admin, &prefix).await;
}
