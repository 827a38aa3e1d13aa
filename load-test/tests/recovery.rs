//! The reconnect mode against two scripted nodes that keep the stream
//! contract of DESIGN.md (one `seq` and `epoch` per symbol shared by both
//! nodes, a history, `since` on subscribe, `streams` in the reply): clients
//! split over both nodes reconnect on schedule and when a node goes away,
//! and the report accounts for every tick.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use load_test::{Cli, Report};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EPOCH: &str = "fake1";

/// What both nodes share: the bus side of the contract.
struct Bus {
    /// Ticks kept per symbol (0: recovery always refused).
    history_size: usize,
    next_conn: AtomicU64,
    streams: Mutex<HashMap<String, Stream>>,
}

#[derive(Default)]
struct Stream {
    seq: u64,
    /// (seq, tick frame), oldest first.
    history: VecDeque<(u64, Vec<u8>)>,
    latest: Option<Vec<u8>>,
    subscribers: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
}

/// An unmasked server text frame.
fn frame(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut f = vec![0x81];
    match b.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65_536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(b);
    f
}

impl Bus {
    fn new(history_size: usize) -> Arc<Self> {
        Arc::new(Self {
            history_size,
            next_conn: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn publish(&self, t: &Value) {
        let symbol = t["symbol"].as_str().unwrap_or_default().to_owned();
        let mut all = self.streams.lock().unwrap();
        let s = all.entry(symbol.clone()).or_default();
        s.seq += 1;
        let f = frame(
            &json!({"type": "tick", "symbol": symbol, "price": t["price"],
                "timestamp": t["timestamp"], "seq": s.seq})
            .to_string(),
        );
        s.history.push_back((s.seq, f.clone()));
        while s.history.len() > self.history_size {
            s.history.pop_front();
        }
        s.latest = Some(f.clone());
        s.subscribers.retain(|_, tx| tx.send(f.clone()).is_ok());
    }

    /// Registers `conn` and queues the reply, then each symbol's replay or
    /// latest tick: under one lock, so nothing published meanwhile is lost
    /// or sent twice at the seam.
    fn subscribe(&self, conn: u64, tx: &mpsc::UnboundedSender<Vec<u8>>, req: &Value) {
        let symbols: Vec<String> = match (&req["symbols"], &req["symbol"]) {
            (Value::Array(a), _) => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            (_, Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let mut all = self.streams.lock().unwrap();
        let mut streams = serde_json::Map::new();
        let mut after = Vec::new();
        for sym in &symbols {
            let s = all.entry(sym.clone()).or_default();
            let mut entry = json!({"epoch": EPOCH, "seq": s.seq});
            let since = &req["since"][sym];
            let recovered = match (since["seq"].as_u64(), since["epoch"].as_str()) {
                (Some(from), Some(epoch)) => {
                    let kept_from = s.history.front().map_or(s.seq + 1, |(q, _)| *q);
                    let ok = epoch == EPOCH && from <= s.seq && from + 1 >= kept_from;
                    entry["recovered"] = json!(ok);
                    ok.then_some(from)
                }
                _ => None,
            };
            match recovered {
                Some(from) => after.extend(
                    s.history
                        .iter()
                        .filter(|(q, _)| *q > from)
                        .map(|(_, f)| f.clone()),
                ),
                None => after.extend(s.latest.clone()),
            }
            s.subscribers.insert(conn, tx.clone());
            streams.insert(sym.clone(), entry);
        }
        let reply = json!({"type": "subscribed", "symbols": symbols, "streams": streams});
        let _ = tx.send(frame(&reply.to_string()));
        for f in after {
            let _ = tx.send(f);
        }
    }

    fn leave(&self, conn: u64) {
        for s in self.streams.lock().unwrap().values_mut() {
            s.subscribers.remove(&conn);
        }
    }
}

/// A node: `GET /ws` and `POST /api/v1/ticks` until `stop`, which also drops
/// every socket it holds (as a killed process would).
async fn node(bus: Arc<Bus>, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((s, _)) = r else { continue };
                    tokio::spawn(serve(s, bus.clone(), stop.clone()));
                }
                _ = stop.cancelled() => return,
            }
        }
    });
    addr
}

