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
