//! `/metrics` and `/debug/pprof/profile` on a real node.

mod common;

use std::collections::HashMap;

use common::{recv, send, TestNode};
use marketmux_gateway::GatewayConfig;
use pprof::protos::Message as _;

/// Parses Prometheus text exposition: every sample line must be
/// `name{labels} value`, every family announced by HELP and TYPE first.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("TYPE names a family");
            let kind = parts.next().expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unknown comment: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        samples.insert(series.to_string(), value);
    }
    samples
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
    assert!(after["marketmux_queue_latency_seconds_count"] >= 1.0);
    assert_eq!(
        after["marketmux_queue_latency_seconds_bucket{le=\"+Inf\"}"],
        after["marketmux_queue_latency_seconds_count"]
    );
    assert_eq!(after["marketmux_component_up{component=\"bus\"}"], 1.0);
    // No label per client or per symbol.
    assert!(after.keys().all(|k| !k.contains("AAPL")));
}

#[tokio::test]
async fn cpu_profile_as_pprof_and_flamegraph() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    // Something to sample while profiling.
    let busy = tokio::task::spawn_blocking(|| {
        let t = std::time::Instant::now();
        let mut x = 0u64;
        // Longer than both profiles together, with room for a slow start.
        while t.elapsed().as_millis() < 5000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        x
    });
    let url = node.url("/debug/pprof/profile?seconds=1");
    let (first, second) = tokio::join!(c.get(&url).send(), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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