async fn serve(mut s: TcpStream, bus: Arc<Bus>, stop: CancellationToken) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        buf.drain(..head_end);
        if head.starts_with("get /ws") {
            let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
            if s.write_all(ok).await.is_ok() {
                websocket(s, buf, bus, stop).await;
            }
            return;
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let ticks: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
        for t in &ticks {
            bus.publish(t);
        }
        let answer = format!("{{\"accepted\":{}}}", ticks.len());
        let resp = format!(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn websocket(mut s: TcpStream, mut buf: Vec<u8>, bus: Arc<Bus>, stop: CancellationToken) {
    let conn = bus.next_conn.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    'conn: loop {
        // Every complete (masked) client frame in `buf`.
        while buf.len() >= 6 {
            let (len, at) = match buf[1] & 0x7f {
                126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 => break 'conn,
                n => (n as usize, 2),
            };
            if buf.len() < at + 4 + len {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            let payload: Vec<u8> = buf[at + 4..at + 4 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            buf.drain(..at + 4 + len);
            match opcode {
                0x1 => {
                    let req: Value = serde_json::from_slice(&payload).unwrap_or_default();
                    if req["action"] == "subscribe" {
                        bus.subscribe(conn, &tx, &req);
                    }
                }
                0x8 => break 'conn,
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        tokio::select! {
            Some(f) = rx.recv() => if s.write_all(&f).await.is_err() { break },
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            _ = stop.cancelled() => break,
        }
    }
    bus.leave(conn);
}

/// 20 clients over nodes A and B, reconnecting every second, ticks posted
/// to A; B goes away after `kill_after`.
async fn run_against(history_size: usize, kill_after: Duration) -> Report {
    let bus = Bus::new(history_size);
    let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
    let a = node(bus.clone(), a_stop.clone()).await;
    let b = node(bus.clone(), b_stop.clone()).await;
    let urls = format!("ws://{a}/ws,ws://{b}/ws");
    let cfg = Cli::try_parse_from([
        "load-test",
        "-c",
        "20",
        "--symbols",
        "4",
        "--subs-per-client",
        "2",
        "--publish-rate",
        "200",
        "--duration",
        "4s",
        "--url",
        &urls,
        "--reconnect-every",
        "1s",
        "--threads",
        "1",
        "--quiet",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let run = tokio::spawn(load_test::run(cfg));
    tokio::time::sleep(kill_after).await;
    b_stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .unwrap()
        .unwrap();
    a_stop.cancel();
    println!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_arrives_once_across_reconnects_and_a_lost_node() {
    let r = run_against(10_000, Duration::from_millis(1500)).await;
    let d = &r.deliveries;
    let rec = r
        .recovery
        .as_ref()
        .expect("reconnect mode reports recovery");
    assert_eq!(r.connections.failed, 0);
    assert_eq!(r.publish.ticks, 800);
    assert_eq!(d.expected, 800 * 10, "4 symbols, 10 readers each");
    assert_eq!(d.received, d.expected, "{d:?}");
    assert_eq!((d.missing, d.duplicated, d.conflated), (0, 0, 0));
    assert!(rec.forced_reconnects >= 20, "{rec:?}");
    assert!(r.closed_by_server > 0, "B's clients lost their node");
    assert!(rec.resumed > 0 && rec.recovered == rec.resumed, "{rec:?}");
    assert_eq!((rec.refused, rec.new_epochs, rec.seam_gaps), (0, 0, 0));
    assert_eq!(rec.unnumbered, 0, "every reply named an epoch");
    assert!(
        d.recovered > 0,
        "ticks published during reconnects were replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recovery_shows_as_missing_ticks() {
    // No history: a position is served only when nothing came after it.
    let r = run_against(0, Duration::from_millis(1500)).await;
    let d = &r.deliveries;
    let rec = r
        .recovery
        .as_ref()
        .expect("reconnect mode reports recovery");
    assert!(rec.refused > 0, "{rec:?}");
    assert_eq!(d.recovered, 0);
    assert_eq!(d.duplicated, 0);
    assert!(
        rec.seam_gaps > 0,
        "B's clients were away for a backoff: {rec:?}"
    );
    assert_eq!(
        d.missing, rec.seam_gaps,
        "every missing tick shows as a seq jump"
    );
    assert_eq!(d.received + d.missing, d.expected);
}
