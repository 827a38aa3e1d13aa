//! REST endpoints on a real listener.

mod common;

use common::TestNode;
use marketmux_gateway::GatewayConfig;
use serde_json::{json, Value};

#[tokio::test]
async fn health_ready_price_and_ingest() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(node.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(node.url("/ready")).send().await.unwrap().status(),
        200
    );

    let r = c.get(node.url("/price/NOPE")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = c.get(node.url("/price/BAD%20SYM")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Errors axum itself writes are JSON too, with a code.
    let big = vec![b' '; GatewayConfig::default().max_ingest_body_bytes + 1];
    for (req, status, code) in [
        (c.get(node.url("/no/such/path")), 404, "no_such_endpoint"),
        (c.delete(node.url("/health")), 405, "method_not_allowed"),
        (c.get(node.url("/price/%FF")), 400, "bad_request"),
        (
            c.post(node.url("/api/v1/ticks"))
                .header("content-type", "application/json")
                .body(big),
            413,
            "body_too_large",
        ),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // The refused body is counted by its limit.
    let metrics = c.get(node.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("marketmux_limit_hits_total{limit=\"ingest_too_large\"} 1\n"),
        "{metrics}"
    );

    let r = c
        .post(node.url("/api/v1/ticks"))
        .header("content-type", "application/json")
        .body(
            r#"[{"symbol":"AAPL","price":150.25,"timestamp":"2026-05-12T15:04:05.123456Z"},
                  {"symbol":"AAPL","price":149.0,"timestamp":"2026-05-12T15:04:04Z"}]"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 2}));
    // The older second tick does not replace the newer latest price.
    let p: Value = c
        .get(node.url("/price/AAPL"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["price"], 150.25);
    assert_eq!(p["timestamp"], "2026-05-12T15:04:05.123456Z");

    for (body, code) in [
        ("{", "invalid_json"),
        (
            r#"{"symbol":"AAPL","timestamp":"2026-05-12T15:04:05Z"}"#,
            "invalid_tick",
        ),
        (
            r#"{"symbol":"AAPL","price":0,"timestamp":"2026-05-12T15:04:05Z"}"#,
            "invalid_tick",
        ),
        (
            r#"{"symbol":"AAPL","price":1,"timestamp":"later"}"#,
            "invalid_tick",
        ),
        (
            r#"{"symbol":"A A","price":1,"timestamp":"2026-05-12T15:04:05Z"}"#,
            "invalid_tick",
        ),
    ] {
        let r = c
            .post(node.url("/api/v1/ticks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{body}"
        );
    }

    node.shutdown.cancel();
    // Draining: readiness fails while the process still answers.
    let r = c.get(node.url("/ready")).send().await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 503);
    }
}

/// A timestamp further in the future than the clock-skew bound is refused
/// (400, the whole body), so it can never freeze a symbol's latest price.
#[tokio::test]
async fn ingest_refuses_timestamps_in_the_future() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    let post = |body: String| {
        c.post(node.url("/api/v1/ticks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let at = |secs: i64| {
        marketmux_core::Timestamp(marketmux_core::Timestamp::now().0 + secs * 1_000_000_000)
            .to_rfc3339()
    };
    let far = r#"{"symbol":"FUT2","price":999,"timestamp":"2262-04-11T23:47:16Z"}"#;
    let r = post(far.to_string()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timestamp_in_future", "{body}");
    assert_eq!(
        c.get(node.url("/price/FUT2"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let now = format!(r#"{{"symbol":"FUT2","price":10,"timestamp":"{}"}}"#, at(-1));
    assert_eq!(post(now).await.unwrap().status(), 202);
    // Ten minutes ahead, in an array with a good tick: nothing is taken.
    let mixed = format!(
        r#"[{{"symbol":"FUT2","price":11,"timestamp":"{}"}},
            {{"symbol":"FUT2","price":998,"timestamp":"{}"}}]"#,
        at(0),
        at(600)
    );
    let r = post(mixed).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("tick 1: timestamp")),
        "{body}"
    );
    // Within the default 60 s bound: accepted.
    let soon = format!(r#"{{"symbol":"FUT2","price":12,"timestamp":"{}"}}"#, at(20));
    assert_eq!(post(soon).await.unwrap().status(), 202);
    let p: Value = c
        .get(node.url("/price/FUT2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["price"], 12.0, "{p}");
}
