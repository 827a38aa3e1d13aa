//! The HTTP layer against hostile clients, over raw TCP: request heads and
//! bodies bounded in size and time, limits checked on the head before any
//! body is read, connections counted per address before any upgrade, and
//! every error the layer writes in the JSON shape.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestNode;
use marketmux_gateway::GatewayConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A response read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one response (its head and `content-length` body) within `wait`.
async fn read_answer(tcp: &mut TcpStream, wait: Duration) -> Option<Answer> {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let body =
                    serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                return Some(Answer { status, head, body });
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the server closes `tcp` within `wait` (reading and dropping what comes).
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

fn assert_json_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.body["error"]["code"], code, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{a:?}"
    );
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{a:?}"
    );
}

const TICK: &str = r#"{"symbol":"AAPL","price":1.5,"timestamp":"2026-05-12T15:04:05Z"}"#;

#[tokio::test]
async fn ingest_checks_token_and_length_before_reading_the_body() {
    let config = GatewayConfig {
        auth: std::sync::Arc::new(marketmux_gateway::auth::AuthConfig {
            ingest_token: Some("ingest-secret".into()),
            ..Default::default()
        }),
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    // 4 MiB announced, none sent: the missing token is answered at once.
    let mut tcp = send(
        node.addr,
        b"POST /api/v1/ticks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n",
    )
    .await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("401 without waiting for the body");
    assert_json_error(&a, 401, "unauthorized");
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);

    // With the token, a length over the limit is 413 on the head alone.
    let mut tcp = send(
        node.addr,
        b"POST /api/v1/ticks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ingest-secret\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n",
    )
    .await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("413 without waiting for the body");
    assert_json_error(&a, 413, "body_too_large");
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);

    // An honest request still goes through.
    let req = format!(
        "POST /api/v1/ticks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ingest-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{TICK}",
        TICK.len()
    );
    let mut tcp = send(node.addr, req.as_bytes()).await;
    let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
    assert_eq!(a.status, 202, "{a:?}");
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_its_connection_closed() {
    let node = TestNode::start(GatewayConfig {
        body_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut tcp = send(
        node.addr,
        b"POST /api/v1/ticks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n[",
    )
    .await;
    let a = read_answer(&mut tcp, Duration::from_secs(5))
        .await
        .expect("an answer once the body is late");
    assert_json_error(&a, 408, "request_timeout");
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
    assert!(started.elapsed() < Duration::from_secs(4));
    let metrics = reqwest::get(node.url("/metrics")).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("marketmux_limit_hits_total{limit=\"request_timeout\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_heads_are_bounded_in_size_and_time() {
    let node = TestNode::start(GatewayConfig {
        handshake_timeout: Duration::from_millis(400),
        ..GatewayConfig::default()
    })
    .await;
    // Headers without end: 431 once past the limit, not buffered on.
    let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
    for _ in 0..20 {
        if tcp.write_all(filler.as_bytes()).await.is_err() {
            break;
        }
    }
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("431 with a body");
    assert_json_error(&a, 431, "headers_too_large");
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);

    // A request line alone past the limit: 414.
    let long = format!("GET /price/{} HTTP/1.1\r\n", "A".repeat(10_000));
    let mut tcp = send(node.addr, long.as_bytes()).await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("414");
    assert_json_error(&a, 414, "uri_too_long");

    // Garbage: 400 with a body.
    let mut tcp = send(node.addr, b"\x16\x03\x01\x02\x00 nonsense\r\n\r\n").await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("400");
    assert_json_error(&a, 400, "bad_request");

    // A head that stops halfway: 408 after the head timeout, then closed.
    let started = Instant::now();
    let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("408");
    assert_json_error(&a, 408, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);

    // An idle keep-alive connection is closed at the head timeout without
    // an answer nobody asked for.
    let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
    assert_eq!(a.status, 200);
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
        .await
        .expect("closed after the head timeout");
    assert_eq!(n.unwrap_or(0), 0, "{:?}", String::from_utf8_lossy(&buf));

    // A connection that sends nothing is closed without an answer.
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
        .await
        .expect("closed after the head timeout");
    assert_eq!(n.unwrap_or(0), 0, "{:?}", String::from_utf8_lossy(&buf));

    // The node still answers.
    let r = reqwest::get(node.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_count_per_address_before_any_upgrade() {
    let node = TestNode::start(GatewayConfig {
        max_connections_per_ip: 3,
        ..GatewayConfig::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(node.addr).await.unwrap());
    }
    node.eventually("three slots taken", |s| s.registry.ips() == 1)
        .await;
    let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("an answer");
    assert_json_error(&a, 429, "too_many_connections");
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
    // A slot freed is a slot taken again.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_past_the_node_cap_are_answered_503() {
    let node = TestNode::start(GatewayConfig {
        max_connections: 2,
        ..GatewayConfig::default()
    })
    .await;
    let _held = [
        TcpStream::connect(node.addr).await.unwrap(),
        TcpStream::connect(node.addr).await.unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = send(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
        if a.status == 503 {
            assert_json_error(&a, 503, "unavailable");
            break;
        }
        // The two held connections may not be accepted yet.
        assert!(Instant::now() < deadline, "{a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_not_switched() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut tcp = send(
        node.addr,
        b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let a = read_answer(&mut tcp, Duration::from_secs(3))
        .await
        .expect("an answer");
    assert_json_error(&a, 400, "bad_handshake");
}

async fn post(node: &TestNode, headers: &str, body: &str) -> Answer {
    let req = format!(
        "POST /api/v1/ticks HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        node.addr,
        body.len()
    );
    let mut tcp = send(node.addr, req.as_bytes()).await;
    read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap()
}

#[tokio::test]
async fn writes_need_json_and_no_foreign_origin() {
    let node = TestNode::start(GatewayConfig::default()).await;
    for ct in [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    ] {
        let a = post(&node, ct, TICK).await;
        assert_json_error(&a, 415, "unsupported_media_type");
    }
    let json = "Content-Type: application/json\r\n";
    let a = post(
        &node,
        &format!("{json}Origin: https://evil.example\r\n"),
        TICK,
    )
    .await;
    assert_json_error(&a, 403, "forbidden_origin");
    let a = post(
        &node,
        &format!("{json}Origin: http://{}\r\n", node.addr),
        TICK,
    )
    .await;
    assert_eq!(a.status, 202, "the node's own page: {a:?}");
    let a = post(&node, json, TICK).await;
    assert_eq!(a.status, 202, "no Origin: not a browser: {a:?}");
}

#[tokio::test]
async fn a_loopback_only_node_refuses_other_hosts_even_on_upgrade() {
    let node = TestNode::start(GatewayConfig {
        allowed_hosts: Some(Vec::new()),
        ..GatewayConfig::default()
    })
    .await;
    let upgrade = |host: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let mut tcp = send(node.addr, upgrade("evil.example").as_bytes()).await;
    let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
    assert_json_error(&a, 403, "forbidden_host");
    let mut tcp = send(
        node.addr,
        b"GET /health HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n",
    )
    .await;
    let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
    assert_json_error(&a, 403, "forbidden_host");

    for host in [
        node.addr.to_string(),
        format!("localhost:{}", node.addr.port()),
    ] {
        let mut tcp = send(node.addr, upgrade(&host).as_bytes()).await;
        let a = read_answer(&mut tcp, Duration::from_secs(3)).await.unwrap();
        assert_eq!(a.status, 101, "{host}: {a:?}");
    }
}

#[tokio::test]
async fn debug_endpoints_stay_off_a_public_listener_without_the_admin_token() {
    let node = TestNode::start_on(GatewayConfig::default(), "0.0.0.0:0").await;
    let c = reqwest::Client::new();
    for path in ["/debug/vars", "/debug/pprof/profile?seconds=1"] {
        let r = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "admin_only");
    }
    assert_eq!(
        c.get(node.url("/metrics")).send().await.unwrap().status(),
        200
    );

    // With the token set, the token opens them there.
    let node = TestNode::start_on(
        GatewayConfig {
            admin_token: Some("s3cret".into()),
            ..GatewayConfig::default()
        },
        "0.0.0.0:0",
    )
    .await;
    let r = c.get(node.url("/debug/vars")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(node.url("/debug/vars"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An admin listener answers them without a token; the public routes are not there.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let public = TestNode::start_on(GatewayConfig::default(), "0.0.0.0:0").await;
    tokio::spawn(marketmux_gateway::serve_admin(
        admin,
        public.state.clone(),
        public.shutdown.clone(),
    ));
    for (path, status) in [
        ("/debug/vars", 200),
        ("/metrics", 200),
        ("/health", 200),
        ("/price/AAPL", 404),
    ] {
        let r = c
            .get(format!("http://{admin_addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
}
