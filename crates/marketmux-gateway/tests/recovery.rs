//! Resuming a symbol's stream after a reconnect, on real sockets over the
//! in-process bus: `since` on subscribe, `streams` in the reply, the replay
//! and its seam with the live stream (also under a fast feed), positions that
//! cannot be served, a stream that starts again, and `GET /history`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recv, send, tick, try_recv, Ws};
use marketmux_bus::{HistoryConfig, InProcessBus, PriceStore};
use marketmux_core::{Epoch, Position, Symbol, Tick};
use marketmux_gateway::{GatewayConfig, GatewayState};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A gateway over an in-process bus keeping `history`.
struct Node {
    addr: std::net::SocketAddr,
    state: Arc<GatewayState>,
    bus: Arc<InProcessBus>,
    shutdown: CancellationToken,
}

impl Node {
    async fn start(history: HistoryConfig) -> Self {
        Self::start_with(history, GatewayConfig::default()).await
    }

    async fn start_with(history: HistoryConfig, config: GatewayConfig) -> Self {
        let bus = InProcessBus::with_history(history);
        let hub = GatewayState::new_hub();
        let h = hub.clone();
        bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
            h.publish_batch(ticks);
        }));
        let state = GatewayState::new(config, hub, bus.clone(), bus.clone(), vec![bus.clone()]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = marketmux_gateway::router(state.clone());
        tokio::spawn(marketmux_gateway::serve(
            listener,
            state.clone(),
            router,
            shutdown.clone(),
        ));
        Self {
            addr,
            state,
            bus,
            shutdown,
        }
    }

    async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("WebSocket connect");
        ws
    }

    fn publish(&self, symbol: &str, price: f64) {
        self.bus.publish_now(&[tick(symbol, price)]);
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Where `symbol`'s stream stands in `bus`.
async fn head(bus: &InProcessBus, symbol: Symbol) -> Position {
    bus.open(&symbol, None).await.unwrap().head
}

fn history(size: usize) -> HistoryConfig {
    HistoryConfig {
        size,
        ttl: Duration::from_secs(600),
    }
}

/// Subscribes and returns the reply (the first message).
async fn subscribe(ws: &mut Ws, request: Value) -> Value {
    send(ws, &request.to_string()).await;
    let reply = recv(ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

/// The next `n` messages, each a tick; returns their (seq, price).
async fn ticks(ws: &mut Ws, n: usize) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let m = recv(ws).await;
        assert_eq!(m["type"], "tick", "{m}");
        out.push((m["seq"].as_u64().unwrap(), m["price"].as_f64().unwrap()));
    }
    out
}

/// Nothing more arrives for a moment.
async fn quiet(ws: &mut Ws) {
    if let Some(m) = try_recv(ws, Duration::from_millis(200)).await {
        panic!("unexpected message: {m}");
    }
}

#[tokio::test]
async fn a_client_resumes_exactly_where_it_was_after_a_reconnect() {
    let node = Node::start(history(1_000)).await;
    let mut ws = node.connect().await;
    let reply = subscribe(
        &mut ws,
        json!({"action":"subscribe","symbol":"AAPL","id":1}),
    )
    .await;
    let epoch = reply["streams"]["AAPL"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reply,
        json!({"type":"subscribed","symbols":["AAPL"],"id":1,
               "streams":{"AAPL":{"epoch":epoch,"seq":0}}}),
        "a new stream: an epoch, no tick yet, and no `recovered` without `since`"
    );
    for p in [1.0, 2.0, 3.0] {
        node.publish("AAPL", p);
    }
    assert_eq!(ticks(&mut ws, 3).await, [(1, 1.0), (2, 2.0), (3, 3.0)]);
    drop(ws);

    for p in [4.0, 5.0, 6.0] {
        node.publish("AAPL", p);
    }
    let mut ws = node.connect().await;
    let reply = subscribe(
        &mut ws,
        json!({"action":"subscribe","symbols":["AAPL","MSFT"],
               "since":{"AAPL":{"seq":3,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(
        reply["streams"]["AAPL"],
        json!({"epoch":epoch,"seq":6,"recovered":true})
    );
    assert!(reply["streams"]["MSFT"]["epoch"].is_string(), "{reply}");
    assert_eq!(ticks(&mut ws, 3).await, [(4, 4.0), (5, 5.0), (6, 6.0)]);
    node.publish("AAPL", 7.0);
    assert_eq!(ticks(&mut ws, 1).await, [(7, 7.0)]);
    quiet(&mut ws).await;

    // Resuming from the head: recovered, nothing to replay, then live.
    let mut ws = node.connect().await;
    let reply = subscribe(
        &mut ws,
        json!({"action":"subscribe","symbol":"AAPL","since":{"AAPL":{"seq":7,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(
        reply["streams"]["AAPL"],
        json!({"epoch":epoch,"seq":7,"recovered":true})
    );
    quiet(&mut ws).await;
    node.publish("AAPL", 8.0);
    assert_eq!(ticks(&mut ws, 1).await, [(8, 8.0)]);

    let metrics = reqwest::get(format!("http://{}/metrics", node.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "marketmux_stream_recoveries_total{outcome=\"recovered\"} 2",
        "marketmux_stream_recoveries_total{outcome=\"not_recovered\"} 0",
        "marketmux_replayed_ticks_total 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_position_that_cannot_be_served_gets_the_latest_tick() {
    let node = Node::start(history(5)).await;
    for i in 1..=20 {
        node.publish("AAPL", f64::from(i));
    }
    let epoch = node
        .bus
        .open(&Symbol::new("AAPL").unwrap(), None)
        .await
        .unwrap()
        .head
        .epoch
        .to_string();
    let other = if epoch == "abc" { "abd" } else { "abc" };
    let cases = [
        ("another epoch", json!({"seq": 18, "epoch": other})),
        ("older than the history", json!({"seq": 3, "epoch": epoch})),
        ("above the head", json!({"seq": 25, "epoch": epoch})),
    ];
    for (what, since) in cases {
        let mut ws = node.connect().await;
        let reply = subscribe(
            &mut ws,
            json!({"action":"subscribe","symbol":"AAPL","since":{"AAPL":since}}),
        )
        .await;
        assert_eq!(
            reply["streams"]["AAPL"],
            json!({"epoch":epoch,"seq":20,"recovered":false}),
            "{what}"
        );
        assert_eq!(
            ticks(&mut ws, 1).await,
            [(20, 20.0)],
            "{what}: the latest tick"
        );
        quiet(&mut ws).await;
    }
    // Within the history: served.
    let mut ws = node.connect().await;
    let reply = subscribe(
        &mut ws,
        json!({"action":"subscribe","symbol":"AAPL","since":{"AAPL":{"seq":15,"epoch":epoch}}}),
    )
    .await;
    assert_eq!(reply["streams"]["AAPL"]["recovered"], true);
    let seqs: Vec<u64> = ticks(&mut ws, 5).await.iter().map(|t| t.0).collect();
    assert_eq!(seqs, [16, 17, 18, 19, 20]);
}

#[tokio::test]
async fn a_bad_since_is_refused_and_the_socket_stays_usable() {
    let config = GatewayConfig {
        max_subscriptions: 20,
        ..GatewayConfig::default()
    };
    let node = Node::start_with(history(10), config).await;
    let mut ws = node.connect().await;
    for since in [
        json!("AAPL"),
        json!({"AAPL": {"seq": -1, "epoch": "a"}}),
        json!({"AAPL": {"seq": 1.5, "epoch": "a"}}),
        json!({"AAPL": {"seq": 1, "epoch": "NOT AN EPOCH"}}),
        json!({"MSFT": {"seq": 1, "epoch": "a"}}),
        json!({"AAPL": [1, "a"]}),
    ] {
        send(
            &mut ws,
            &json!({"action":"subscribe","symbol":"AAPL","since":since,"id":5}).to_string(),
        )
        .await;
        let e = recv(&mut ws).await;
        assert_eq!(
            (&e["type"], &e["code"], &e["id"]),
            (&json!("error"), &json!("invalid_request"), &json!(5)),
            "{since}: {e}"
        );
    }
    // More positions than the socket may follow symbols.
    let symbols: Vec<String> = (0..21).map(|i| format!("S{i}")).collect();
    let since: serde_json::Map<String, Value> = symbols
        .iter()
        .map(|s| (s.clone(), json!({"seq": 1, "epoch": "a"})))
        .collect();
    send(
        &mut ws,
        &json!({"action":"subscribe","symbols":symbols,"since":since}).to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "too_many_subscriptions");
    assert_eq!(node.state.hub.topic_count(), 0, "nothing was subscribed");
    let reply = subscribe(&mut ws, json!({"action":"subscribe","symbol":"AAPL"})).await;
    assert!(reply["streams"]["AAPL"]["epoch"].is_string());
}

/// The seam under load: while a feeder publishes one symbol as fast as it
/// can, 50 clients subscribe from positions behind the head; each ends with
/// every `seq` after its position exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_meets_the_live_stream_without_gap_or_duplicate_under_a_fast_feed() {
    const CLIENTS: usize = 50;
    // The clients read only once all of them have subscribed: queues large
    // enough that nothing conflates (a conflated client sees a jump in
    // `seq` by design), however slowly the machine lets them subscribe.
    let config = GatewayConfig {
        queue: marketmux_hub::QueueLimits {
            max_bytes: 512 * 1024 * 1024,
            max_lag: Duration::from_secs(120),
            ..marketmux_hub::QueueLimits::default()
        },
        ..GatewayConfig::default()
    };
    let node = Arc::new(Node::start_with(history(100_000), config).await);
    let symbol = Symbol::new("FAST").unwrap();
    // The symbol has a stream and some history before the clients come.
    for i in 0..200 {
        node.publish("FAST", 100.0 + f64::from(i));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (node, stop) = (node.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                node.publish("FAST", 1.0 + (n % 1000) as f64);
                n += 1;
                if n.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            n
        })
    };
    let mut clients = Vec::with_capacity(CLIENTS);
    for c in 0..CLIENTS {
        let at = head(&node.bus, symbol).await;
        let since = Position {
            epoch: at.epoch,
            seq: at.seq.saturating_sub(1 + (c as u64 * 7) % 150),
        };
        let mut ws = node.connect().await;
        clients.push(tokio::spawn(async move {
            let reply = subscribe(
                &mut ws,
                json!({"action":"subscribe","symbol":"FAST",
                       "since":{"FAST":{"seq":since.seq,"epoch":since.epoch.to_string()}}}),
            )
            .await;
            assert_eq!(reply["streams"]["FAST"]["recovered"], true, "{reply}");
            (ws, since)
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut subscribed = Vec::with_capacity(CLIENTS);
    for c in clients {
        subscribed.push(c.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let published = feeder.join().unwrap();
    let last = head(&node.bus, symbol).await;
    assert!(published > 500, "the feed ran fast: {published} ticks");
    assert_eq!(
        node.state.hub.stats().snapshot().conflated,
        0,
        "no client fell behind its queue bound"
    );

    for (i, (mut ws, since)) in subscribed.into_iter().enumerate() {
        let mut expect = since.seq + 1;
        while expect <= last.seq {
            let m = recv(&mut ws).await;
            assert_eq!(m["type"], "tick", "client {i}: {m}");
            let seq = m["seq"].as_u64().unwrap();
            assert_eq!(
                seq, expect,
                "client {i} from {}: a gap or a duplicate",
                since.seq
            );
            expect += 1;
        }
        quiet(&mut ws).await;
    }
    let hub = node.state.hub.stats().snapshot();
    println!(
        "{published} ticks fed; {} stale ticks dropped at the seams",
        hub.stale_dropped
    );
}

/// A tick of another epoch (the symbol's sequence started again) is
/// announced with a `subscribed` notice, and a seq already sent is not sent
/// again.
#[tokio::test]
async fn a_new_epoch_is_announced_and_a_seq_is_never_sent_twice() {
    let node = Node::start(history(100)).await;
    let mut ws = node.connect().await;
    let reply = subscribe(&mut ws, json!({"action":"subscribe","symbol":"AAPL"})).await;
    let epoch: Epoch = reply["streams"]["AAPL"]["epoch"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    node.publish("AAPL", 1.0);
    node.publish("AAPL", 2.0);
    assert_eq!(ticks(&mut ws, 2).await, [(1, 1.0), (2, 2.0)]);

    // A tick delivered again (a bus redelivery) is not sent twice.
    let hub = &node.state.hub;
    let at = |epoch, seq| Position { epoch, seq };
    hub.publish_batch(&[tick("AAPL", 2.0).sequenced(at(epoch, 2))]);
    hub.publish_batch(&[tick("AAPL", 1.0).sequenced(at(epoch, 1))]);
    quiet(&mut ws).await;

    let restarted = Epoch::from_raw(epoch.raw() ^ 1);
    hub.publish_batch(&[tick("AAPL", 9.0).sequenced(at(restarted, 1))]);
    assert_eq!(
        recv(&mut ws).await,
        json!({"type":"subscribed","symbols":["AAPL"],
               "streams":{"AAPL":{"epoch":restarted.to_string(),"seq":1,"recovered":false}}})
    );
    assert_eq!(ticks(&mut ws, 1).await, [(1, 9.0)]);
    hub.publish_batch(&[tick("AAPL", 10.0).sequenced(at(restarted, 2))]);
    assert_eq!(ticks(&mut ws, 1).await, [(2, 10.0)]);
    let stats = hub.stats().snapshot();
    assert_eq!((stats.stale_dropped, stats.stream_restarts), (2, 1));
}

#[tokio::test]
async fn history_pages_and_their_errors() {
    let node = Node::start(history(50)).await;
    for i in 1..=120 {
        node.publish("AAPL", f64::from(i));
    }
    let seqs = |body: &Value| -> Vec<u64> {
        body["ticks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["seq"].as_u64().unwrap())
            .collect()
    };
    let (status, body) = node.get("/history/AAPL").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["symbol"], "AAPL");
    assert!(body["epoch"].is_string());
    assert_eq!(
        seqs(&body),
        (71..=120).collect::<Vec<_>>(),
        "the last 50 kept (limit 100)"
    );
    let t = &body["ticks"][0];
    assert_eq!(
        (t["type"].as_str(), t["price"].as_f64()),
        (Some("tick"), Some(71.0))
    );

    let (_, body) = node.get("/history/AAPL?limit=3").await;
    assert_eq!(seqs(&body), [118, 119, 120]);
    let (_, body) = node.get("/history/AAPL?since=80&limit=4").await;
    assert_eq!(seqs(&body), [81, 82, 83, 84]);
    let (_, body) = node.get("/history/AAPL?since=120").await;
    assert_eq!(seqs(&body), Vec::<u64>::new(), "nothing after the head");

    let (status, body) = node.get("/history/AAPL?since=10").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (410, &json!("history_gone")),
        "{body}"
    );
    let (status, body) = node.get("/history/NOPE").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "{body}"
    );
    for bad in [
        "since=-1",
        "since=abc",
        "since=1.5",
        "limit=0",
        "limit=1001",
        "limit=x",
    ] {
        let (status, body) = node.get(&format!("/history/AAPL?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string(), "{bad}: {body}");
    }
    let (status, _) = node.get("/history/AAPL?limit=1000").await;
    assert_eq!(status, 200);
    let (status, body) = node.get("/history/not%20a%20symbol").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_symbol"))
    );
}
