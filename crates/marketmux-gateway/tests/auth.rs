//! Authentication and admission on real sockets: every failure refused with
//! the right status or close code.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{expect_close, recv, send, TestNode};
use futures_util::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use marketmux_gateway::auth::{AuthConfig, JwtVerifier};
use marketmux_gateway::GatewayConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &[u8] = b"gateway-auth-test-secret-32-bytes!";

fn jwt(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn exp_in(secs: i64) -> u64 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + secs) as u64
}

async fn secured() -> TestNode {
    let auth = AuthConfig {
        jwt: Some(JwtVerifier::hs256(SECRET).expect("a 32-byte secret")),
        ingest_token: Some("ingest-secret".into()),
        allowed_origins: Some(vec!["https://app.example".into()]),
    };
    TestNode::start(GatewayConfig {
        auth: Arc::new(auth),
        allow_identify: true,
        ..GatewayConfig::default()
    })
    .await
}

/// Tries an upgrade with extra headers; Ok(socket, response) or the HTTP status.
async fn upgrade(
    node: &TestNode,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<common::Ws, (u16, String)> {
    let mut req = format!("ws://{}/ws{query}", node.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name: http::HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn sockets_need_a_valid_token() {
    let node = secured().await;
    let (status, body) = upgrade(&node, "", &[]).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("missing token"), "{body}");

    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"7","exp":exp_in(60)}),
        &EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    let (status, body) = upgrade(&node, &format!("?token={forged}"), &[])
        .await
        .unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("invalid token"), "{body}");

    let expired = jwt(json!({"sub":"7","exp":exp_in(-120)}));
    let (status, body) = upgrade(
        &node,
        "",
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("token_expired"), "{body}");

    // Issued for later: refused until its `nbf` (beyond the 5 s leeway).
    let not_yet = jwt(json!({"sub":"7","exp":exp_in(600),"nbf":exp_in(120)}));
    let (status, body) = upgrade(&node, &format!("?token={not_yet}"), &[])
        .await
        .unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("not valid yet"), "{body}");

    let bad_sub = jwt(json!({"sub":"alice","exp":exp_in(60)}));
    assert_eq!(
        upgrade(&node, &format!("?token={bad_sub}"), &[])
            .await
            .unwrap_err()
            .0,
        401
    );

    // The three ways to present a token.
    let good = jwt(json!({"sub":"7","exp":exp_in(60)}));
    let mut ws = upgrade(&node, "", &[("authorization", &format!("Bearer {good}"))])
        .await
        .unwrap();
    send(&mut ws, r#"{"action":"ping"}"#).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    upgrade(&node, &format!("?token={good}"), &[])
        .await
        .unwrap();
    let proto = format!("marketmux.v1, bearer.{good}");
    let mut req = format!("ws://{}/ws", node.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", proto.parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("subprotocol token accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "marketmux.v1");

    // With authentication on, identify is refused: the token says who you are.
    send(&mut ws, r#"{"action":"identify","user_id":8}"#).await;
    assert_eq!(recv(&mut ws).await["code"], "forbidden");
}

#[tokio::test]
async fn token_claims_restrict_symbols() {
    let node = secured().await;
    let t = jwt(json!({"sub":7,"exp":exp_in(60),"symbols":["AAPL","BINANCE:*"]}));
    let mut ws = upgrade(&node, &format!("?token={t}"), &[]).await.unwrap();
    send(
        &mut ws,
        r#"{"action":"subscribe","symbols":["AAPL","BINANCE:BTCUSDT"]}"#,
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        r#"{"action":"subscribe","symbols":["MSFT"],"id":3}"#,
    )
    .await;
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("forbidden"), Some(3)),
        "{m}"
    );
    assert!(m["message"].as_str().unwrap().contains("MSFT"));
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let node = secured().await;
    let t = jwt(json!({"sub":"7","exp":exp_in(2)}));
    let mut ws = upgrade(&node, &format!("?token={t}"), &[]).await.unwrap();
    let (code, reason) = tokio::time::timeout(Duration::from_secs(15), expect_close(&mut ws))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let node = secured().await;
    let t = jwt(json!({"sub":"7","exp":exp_in(60)}));
    let (status, body) = upgrade(
        &node,
        &format!("?token={t}"),
        &[("origin", "https://evil.example")],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("forbidden_origin"), "{body}");
    upgrade(
        &node,
        &format!("?token={t}"),
        &[("origin", "https://app.example")],
    )
    .await
    .expect("allowed origin");
}

#[tokio::test]
async fn ingest_needs_the_ingest_token() {
    let node = secured().await;
    let c = reqwest::Client::new();
    let body = r#"{"symbol":"AAPL","price":1.5,"timestamp":"2026-05-12T15:04:05Z"}"#;
    let r = c
        .post(node.url("/api/v1/ticks"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(node.url("/api/v1/ticks"))
        .header("content-type", "application/json")
        .bearer_auth("guess")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(node.url("/api/v1/ticks"))
        .header("content-type", "application/json")
        .bearer_auth("ingest-secret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let node = TestNode::start(GatewayConfig {
        max_connections_per_ip: 3,
        ..GatewayConfig::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(node.connect().await);
    }
    let (status, body) = upgrade(&node, "", &[]).await.unwrap_err();
    assert_eq!(status, 429);
    assert!(body.contains("too_many_connections"));
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    node.eventually("a slot is free", |s| s.registry.len() == 2)
        .await;
    let mut ok = None;
    for _ in 0..50 {
        if let Ok(ws) = upgrade(&node, "", &[]).await {
            ok = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok.is_some(), "a freed slot admits a new socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_socket_does_not_slow_the_others() {
    let node = TestNode::start(GatewayConfig {
        max_messages_per_sec: 20,
        ..GatewayConfig::default()
    })
    .await;
    let mut readers = Vec::new();
    for _ in 0..10 {
        let mut ws = node.connect().await;
        send(&mut ws, r#"{"action":"subscribe","symbol":"AAPL"}"#).await;
        assert_eq!(recv(&mut ws).await["type"], "subscribed");
        readers.push(ws);
    }
    let mut flooder = node.connect().await;
    let flood = tokio::spawn(async move {
        use futures_util::SinkExt;
        let mut sent = 0;
        while flooder
            .send(Message::text(r#"{"action":"subscribe","symbol":"MSFT"}"#))
            .await
            .is_ok()
            && sent < 100_000
        {
            sent += 1;
        }
        let mut code = None;
        while let Some(Ok(m)) = flooder.next().await {
            if let Message::Close(Some(c)) = m {
                code = Some(u16::from(c.code));
            }
        }
        code
    });
    let ticks = 2_000u64;
    let publisher = {
        let bus = node.bus.clone();
        tokio::spawn(async move {
            for i in 0..ticks {
                bus.publish_now(&[common::tick("AAPL", 100.0 + (i % 10) as f64)]);
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    for mut ws in readers {
        for expected in 1..=ticks {
            assert_eq!(
                recv(&mut ws).await["seq"].as_u64(),
                Some(expected),
                "every tick, in order, during the flood"
            );
        }
    }
    publisher.await.unwrap();
    assert_eq!(
        flood.await.unwrap(),
        Some(1008),
        "the flooder is told, then closed"
    );
}
