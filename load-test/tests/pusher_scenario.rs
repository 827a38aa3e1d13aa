//! `--protocol pusher` against a small Pusher server on a real socket: it
//! speaks protocol 7 as Sockudo does (`pusher:connection_established`, one
//! `subscription_succeeded` per channel, a `pusher:ping` that must be
//! answered, events whose `data` is a string) and serves `batch_events`,
//! checking each request's signature the way Pusher specifies and closing
//! the connection after every answer, as Sockudo does. Some requests are
//! slow to be served, as under load: ticks must still arrive in order.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use futures_util::{SinkExt as _, StreamExt as _};
use hmac::{Hmac, KeyInit as _, Mac as _};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const APP_ID: &str = "it-app";
const KEY: &str = "it-key";
const SECRET: &str = "it-secret";

#[derive(Default)]
struct Server {
    /// Each channel's subscribers.
    channels: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>,
    pongs: AtomicU64,
    /// API requests so far.
    requests: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// The first refusal's reason.
    why: Mutex<Option<String>>,
}

impl Server {
    async fn start() -> (SocketAddr, Arc<Self>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(Self::default());
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 4];
                    if stream.peek(&mut first).await.is_ok() && &first == b"POST" {
                        s.api(stream).await;
                    } else {
                        s.socket(stream).await;
                    }
                });
            }
        });
        (addr, server)
    }

    async fn socket(&self, stream: TcpStream) {
        let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let (mut tx, mut rx) = ws.split();
        let (out, mut queue) = mpsc::unbounded_channel::<String>();
        let est = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}"#;
        let _ = out.send(est.into());
        tokio::spawn(async move {
            while let Some(m) = queue.recv().await {
                if tx.send(Message::text(m)).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(msg)) = rx.next().await {
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            match v["event"].as_str() {
                Some("pusher:subscribe") => {
                    let channel = v["data"]["channel"].as_str().unwrap().to_string();
                    let ok = serde_json::json!({
                        "event": "pusher_internal:subscription_succeeded",
                        "channel": channel,
                        "data": "{}",
                    });
                    let _ = out.send(ok.to_string());
                    // Ask for a pong once the client is subscribed.
                    let _ = out.send(r#"{"event":"pusher:ping","data":{}}"#.into());
                    self.channels
                        .lock()
                        .unwrap()
                        .entry(channel)
                        .or_default()
                        .push(out.clone());
                }
                Some("pusher:pong") => {
                    self.pongs.fetch_add(1, Relaxed);
                }
                other => panic!("unexpected client event {other:?}"),
            }
        }
    }

    async fn api(&self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request cut short");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("content-length");
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "body cut short");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[head_end..head_end + len];
        let target = head.split(' ').nth(1).unwrap();
        // Every third request is slow, so a later one sent meanwhile overtakes it.
        if self.requests.fetch_add(1, Relaxed).is_multiple_of(3) {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let status = match verify(target, body) {
            Ok(()) => {
                self.accepted.fetch_add(1, Relaxed);
                self.fan_out(body);
                "200 OK"
            }
            Err(why) => {
                self.refused.fetch_add(1, Relaxed);
                self.why.lock().unwrap().get_or_insert(why);
                "401 Unauthorized"
            }
        };
        let resp =
            format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let _ = stream.write_all(resp.as_bytes()).await;
        // Sockudo closes every API connection after its answer.
        let _ = stream.shutdown().await;
    }

    fn fan_out(&self, body: &[u8]) {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let channels = self.channels.lock().unwrap();
        for e in v["batch"].as_array().unwrap() {
            assert_eq!(e["name"], "tick");
            let data = e["data"].as_str().expect("data is a string");
            let channel = e["channel"].as_str().unwrap();
            let m = serde_json::json!({"event": "tick", "channel": channel, "data": data});
            for sub in channels.get(channel).into_iter().flatten() {
                let _ = sub.send(m.to_string());
            }
        }
    }
}

/// Checks a `batch_events` request as Pusher specifies.
fn verify(target: &str, body: &[u8]) -> Result<(), String> {
    let (path, query) = target.split_once('?').ok_or("no query")?;
    if path != format!("/apps/{APP_ID}/batch_events") {
        return Err(format!("path {path}"));
    }
    let mut params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_lowercase(), v.to_string()))
        .collect();
    let sig = params.remove("auth_signature").ok_or("no auth_signature")?;
    if params.get("auth_key").map(String::as_str) != Some(KEY) {
        return Err("auth_key".into());
    }
    if params.get("auth_version").map(String::as_str) != Some("1.0") {
        return Err("auth_version".into());
    }
    let ts: i64 = params
        .get("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("auth_timestamp")?;
    let now = chrono::Utc::now().timestamp();
    if (now - ts).abs() > 600 {
        return Err("auth_timestamp too far".into());
    }
    let md5: String = Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if params.get("body_md5") != Some(&md5) {
        return Err("body_md5".into());
    }
    let sorted: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut mac = <Hmac<Sha256>>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("POST\n{path}\n{}", sorted.join("&")).as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sig != want {
        return Err("auth_signature".into());
    }
    Ok(())
}

