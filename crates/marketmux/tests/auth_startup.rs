//! Authentication fails closed: a JWT secret that is set but empty or too
//! short stops the node with a message (exit non-zero) instead of turning
//! authentication off; a good one starts it, and the log says how sockets
//! are authenticated.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn marketmux(data: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marketmux"));
    let dir = std::env::temp_dir().join(format!("marketmux-auth-startup-{data}"));
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--feed-rate", "0"])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MARKETMUX_JWT_SECRET")
        .env_remove("MARKETMUX_JWT_PUBLIC_KEY")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn an_empty_or_short_jwt_secret_stops_the_node() {
    let cases: [(&str, Option<&str>, &str); 3] = [
        ("empty-env", Some(""), "0 bytes"),
        ("short-env", Some("short-secret"), "12 bytes"),
        ("one-short", Some(&"k".repeat(31)), "31 bytes"),
    ];
    for (name, secret, says) in cases {
        let mut cmd = marketmux(name);
        if let Some(secret) = secret {
            cmd.env("MARKETMUX_JWT_SECRET", secret);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("the node exits at once")
            .expect("run marketmux");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: started anyway: {stderr}");
        assert!(
            stderr.contains("MARKETMUX_JWT_SECRET") && stderr.contains(says),
            "{name}: {stderr}"
        );
    }
    // The flag form is refused the same way.
    let out = marketmux("empty-flag")
        .args(["--jwt-secret", ""])
        .output()
        .await
        .expect("run marketmux");
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_log_says_whether_authentication_is_on_and_how() {
    for (name, secret, says) in [
        (
            "on",
            Some("a-random-secret-that-is-long-enough!!"),
            [
                "Authentication on: JWT with the shared secret",
                "algorithm=HS256",
            ],
        ),
        ("off", None, ["Authentication off", "ingest_token=false"]),
    ] {
        let mut cmd = marketmux(name);
        if let Some(secret) = secret {
            cmd.env("MARKETMUX_JWT_SECRET", secret);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start marketmux");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if says.iter().all(|s| line.contains(s)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "{name}: no log line saying {says:?}");
        child.kill().await.expect("stop marketmux");
    }
}
