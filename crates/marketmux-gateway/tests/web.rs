//! The live page's assets and its JSON endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use marketmux_bus::InProcessBus;
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_gateway::web::{RateWindow, SymbolDirectory};
use marketmux_gateway::{GatewayConfig, GatewayState};
use marketmux_test_support::wait_for;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A gateway on 127.0.0.1:0 over the in-process bus; stops when dropped.
struct TestNode {
    addr: SocketAddr,
    state: Arc<GatewayState>,
    bus: Arc<InProcessBus>,
    _stop: tokio_util::sync::DropGuard,
}

impl TestNode {
    async fn start(config: GatewayConfig) -> Self {
        Self::start_with(config, None).await
    }

    async fn start_with(config: GatewayConfig, directory: Option<SymbolDirectory>) -> Self {
        let bus = InProcessBus::new();
        let hub = GatewayState::new_hub();
        let h = hub.clone();
        bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
            h.publish_batch(ticks);
        }));
        let state = GatewayState::new(config, hub, bus.clone(), bus.clone(), vec![bus.clone()]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let mut router = marketmux_gateway::router(state.clone());
        if let Some(d) = directory {
            router = d.serve_on(router);
        }
        tokio::spawn(marketmux_gateway::serve(
            listener,
            state.clone(),
            router,
            stop.clone(),
        ));
        Self {
            addr,
            state,
            bus,
            _stop: stop.drop_guard(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn connect(
        &self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .unwrap()
            .0
    }

    fn publish(&self, symbol: &str, price: f64) {
        self.bus
            .publish_now(&[marketmux_test_support::tick(symbol, price)]);
    }

    async fn eventually(&self, what: &str, f: impl Fn(&GatewayState) -> bool) {
        marketmux_test_support::eventually(what, Duration::from_secs(10), || f(&self.state)).await;
    }
}

#[tokio::test]
async fn page_and_assets_are_served() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    for (path, mime, needle) in [
        ("/", "text/html", "/app.js"),
        ("/app.css", "text/css", "--up"),
        ("/app.js", "text/javascript", "requestAnimationFrame"),
    ] {
        let r = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(mime), "{path}: {ct}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
}

#[tokio::test]
async fn stats_report_clients_and_rates() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let c = reqwest::Client::new();
    let _ws = node.connect().await;
    node.eventually("one client", |s| s.registry.len() == 1)
        .await;

    let first: Value = c
        .get(node.url("/api/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["clients"], 1);
    assert!(
        first["ticks_per_sec"].is_null(),
        "one sample has no rate: {first}"
    );

    for i in 0..50 {
        node.publish("AAPL", 100.0 + i as f64);
    }
    // The rate is over the time since the previous sample: poll until the
    // second sample names one.
    let second: Value = wait_for(
        "a second stats sample with a rate",
        Duration::from_secs(10),
        || async {
            let v: Value = c
                .get(node.url("/api/v1/stats"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["ticks_per_sec"].as_f64().is_some().then_some(v)
        },
    )
    .await;
    let tps = second["ticks_per_sec"].as_f64().unwrap_or_default();
    assert!(tps > 10.0, "{second}");
    assert!(second["deliveries_per_sec"].as_f64().is_some(), "{second}");
}

#[tokio::test]
async fn symbols_lists_followed_symbols_by_prefix() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut ws = node.connect().await;
    ws.send(Message::text(
        r#"{"action":"subscribe","symbols":["AAPL","AMZN","MSFT"]}"#,
    ))
    .await
    .unwrap();
    node.eventually("three topics", |s| s.hub.topic_count() == 3)
        .await;
    let c = reqwest::Client::new();
    let all: Value = c
        .get(node.url("/api/v1/symbols"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["symbols"], serde_json::json!(["AAPL", "AMZN", "MSFT"]));
    let a: Value = c
        .get(node.url("/api/v1/symbols?q=a&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["symbols"], serde_json::json!(["AAPL"]));
}

#[tokio::test]
async fn symbols_include_the_directory_of_known_prices() {
    let bus = InProcessBus::new();
    let prices = bus.clone();
    let dir = SymbolDirectory::new(move || prices.prices().symbols());
    let node = TestNode::start_with(GatewayConfig::default(), Some(dir)).await;
    // The directory here reads a separate bus: what it lists is what the page offers.
    bus.publish_now(&[Tick::new(
        Symbol::new("BINANCE:BTCUSDT").unwrap(),
        1.0,
        Timestamp::now(),
        None,
    )
    .unwrap()]);
    let v: Value = reqwest::get(node.url("/api/v1/symbols?q=binance"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["symbols"], serde_json::json!(["BINANCE:BTCUSDT"]));
}

#[test]
fn rate_window_uses_the_oldest_sample_in_its_window() {
    let w = RateWindow::default();
    let t0 = Instant::now();
    assert!(w.sample_at(t0, 0, 0).is_none());
    assert!(w
        .sample_at(t0 + Duration::from_millis(100), 10, 10)
        .is_none());
    let r = w.sample_at(t0 + Duration::from_secs(1), 100, 300).unwrap();
    assert_eq!(r.ticks_per_sec, 100.0);
    assert_eq!(r.deliveries_per_sec, 300.0);
    // Ten seconds later the first two samples have left the window; one
    // sample older than the window stays as the base.
    let r = w
        .sample_at(t0 + Duration::from_secs(11), 1100, 300)
        .unwrap();
    assert_eq!(r.window_secs, 10.0);
    let r = w
        .sample_at(t0 + Duration::from_secs(12), 1200, 300)
        .unwrap();
    assert_eq!(r.window_secs, 11.0);
    assert_eq!(r.ticks_per_sec, 100.0);
    let r = w
        .sample_at(t0 + Duration::from_secs(17), 1700, 300)
        .unwrap();
    assert_eq!(r.window_secs, 6.0);
    assert_eq!(r.deliveries_per_sec, 0.0);
}
