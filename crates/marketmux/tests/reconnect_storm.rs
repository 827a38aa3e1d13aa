//! A reconnect storm: 10,000 subscribed sockets dropped at once and all
//! reconnecting at once are all served again, within a memory bound.
//!
//! The gateway runs as its own process (the real binary): 10,000 sockets on
//! each side would not fit one process's 20,000 file descriptors.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

const SOCKETS: usize = 10_000;

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        assert!(
            lim.rlim_cur as usize > SOCKETS + 500,
            "this test needs {} file descriptors; the limit is {} (raise it with ulimit -n)",
            SOCKETS + 500,
            lim.rlim_cur
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn open_all(
    port: u16,
    parallel: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let gate = Arc::new(Semaphore::new(parallel));
    let tasks: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let url = format!("ws://127.0.0.1:{port}/ws");
                let mut ws = loop {
                    match tokio_tungstenite::connect_async(&url).await {
                        Ok((ws, _)) => break ws,
                        // A storm may overflow the listen backlog: retry like a client would.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50 + (i % 100) as u64)).await
                        }
                    }
                };
                let sub = format!(
                    r#"{{"action":"subscribe","symbols":["S{}","AAPL"]}}"#,
                    i % 200
                );
                ws.send(Message::text(sub)).await.expect("subscribe");
                loop {
                    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.contains("\"subscribed\"") => {
                            return ws
                        }
                        Ok(Some(Ok(_))) => continue,
                        other => panic!("socket {i} not served: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(SOCKETS);
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

async fn vars(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/debug/vars"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sockets_drop_and_reconnect_at_once() {
    raise_fd_limit();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = std::env::temp_dir().join(format!("marketmux-storm-{port}"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marketmux"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--feed-rate",
            "1",
            "--max-connections-per-ip",
            "0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start marketmux");
    let pid = child.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "marketmux did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_empty = rss_kib(pid);

    let sockets = open_all(port, 256).await;
    assert_eq!(vars(port).await["connections"], SOCKETS);
    let rss_full = rss_kib(pid);

    // Everyone drops at once, without a close frame.
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(60);
    while vars(port).await["connections"].as_u64() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "dropped sockets were not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And everyone comes back at once.
    let again = open_all(port, SOCKETS).await;
    let v = vars(port).await;
    assert_eq!(v["connections"], SOCKETS);
    assert_eq!(v["topics"], 201);
    let rss_after = rss_kib(pid);
    eprintln!(
        "server RSS: empty {rss_empty} KiB, 10k sockets {rss_full} KiB, after the storm {rss_after} KiB \
         ({:.1} KiB per socket)",
        (rss_full.saturating_sub(rss_empty)) as f64 / SOCKETS as f64
    );
    // Memory bound: the storm costs no more than the first 10,000 sockets did, plus slack
    // for allocator fragmentation; per socket it stays within 64 KiB even in a debug build.
    assert!(
        rss_after < rss_full * 3 / 2 + 16 * 1024,
        "RSS after the storm {rss_after} KiB vs {rss_full} KiB before"
    );
    assert!(
        (rss_after - rss_empty) / (SOCKETS as u64) < 64,
        "per-socket memory bound"
    );
    drop(again);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&data);
}
