//! A `dev` node's symbol streams over real sockets: ticks carry the bus's
//! `seq`; a clean restart on the same `--data-dir` keeps each symbol's
//! sequence (and history); without the saved file the sequence starts again.

mod dev_common;

use std::time::Duration;

use dev_common::start_dev;
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux::node::Node;
use marketmux_core::Timestamp;
use marketmux_test_support::TempDir;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn post(node: &Node, symbol: &str, prices: &[f64]) {
    let body: Vec<Value> = prices
        .iter()
        .map(|p| json!({"symbol": symbol, "price": p, "timestamp": Timestamp::now().to_rfc3339()}))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/ticks", node.http_addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "ticks refused: {}", r.status());
}

async fn subscribe(node: &Node, symbol: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.http_addr()))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"action": "subscribe", "symbol": symbol}).to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// The `(price, seq)` of the next `n` ticks on `ws`.
async fn ticks(ws: &mut Ws, n: usize) -> Vec<(f64, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a tick within 5 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            let j: Value = serde_json::from_str(&t).unwrap();
            if j["type"] == "tick" {
                got.push((j["price"].as_f64().unwrap(), j["seq"].as_u64().unwrap()));
            }
        }
    }
    got
}

#[tokio::test]
async fn a_clean_restart_keeps_the_sequence_and_a_lost_file_starts_it_again() {
    let dir = TempDir::new("dev-streams");
    let data = dir.path();
    let node = start_dev(data, &[]).await;
    let mut ws = subscribe(&node, "SEQ").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&node, "SEQ", &[1.0, 2.0, 3.0]).await;
    assert_eq!(ticks(&mut ws, 3).await, [(1.0, 1), (2.0, 2), (3.0, 3)]);
    drop(ws);
    node.stop().await.unwrap();
    assert!(data.join("streams.json").exists(), "saved on a clean stop");

    let node = start_dev(data, &[]).await;
    assert!(!data.join("streams.json").exists(), "taken when read");
    let mut ws = subscribe(&node, "SEQ").await;
    // The latest tick survived the restart, with its seq.
    assert_eq!(ticks(&mut ws, 1).await, [(3.0, 3)]);
    post(&node, "SEQ", &[4.0]).await;
    assert_eq!(ticks(&mut ws, 1).await, [(4.0, 4)], "the sequence goes on");
    drop(ws);
    // Dies without saving: nothing to restore next time.
    node.task.abort();
    let _ = node.task.await;
    node.shutdown.cancel();

    let node = start_dev(data, &[]).await;
    let mut ws = subscribe(&node, "SEQ").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&node, "SEQ", &[5.0]).await;
    assert_eq!(
        ticks(&mut ws, 1).await,
        [(5.0, 1)],
        "a new life starts at 1"
    );
    drop(ws);
    node.stop().await.unwrap();
}
