//! Many clients at once: churn while ticks flow, and a long connect/subscribe/
//! disconnect run. At the end every count is back to zero.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{recv, send, TestNode};
use marketmux_gateway::GatewayConfig;
use marketmux_test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYMBOLS: usize = 20;

fn symbol(i: usize) -> String {
    format!("S{:02}", i % SYMBOLS)
}

async fn assert_all_released(node: &TestNode, baseline_tasks: usize) {
    node.eventually("every socket released", |s| s.registry.is_empty())
        .await;
    node.eventually("no topic left", |s| s.hub.topic_count() == 0)
        .await;
    let stats = node.state.hub.stats().snapshot();
    assert_eq!(
        (stats.topics, stats.subscriptions),
        (0, 0),
        "hub counters back to zero"
    );
    assert_eq!(node.state.registry.bound_users(), 0);
    assert_eq!(node.state.registry.queued_bytes(), 0);
    // A connection's per-address count is released when its task ends, just
    // after the socket leaves the registry.
    node.eventually("per-address counts released", |s| s.registry.ips() == 0)
        .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let what = format!("tasks back to the {baseline_tasks} alive before the clients came");
    eventually(&what, Duration::from_secs(10), || {
        metrics.num_alive_tasks() <= baseline_tasks
    })
    .await;
}

/// A node whose own tasks (the serve task, its accept loop and heartbeat)
/// are running, so that counting tasks after it counts only the clients'.
async fn started_node() -> TestNode {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let node = TestNode::start(GatewayConfig::default()).await;
    eventually(
        "the node's serve, accept and heartbeat tasks",
        Duration::from_secs(10),
        || metrics.num_alive_tasks() >= before + 3,
    )
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_clients_churn_while_ticks_flow() {
    let node = Arc::new(started_node().await);
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (node, stop, published) = (node.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Relaxed) {
                node.publish(&symbol(i), 100.0 + (i % 50) as f64);
                published.fetch_add(1, Relaxed);
                i += 1;
                if i.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };

    let clients: usize = std::env::var("STRESS_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let waves = 8;
    let received = Arc::new(AtomicU64::new(0));
    for wave in 0..waves {
        let mut tasks = Vec::new();
        for c in 0..clients / waves {
            let node = node.clone();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut ws = node.connect().await;
                let k = wave * 1000 + c;
                let subs = format!(
                    r#"{{"action":"subscribe","symbols":["{}","{}","{}"]}}"#,
                    symbol(k),
                    symbol(k + 1),
                    symbol(k + 7)
                );
                send(&mut ws, &subs).await;
                loop {
                    if recv(&mut ws).await["type"] == "subscribed" {
                        break;
                    }
                }
                // Some ticks flow to this client.
                for _ in 0..3 {
                    if recv(&mut ws).await["type"] == "tick" {
                        received.fetch_add(1, Relaxed);
                    }
                }
                send(
                    &mut ws,
                    &format!(r#"{{"action":"unsubscribe","symbol":"{}"}}"#, symbol(k)),
                )
                .await;
                // Half close politely, half just vanish.
                if k % 2 == 0 {
                    let _ = ws.close(None).await;
                }
                drop(ws);
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    }
    stop.store(true, Relaxed);
    publisher.await.unwrap();
    assert!(received.load(Relaxed) >= (clients * 3) as u64 / 2);
    assert!(published.load(Relaxed) > 0);
    assert_all_released(&node, baseline).await;
}

/// A minimal raw client: upgrade, subscribe, read the ack, close the TCP socket.
async fn raw_cycle(addr: std::net::SocketAddr, symbol: &str, polite: bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("upgrade request");
    let msg = format!(r#"{{"action":"subscribe","symbol":"{symbol}"}}"#);
    s.write_all(&masked(0x1, msg.as_bytes()))
        .await
        .expect("subscribe");
    // Read the 101 and the `subscribed` ack.
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("subscribed") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed early");
        got.extend_from_slice(&buf[..n]);
    }
    if polite {
        s.write_all(&masked(0x8, &1000u16.to_be_bytes()))
            .await
            .expect("close");
    }
}

fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![0x80 | op, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

/// 100,000 cycles (`CHURN_CYCLES` overrides), a third of them without a close
/// frame. About 30 s in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_subscribe_disconnect_cycles_leave_nothing() {
    let cycles: usize = std::env::var("CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let node = Arc::new(started_node().await);
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let parallel = 64;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let (node, next) = (node.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed) as usize;
                if i >= cycles {
                    return;
                }
                raw_cycle(node.addr, &symbol(i), !i.is_multiple_of(3)).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (opened, _) = node.state.registry.opened_closed();
    assert_eq!(opened as usize, cycles);
    assert_all_released(&node, baseline).await;
    let (opened, closed) = node.state.registry.opened_closed();
    assert_eq!(opened, closed);
}
