//! The HTTP layer as `marketmux dev` wires it: loopback `Host` names only by
//! default (DNS rebinding), `--allowed-hosts`, JSON-only writes on the alert
//! API too, and `--admin-listen` taking `/debug/*` and `/metrics` off `--listen`.

mod dev_common;

use std::net::SocketAddr;
use std::time::Duration;

use marketmux::node::Node;
use marketmux_test_support::TempDir;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A dev node on a data directory of its own (removed after the test).
async fn start_dev(extra: &[&str]) -> (Node, TempDir) {
    let dir = TempDir::new("dev-http");
    let node = dev_common::start_dev(dir.path(), extra).await;
    (node, dir)
}

/// Status and JSON body of one raw request (`Connection: close`).
async fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn dev_answers_loopback_hosts_only_unless_told() {
    let (node, _dir) = start_dev(&[]).await;
    let addr = node.http_addr();
    let (status, body) = raw(addr, "GET /health HTTP/1.1\r\nHost: evil.example\r\n", "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_host");
    let (status, _) = raw(
        addr,
        &format!(
            "GET /health HTTP/1.1\r\nHost: localhost:{}\r\n",
            addr.port()
        ),
        "",
    )
    .await;
    assert_eq!(status, 200);
    // Alert writes are JSON only, like ticks.
    let (status, body) = raw(
        addr,
        &format!("POST /alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n"),
        r#"{"user_id":1,"symbol":"AAPL","target_price":1.0,"condition":"ABOVE"}"#,
    )
    .await;
    assert_eq!(status, 415, "{body}");
    node.stop().await.unwrap();

    let (node, _dir) = start_dev(&["--allowed-hosts", "prices.example"]).await;
    let addr = node.http_addr();
    let (status, _) = raw(
        addr,
        "GET /health HTTP/1.1\r\nHost: prices.example:8080\r\n",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw(addr, "GET /health HTTP/1.1\r\nHost: evil.example\r\n", "").await;
    assert_eq!(status, 403);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn admin_listen_takes_debug_and_metrics_off_the_main_listener() {
    let (node, _dir) = start_dev(&["--admin-listen", "127.0.0.1:0"]).await;
    let (main, admin) = (node.http_addr(), node.metrics_addr());
    let host = |a: SocketAddr| format!("Host: {a}\r\n");
    for path in ["/debug/vars", "/metrics"] {
        let (status, _) = raw(main, &format!("GET {path} HTTP/1.1\r\n{}", host(main)), "").await;
        assert_eq!(status, 404, "{path} on --listen");
        let (status, _) = raw(
            admin,
            &format!("GET {path} HTTP/1.1\r\n{}", host(admin)),
            "",
        )
        .await;
        assert_eq!(status, 200, "{path} on --admin-listen");
    }
    node.stop().await.unwrap();
}
