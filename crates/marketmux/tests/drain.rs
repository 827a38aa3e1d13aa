//! SIGTERM with 1,000 connected sockets: readiness fails at once, every socket
//! gets close 1012 spread over the drain period, and the process exits 0.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use marketmux_test_support::free_port;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)]
async fn sigterm_drains_1000_sockets_with_1012_spread_over_the_period() {
    let port = free_port();
    let data = std::env::temp_dir().join(format!("marketmux-drain-{port}"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marketmux"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--feed-rate",
            "0",
            "--drain-secs",
            "2",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start marketmux");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "marketmux did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut sockets = Vec::new();
    for _ in 0..1000 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .expect("connect");
        sockets.push(ws);
    }
    let start = Instant::now();
    let closes: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                        Ok(Some(Ok(Message::Close(Some(c))))) => {
                            return (u16::from(c.code), start.elapsed())
                        }
                        Ok(Some(Ok(_))) => continue,
                        other => panic!("socket ended without a close frame: {other:?}"),
                    }
                }
            })
        })
        .collect();

    let pid = child.id().expect("pid") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Readiness fails at once: within a second, long before the 2 s drain ends.
    let signalled = std::time::Instant::now();
    loop {
        let ready = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .expect("still answering while draining");
        if ready.status() == 503 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/ready still {} a second after SIGTERM",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await;
    assert!(refused.is_err(), "new upgrades are refused while draining");

    let mut times = Vec::new();
    for c in closes {
        let (code, at) = c.await.unwrap();
        assert_eq!(code, 1012);
        times.push(at);
    }
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        last < Duration::from_secs(5),
        "all closed within the drain period and a grace: {last:?}"
    );
    assert!(
        last - first > Duration::from_millis(1000),
        "closes spread over the 2 s period: {first:?}..{last:?}"
    );
    // No more than a tenth of the sockets in any 100 ms window.
    let peak = times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_millis(100))
                .count()
        })
        .max()
        .unwrap();
    assert!(peak <= 150, "{peak} closes within 100 ms");

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&data);
}
