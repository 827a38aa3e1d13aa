//! Bounded topics: `max_topics` per node and `max_subscriptions_per_ip` over
//! all sockets of one address, and `max_subscriptions` per socket, candle
//! series counted with tick subscriptions. At a bound the subscribe gets a
//! clear `too_many_subscriptions` error, the socket stays usable and the
//! symbols already followed keep flowing.

mod common;

use std::time::Duration;

use common::{recv, send, try_recv, TestNode, Ws};
use marketmux_gateway::GatewayConfig;
use serde_json::Value;

/// Sends a subscribe and returns the first answer.
async fn subscribe(ws: &mut Ws, symbols: &[&str]) -> Value {
    let req = serde_json::json!({"action": "subscribe", "symbols": symbols});
    send(ws, &req.to_string()).await;
    recv(ws).await
}

/// The next tick of `symbol`, skipping nothing else (asserts it is one).
async fn next_tick(ws: &mut Ws, symbol: &str) -> f64 {
    let m = recv(ws).await;
    assert_eq!(m["symbol"], symbol, "{m}");
    m["price"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_per_node_and_subscriptions_per_address_are_bounded() {
    let node = TestNode::start(GatewayConfig {
        max_topics: 4,
        max_subscriptions_per_ip: 7,
        ..GatewayConfig::default()
    })
    .await;
    let mut a = node.connect().await;
    assert_eq!(
        subscribe(&mut a, &["T1", "T2", "T3"]).await["type"],
        "subscribed"
    );

    // Per node: 3 topics + 2 new ones > 4, refused whole with a clear error.
    let mut b = node.connect().await;
    let err = subscribe(&mut b, &["T1", "N1", "N2"]).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("limit of 4 symbols"),
        "{err}"
    );
    assert_eq!(node.state.hub.stats().snapshot().topics, 3);
    // The socket stays usable: symbols already followed, and the last topic.
    assert_eq!(subscribe(&mut b, &["T1", "N1"]).await["type"], "subscribed");
    let err = subscribe(&mut b, &["N2"]).await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    send(&mut b, r#"{"action":"ping"}"#).await;
    assert_eq!(recv(&mut b).await["type"], "pong");

    // Followed symbols keep flowing to both sockets.
    node.publish("T1", 11.0);
    node.publish("N1", 12.0);
    assert_eq!(next_tick(&mut a, "T1").await, 11.0);
    assert_eq!(next_tick(&mut b, "T1").await, 11.0);
    assert_eq!(next_tick(&mut b, "N1").await, 12.0);

    // Per address, over all its sockets: 3 (a) + 2 (b) + 3 > 7.
    let mut c = node.connect().await;
    let err = subscribe(&mut c, &["T1", "T2", "T3"]).await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("7 per client address (5 in use"),
        "{err}"
    );
    assert_eq!(subscribe(&mut c, &["T2", "T3"]).await["type"], "subscribed");
    node.publish("T2", 13.0);
    assert_eq!(next_tick(&mut a, "T2").await, 13.0);
    assert_eq!(next_tick(&mut c, "T2").await, 13.0);

    // Leaving frees places: an unsubscribe, then a whole socket.
    send(&mut c, r#"{"action":"unsubscribe","symbols":["T3"]}"#).await;
    assert_eq!(recv(&mut c).await["type"], "unsubscribed");
    assert_eq!(subscribe(&mut c, &["T3"]).await["type"], "subscribed");
    drop(a);
    node.eventually("a's subscriptions released", |s| {
        s.hub.stats().snapshot().subscriptions == 4
    })
    .await;
    // T3 is left by its last socket: its topic closes, N2 can take its place.
    send(&mut c, r#"{"action":"unsubscribe","symbols":["T3"]}"#).await;
    assert_eq!(recv(&mut c).await["type"], "unsubscribed");
    assert_eq!(subscribe(&mut b, &["N2", "T2"]).await["type"], "subscribed");
    assert!(try_recv(&mut b, Duration::from_millis(100))
        .await
        .is_none_or(|m| m["type"] != "error"));
    let metrics = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for limit in ["max_topics", "subscriptions_per_ip"] {
        assert!(
            metrics.contains(&format!("marketmux_limit_hits_total{{limit=\"{limit}\"}} ")),
            "{limit}: {metrics}"
        );
    }
    drop((b, c));
    node.eventually("every place released", |s| {
        s.subscriptions_per_ip.ips() == 0 && s.hub.stats().snapshot().topics == 0
    })
    .await;
}

/// Sends a candle subscribe and returns the first answer.
async fn subscribe_candles(ws: &mut Ws, intervals: &[&str], symbols: &[&str]) -> Value {
    let req = serde_json::json!({"action": "subscribe", "candles": intervals, "symbols": symbols});
    send(ws, &req.to_string()).await;
    recv(ws).await
}

/// Asserts `m` is a `too_many_subscriptions` error saying `says`.
fn refused(m: &Value, says: &str) {
    assert_eq!(m["code"], "too_many_subscriptions", "{m}");
    assert!(m["message"].as_str().unwrap().contains(says), "{m}");
}

#[tokio::test]
async fn candle_series_count_with_tick_subscriptions_per_socket_and_per_address() {
    let node = TestNode::start(GatewayConfig {
        max_subscriptions: 4,
        max_subscriptions_per_ip: 6,
        ..GatewayConfig::default()
    })
    .await;
    let mut a = node.connect().await;
    assert_eq!(subscribe(&mut a, &["S1", "S2"]).await["type"], "subscribed");
    // Per socket: 2 tick subscriptions + 4 series > 4.
    let err = subscribe_candles(&mut a, &["1s", "1m"], &["S1", "S2"]).await;
    refused(&err, "limit of 4 per connection (2 in use)");
    let ok = subscribe_candles(&mut a, &["1s", "1m"], &["S1"]).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    // Full: a symbol's ticks count against the same bound.
    refused(
        &subscribe(&mut a, &["S3"]).await,
        "limit of 4 per connection (4 in use)",
    );

    // Per address, over its sockets: 4 (a) + 2 series (b) = 6.
    let mut b = node.connect().await;
    let ok = subscribe_candles(&mut b, &["1s"], &["S1", "S2"]).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    let mut c = node.connect().await;
    let err = subscribe_candles(&mut c, &["1h"], &["S1"]).await;
    refused(&err, "6 per client address (6 in use");
    refused(
        &subscribe(&mut c, &["S9"]).await,
        "6 per client address (6 in use",
    );
    // Leaving a series frees its place.
    send(
        &mut b,
        r#"{"action":"unsubscribe","candles":["1s"],"symbols":["S2"]}"#,
    )
    .await;
    assert_eq!(recv(&mut b).await["type"], "unsubscribed");
    let ok = subscribe_candles(&mut c, &["1h"], &["S1"]).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    drop((a, b, c));
    node.eventually("every place released", |s| {
        s.subscriptions_per_ip.ips() == 0
    })
    .await;
}
