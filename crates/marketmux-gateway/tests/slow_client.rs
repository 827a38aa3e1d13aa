//! A client that never reads: the others keep receiving everything, the slow
//! one is conflated then closed, and the node's queued memory stays bounded.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{recv, send, TestNode};
use marketmux_gateway::GatewayConfig;
use marketmux_hub::QueueLimits;
use tokio::io::AsyncWriteExt;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_back_the_others() {
    // Wide enough that a fast reader stalled ~2 s by a busy machine (debug
    // build, 2 cores) is neither conflated nor closed; the slow client's
    // ~22 MB still goes far past both bounds.
    let limits = QueueLimits {
        max_bytes: 1024 * 1024,
        max_lag: Duration::from_secs(3),
        max_control_bytes: 32 * 1024,
    };
    let node = Arc::new(
        TestNode::start(GatewayConfig {
            queue: limits,
            ..GatewayConfig::default()
        })
        .await,
    );

    // The slow client: upgrades, subscribes, then never reads a byte.
    let mut slow = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let sub = br#"{"action":"subscribe","symbols":["FAST","OTHER"]}"#;
    let mut frame = vec![0x81, 0x80 | sub.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(sub);
    slow.write_all(&frame).await.unwrap();

    let mut fast = Vec::new();
    for _ in 0..20 {
        let mut ws = node.connect().await;
        send(&mut ws, r#"{"action":"subscribe","symbol":"FAST"}"#).await;
        assert_eq!(recv(&mut ws).await["type"], "subscribed");
        fast.push(ws);
    }
    node.eventually("all subscribed", |s| {
        s.hub.subscriber_count(&"FAST".parse().unwrap()) == 21
    })
    .await;

    let ticks = 10_000u64;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for expected in 1..=ticks {
                    let t = recv(&mut ws).await;
                    assert_eq!(
                        t["seq"].as_u64(),
                        Some(expected),
                        "fast clients get every tick, in order"
                    );
                }
                ws
            })
        })
        .collect();

    let rss_before = rss_kib();
    let max_queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (node, max_queued, sampling) = (node.clone(), max_queued.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Relaxed) {
                max_queued.fetch_max(node.state.registry.queued_bytes(), Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // FAST at ~5,000 ticks/s, which the readers keep up with; OTHER (followed
    // only by the slow client) at 20 times that, ~22 MB in all: far more than
    // the kernel's socket buffers absorb, so the slow client falls behind.
    for i in 0..ticks {
        node.publish("FAST", 100.0 + (i % 100) as f64 / 100.0);
        for j in 0..20 {
            node.publish("OTHER", 1.0 + (i * 20 + j) as f64);
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut still_open = Vec::new();
    for r in readers {
        still_open.push(
            tokio::time::timeout(Duration::from_secs(120), r)
                .await
                .expect("fast readers finish")
                .unwrap(),
        );
    }
    sampling.store(false, Relaxed);
    sampler.await.unwrap();

    node.eventually("slow client closed", |s| {
        s.hub.stats().snapshot().slow_closed == 1
    })
    .await;
    node.eventually("only the fast clients remain", |s| s.registry.len() == 20)
        .await;
    let stats = node.state.hub.stats().snapshot();
    assert!(
        stats.conflated > 0,
        "the slow client was conflated before it was closed"
    );
    // Every queue is bounded: 21 clients × (tick bound + control bound + one slot per symbol).
    let bound = 21 * (limits.max_bytes + limits.max_control_bytes + 2 * 256);
    let seen = max_queued.load(Relaxed);
    assert!(
        seen <= bound,
        "queued bytes peaked at {seen}, bound {bound}"
    );
    // 210,000 ticks × ~110 bytes went past a client that kept none of them.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// A client that stops reading is closed once its oldest unsent frame is
/// older than the lag bound, though its queue is far under the byte bound
/// (nothing conflates) and nothing more is published to it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_by_the_age_of_its_oldest_frame() {
    let limits = QueueLimits {
        max_bytes: 64 * 1024 * 1024,
        max_lag: Duration::from_secs(1),
        max_control_bytes: 256 * 1024,
    };
    let node = TestNode::start(GatewayConfig {
        queue: limits,
        idle_timeout: Duration::from_secs(60),
        ..GatewayConfig::default()
    })
    .await;

    let slow = subscriber_that_never_reads(&node, "LAG").await;

    // One burst, ~10 MB: more than the socket buffers take, far less than the
    // byte bound. Then nothing: only the age of what is unsent can close it.
    for i in 0..100_000u64 {
        node.publish("LAG", 1.0 + i as f64);
    }
    let burst_end = std::time::Instant::now();
    node.eventually("slow client closed", |s| {
        s.hub.stats().snapshot().slow_closed == 1
    })
    .await;
    let took = burst_end.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "closed {took:?} after the burst, not by the 1 s lag bound"
    );
    assert_eq!(node.state.hub.stats().snapshot().conflated, 0);
    node.eventually("socket gone, its queue freed", |s| {
        s.registry.is_empty() && s.registry.queued_bytes() == 0
    })
    .await;
    drop(slow);
}

/// A client that stops reading a steady, slow stream is found out within
/// seconds: the node caps each connection's kernel send buffer, so the
/// frames soon wait in the node's queue, where their age counts. With the
/// kernel's own sizing (several MiB on loopback) this stream would fill the
/// buffers for minutes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_slow_stream_is_found_out_within_seconds() {
    let node = TestNode::start(GatewayConfig {
        queue: QueueLimits {
            max_bytes: 64 * 1024 * 1024,
            max_lag: Duration::from_secs(1),
            max_control_bytes: 256 * 1024,
        },
        idle_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;

    let slow = subscriber_that_never_reads(&node, "DRIP").await;

    // About 25 KB/s (250 ticks of ~100 bytes a second): nothing conflates,
    // nothing reaches the byte bound; only the send buffer's size decides
    // when frames start to wait.
    let start = std::time::Instant::now();
    let mut i = 0u64;
    while node.state.hub.stats().snapshot().slow_closed == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a client that stopped reading a 25 KB/s stream was not closed within 20 s"
        );
        for _ in 0..25 {
            i += 1;
            node.publish("DRIP", 1.0 + i as f64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.state.hub.stats().snapshot().conflated, 0);
    drop(slow);
}

/// A socket that upgrades and subscribes to `symbol` with a 4 KiB receive
/// window, then never reads.
async fn subscriber_that_never_reads(node: &TestNode, symbol: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(node.addr).await.unwrap();
    slow.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let sub = format!(r#"{{"action":"subscribe","symbol":"{symbol}"}}"#);
    let mut frame = vec![0x81, 0x80 | sub.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(sub.as_bytes());
    slow.write_all(&frame).await.unwrap();
    let symbol: marketmux_core::Symbol = symbol.parse().unwrap();
    node.eventually("subscribed", |s| s.hub.subscriber_count(&symbol) == 1)
        .await;
    slow
}
