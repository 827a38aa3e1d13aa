//! `/metrics` and `/debug/pprof/profile` on a real node.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{recv, send, TestNode};
use marketmux_gateway::GatewayConfig;
use marketmux_test_support::eventually;
use pprof::protos::Message as _;

/// Every sample of a scrape; the test fails if it is not valid exposition.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    marketmux_test_support::exposition::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn metrics_parse_and_move_when_ticks_flow() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    let scrape = || async {
        let r = c.get(node.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        parse_prometheus(&r.text().await.unwrap())
    };
    let before = scrape().await;
    assert_eq!(before["marketmux_connections_open"], 0.0);
    assert_eq!(before["marketmux_ready"], 1.0);

    let mut ws = node.connect().await;
    send(&mut ws, r#"{"action":"subscribe","symbol":"AAPL"}"#).await;
    recv(&mut ws).await;
    for i in 0..10 {
        node.publish("AAPL", 100.0 + i as f64);
        recv(&mut ws).await;
    }
    let after = scrape().await;
    assert_eq!(after["marketmux_connections_open"], 1.0);
    assert_eq!(after["marketmux_subscriptions"], 1.0);
    assert_eq!(after["marketmux_topics"], 1.0);
    assert_eq!(
        after["marketmux_deliveries_total"] - before["marketmux_deliveries_total"],
        10.0
    );
    assert!(after["marketmux_bytes_written_total"] > before["marketmux_bytes_written_total"]);
    assert!(after["marketmux_delivery_latency_seconds_count"] >= 1.0);
    assert_eq!(
        after["marketmux_delivery_latency_seconds_bucket{le=\"+Inf\"}"],
        after["marketmux_delivery_latency_seconds_count"]
    );
    assert_eq!(after["marketmux_component_up{component=\"bus\"}"], 1.0);
    // No label per client or per symbol.
    assert!(after.keys().all(|k| !k.contains("AAPL")));
}

#[tokio::test]
async fn cpu_profile_as_pprof_and_flamegraph() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    // Something to sample while profiling, until both profiles are in (each
    // reads the symbol tables afresh: seconds in a debug build).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = tokio::task::spawn_blocking({
        let done = done.clone();
        move || {
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed().as_secs() < 60 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            x
        }
    });
    let url = node.url("/debug/pprof/profile?seconds=1");
    let (first, second) = tokio::join!(c.get(&url).send(), async {
        eventually("the first profile running", Duration::from_secs(10), || {
            marketmux_gateway::debug::profile_running()
        })
        .await;
        c.get(&url).send().await
    });
    assert_eq!(second.unwrap().status(), 409, "one profile at a time");
    let first = first.unwrap();
    assert_eq!(first.status(), 200);
    let profile =
        pprof::protos::Profile::decode(first.bytes().await.unwrap()).expect("valid pprof protobuf");
    assert!(!profile.sample_type.is_empty());
    assert!(!profile.string_table.is_empty());
    assert!(!profile.sample.is_empty(), "the busy thread was sampled");

    let svg = c
        .get(node.url("/debug/pprof/profile?seconds=1&format=flamegraph"))
        .send()
        .await
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(300)]);
    assert!(
        !svg.contains("No samples"),
        "a real flamegraph, not the idle placeholder: {}",
        &svg[..svg.len().min(300)]
    );
    busy.await.unwrap();

    for bad in ["seconds=0", "seconds=61", "format=gif"] {
        let r = c
            .get(node.url(&format!("/debug/pprof/profile?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn debug_endpoints_need_the_admin_token_when_set() {
    let config = GatewayConfig {
        admin_token: Some("s3cret".into()),
        ..GatewayConfig::default()
    };
    let node = TestNode::start(config).await;
    let c = reqwest::Client::new();
    for path in ["/debug/vars", "/debug/pprof/profile?seconds=1"] {
        let r = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(node.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = c
        .get(node.url("/debug/vars"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