fn config(addr: SocketAddr, secret: &str, extra: &[&str]) -> load_test::Config {
    let url = format!("ws://{addr}/");
    let mut args = vec![
        "load-test",
        "--protocol",
        "pusher",
        "--url",
        &url,
        "--pusher-app-id",
        APP_ID,
        "--pusher-key",
        KEY,
        "--pusher-secret",
        secret,
        "--quiet",
        "--drain",
        "2s",
    ];
    args.extend_from_slice(extra);
    load_test::Cli::try_parse_from(args)
        .unwrap()
        .into_config()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_reaches_every_pusher_subscriber() {
    let (addr, server) = Server::start().await;
    // 300 ticks/s, a batch every 10 ms: 3 events a request, in requests of at most 2.
    let cfg = config(
        addr,
        SECRET,
        &[
            "-c",
            "20",
            "--symbols",
            "4",
            "--subs-per-client",
            "2",
            "--publish-rate",
            "300",
            "--duration",
            "2s",
            "--pusher-batch",
            "2",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(60), load_test::run(cfg))
        .await
        .expect("the run stops by itself")
        .unwrap();
    println!("{report}");
    assert_eq!(report.first_error, None);
    assert_eq!(server.refused.load(Relaxed), 0, "{:?}", server.why.lock());
    assert_eq!(report.connections.subscribed, 20);
    assert_eq!(report.connections.failed, 0);
    assert_eq!(report.publish.ticks, 600);
    assert_eq!(report.publish.errors, 0);
    assert_eq!(report.publish.batches, server.accepted.load(Relaxed));
    assert!(
        report.publish.batches >= 300,
        "at most 2 events a request: {}",
        report.publish.batches
    );
    // 4 symbols, 20 clients × 2 subscriptions round-robin: 10 readers each.
    assert_eq!(report.deliveries.expected, 600 * 10);
    assert_eq!(report.deliveries.received, report.deliveries.expected);
    assert_eq!(report.deliveries.conflated + report.deliveries.missing, 0);
    assert_eq!(
        report.deliveries.malformed + report.deliveries.duplicated,
        0
    );
    assert_eq!(report.latency.samples, 6000);
    // One ping per subscription, each answered.
    assert_eq!(server.pongs.load(Relaxed), 40);
    assert_eq!(report.server_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_are_counted_not_delivered() {
    let (addr, server) = Server::start().await;
    let cfg = config(
        addr,
        "not-the-secret",
        &[
            "-c",
            "2",
            "--symbol",
            "AAPL",
            "--publish-rate",
            "100",
            "--duration",
            "500ms",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(60), load_test::run(cfg))
        .await
        .expect("the run stops by itself")
        .unwrap();
    assert_eq!(server.accepted.load(Relaxed), 0);
    assert_eq!(
        server.why.lock().unwrap().as_deref(),
        Some("auth_signature")
    );
    assert_eq!(report.publish.ticks, 0);
    assert_eq!(report.publish.errors, server.refused.load(Relaxed));
    assert!(report.publish.errors > 0);
    assert_eq!(report.deliveries.expected, 0);
    let err = report.first_error.unwrap_or_default();
    assert!(err.contains("401"), "{err}");
}
