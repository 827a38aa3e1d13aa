//! The WebSocket protocol end to end, on real sockets.

mod common;

use std::time::Duration;

use common::{expect_close, recv, send, try_recv, TestNode};
use futures_util::SinkExt;
use marketmux_gateway::GatewayConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn subscribe_snapshot_ticks_unsubscribe() {
    let node = TestNode::start(GatewayConfig::default()).await;
    node.publish("AAPL", 150.25);
    let mut ws = node.connect().await;

    send(
        &mut ws,
        r#"{"action":"subscribe","symbol":"AAPL","id":"s1"}"#,
    )
    .await;
    let reply = recv(&mut ws).await;
    let epoch = reply["streams"]["AAPL"]["epoch"].clone();
    assert!(epoch.is_string(), "{reply}");
    assert_eq!(
        reply,
        json!({"type":"subscribed","symbols":["AAPL"],"id":"s1",
               "streams":{"AAPL":{"epoch":epoch,"seq":1}}})
    );
    let snap = recv(&mut ws).await;
    assert_eq!(
        (snap["type"].as_str(), snap["price"].as_f64()),
        (Some("tick"), Some(150.25))
    );

    node.publish("AAPL", 151.0);
    let live = recv(&mut ws).await;
    assert_eq!(live["price"], 151.0);
    assert!(live["timestamp"].as_str().unwrap().ends_with('Z'));

    // Multi-symbol, with an unknown symbol (no snapshot) and one already followed.
    send(
        &mut ws,
        r#"{"action":"subscribe","symbols":["MSFT","BINANCE:BTCUSDT","AAPL"]}"#,
    )
    .await;
    assert_eq!(
        recv(&mut ws).await["symbols"],
        json!(["MSFT", "BINANCE:BTCUSDT", "AAPL"])
    );
    node.publish("BINANCE:BTCUSDT", 64_000.5);
    assert_eq!(recv(&mut ws).await["symbol"], "BINANCE:BTCUSDT");

    send(
        &mut ws,
        r#"{"action":"unsubscribe","symbol":"AAPL","id":2}"#,
    )
    .await;
    // Ticks published before the ack may precede it; none may follow it.
    loop {
        let m = recv(&mut ws).await;
        if m["type"] == "unsubscribed" {
            assert_eq!(m, json!({"type":"unsubscribed","symbols":["AAPL"],"id":2}));
            break;
        }
    }
    for i in 0..20 {
        node.publish("AAPL", 200.0 + i as f64);
    }
    node.publish("MSFT", 410.0);
    let next = recv(&mut ws).await;
    assert_eq!(
        next["symbol"], "MSFT",
        "no AAPL tick after the unsubscribe ack: {next}"
    );
    assert_eq!(try_recv(&mut ws, Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn ticks_of_one_symbol_arrive_in_order_with_sequence_numbers() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut ws = node.connect().await;
    send(&mut ws, r#"{"action":"subscribe","symbol":"SEQ"}"#).await;
    recv(&mut ws).await;
    for i in 1..=500 {
        node.publish("SEQ", i as f64);
    }
    for i in 1..=500u64 {
        let t = recv(&mut ws).await;
        assert_eq!(
            (t["price"].as_f64(), t["seq"].as_u64()),
            (Some(i as f64), Some(i))
        );
    }
}

#[tokio::test]
async fn bad_inputs_get_errors_and_the_socket_stays_usable() {
    let config = GatewayConfig {
        max_subscriptions: 3,
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    let mut ws = node.connect().await;
    let cases = [
        ("not json", "invalid_json"),
        (r#"{"action":"explode","id":9}"#, "unknown_action"),
        (r#"{"symbol":"AAPL"}"#, "invalid_request"),
        (r#"{"action":"subscribe"}"#, "invalid_request"),
        (
            r#"{"action":"subscribe","symbol":"BAD SYMBOL!"}"#,
            "invalid_symbol",
        ),
        (
            r#"{"action":"subscribe","symbol":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}"#,
            "invalid_symbol",
        ),
        (
            r#"{"action":"subscribe","symbols":["A","B","C","D"]}"#,
            "too_many_subscriptions",
        ),
        (r#"{"action":"identify","user_id":7}"#, "forbidden"),
    ];
    for (text, code) in cases {
        send(&mut ws, text).await;
        let m = recv(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["code"].as_str()),
            (Some("error"), Some(code)),
            "{text} → {m}"
        );
        assert!(!m["message"].as_str().unwrap().is_empty());
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "unsupported_frame");
    // The id of an unknown action is echoed.
    send(&mut ws, r#"{"action":"explode","id":{"k":[1]}}"#).await;
    assert_eq!(recv(&mut ws).await["id"], json!({"k":[1]}));

    send(&mut ws, r#"{"action":"ping","id":5}"#).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"pong","id":5}));
    // Subscriptions up to the limit still work after all that.
    send(&mut ws, r#"{"action":"subscribe","symbols":["A","B","C"]}"#).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    send(&mut ws, r#"{"action":"subscribe","symbol":"D"}"#).await;
    assert_eq!(recv(&mut ws).await["code"], "too_many_subscriptions");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut ws = node.connect().await;
    let big = format!(
        r#"{{"action":"subscribe","symbol":"{}"}}"#,
        "A".repeat(5000)
    );
    send(&mut ws, &big).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    node.eventually("socket gone", |s| s.registry.is_empty())
        .await;
}

#[tokio::test]
async fn control_flood_is_told_then_closed() {
    let config = GatewayConfig {
        max_messages_per_sec: 5,
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    let mut ws = node.connect().await;
    for _ in 0..40 {
        send(&mut ws, r#"{"action":"ping"}"#).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                match m["type"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") if m["code"] == "rate_limited" => limited += 1,
                    _ => panic!("{m}"),
                }
            }
            Ok(Some(Ok(Message::Close(Some(c))))) => break u16::from(c.code),
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    };
    // The burst (twice the rate) is served; a token comes back every 200 ms,
    // so a reader slowed by a busy machine may serve one or two more.
    assert!(
        (10..=12).contains(&pongs),
        "the burst is served: {pongs} pongs"
    );
    assert_eq!(limited, 1, "told once");
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn silent_peer_is_dropped_and_handshake_times_out() {
    let config = GatewayConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;

    // Never sends the upgrade request: hyper gives up after the handshake timeout.
    let mut idle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the server closes a connection that never sends its request");
    let waited = started.elapsed();
    match n {
        // Closed, reset, or told "408 Request Timeout" first: all end the connection.
        Ok(0) | Err(_) => {}
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            assert!(
                head.starts_with("HTTP/1.1 408"),
                "unexpected answer: {head}"
            );
        }
    }
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after the 300 ms handshake timeout, not {waited:?}"
    );

    // Upgrades, then never answers pings: closed by the idle timeout.
    let mut raw = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 1024];
        loop {
            match raw.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .expect("server closed the silent socket");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // At least one server ping (0x89) and a close frame (0x88) with 1001.
    assert!(got.windows(2).any(|w| w == [0x89, 0x00]), "server pinged");
    let close = got
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2..4] == 1001u16.to_be_bytes());
    assert!(close.is_some(), "close 1001 after the idle timeout");
    node.eventually("socket gone", |s| s.registry.is_empty())
        .await;
}

#[tokio::test]
async fn bad_handshakes_are_refused_with_json() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let client = reqwest::Client::new();
    let r = client.get(node.url("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_handshake");
    let r = client
        .get(node.url("/ws"))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1012_and_returns() {
    let config = GatewayConfig {
        drain_period: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(node.connect().await);
    }
    node.eventually("50 sockets", |s| s.registry.len() == 50)
        .await;
    node.shutdown.cancel();
    // Readiness fails at once while the drain runs.
    for mut ws in sockets {
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!(code, 1012, "{reason}");
    }
    tokio::time::timeout(Duration::from_secs(5), node.task)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_returns_only_once_every_socket_task_has_ended() {
    let config = GatewayConfig {
        drain_period: Duration::from_millis(100),
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    // Never reads: its socket lingers after the close frame, waiting for the
    // client's close, well past the drain period.
    let silent = node.connect().await;
    node.eventually("the socket is open", |s| s.registry.len() == 1)
        .await;
    node.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), node.task)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    assert!(
        node.state.sockets.is_empty(),
        "serve returned with {} socket task(s) still running",
        node.state.sockets.len()
    );
    assert!(node.state.registry.is_empty());
    drop(silent);
}
