//! The Finnhub client against a local fake server speaking Finnhub's protocol:
//! subscribes, batched trades, pings, a dropped connection and the
//! resubscription after it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{SinkExt as _, StreamExt as _};
use marketmux_bus::{BusError, TickPublisher};
use marketmux_core::{ClockSkew, Symbol, Tick, Timestamp};
use marketmux_ingest::{FinnhubClient, FinnhubConfig};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder(Mutex<Vec<Tick>>);

#[async_trait]
impl TickPublisher for Recorder {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.0.lock().extend(ticks);
        Ok(())
    }
}

/// Accepts one client, returning the socket and the request's query string.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
async fn accept(listener: &TcpListener) -> (WebSocketStream<TcpStream>, String) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut query = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or_default().to_owned();
        Ok(resp)
    })
    .await
    .unwrap();
    (ws, query)
}

/// The next text frame, as JSON.
async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the client said nothing")
            .expect("the client hung up")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn send(ws: &mut WebSocketStream<TcpStream>, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn subscriptions(ws: &mut WebSocketStream<TcpStream>, n: usize) -> Vec<String> {
    let mut symbols = Vec::new();
    for _ in 0..n {
        let m = next_json(ws).await;
        assert_eq!(m["type"], "subscribe", "{m}");
        symbols.push(m["symbol"].as_str().unwrap().to_owned());
    }
    symbols
}

fn trade(s: &str, p: f64, t: i64) -> serde_json::Value {
    serde_json::json!({"s": s, "p": p, "v": 1.5, "t": t, "c": ["1"]})
}

#[tokio::test]
async fn subscribes_parses_trades_answers_pings_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let symbols = vec![
        Symbol::new("AAPL").unwrap(),
        Symbol::new("BINANCE:BTCUSDT").unwrap(),
    ];
    let mut config = FinnhubConfig::new(url, "test-token", symbols);
    config.backoff_base = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(50);
    let client = FinnhubClient::new(config);
    let stats = client.stats();
    let sink = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(sink.clone(), stop.clone()));

    // First connection: token, subscriptions, two trade batches around a ping.
    let (mut ws, query) = accept(&listener).await;
    assert_eq!(query, "token=test-token");
    assert_eq!(subscriptions(&mut ws, 2).await, ["AAPL", "BINANCE:BTCUSDT"]);
    send(
        &mut ws,
        serde_json::json!({"type": "trade", "data": [
            trade("AAPL", 150.25, 1_715_526_245_123),
            trade("BINANCE:BTCUSDT", 64_000.5, 1_715_526_245_124),
            trade("AAPL", 150.5, 1_715_526_245_200),
        ]}),
    )
    .await;
    send(&mut ws, serde_json::json!({"type": "ping"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type": "pong"})
    );
    send(
        &mut ws,
        serde_json::json!({"type": "trade", "data": [
            trade("AAPL", 151.0, 1_715_526_246_000),
            trade("bad symbol", 1.0, 1_715_526_246_000),
            trade("AAPL", -3.0, 1_715_526_246_000),
        ]}),
    )
    .await;
    send(&mut ws, serde_json::json!({"type": "news", "data": []})).await;
    // Ask for another pong so we know the client has read everything before we drop it.
    send(&mut ws, serde_json::json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    drop(ws); // abruptly, no close frame

    // The client comes back and subscribes again.
    let (mut ws, query) = accept(&listener).await;
    assert_eq!(query, "token=test-token");
    assert_eq!(subscriptions(&mut ws, 2).await, ["AAPL", "BINANCE:BTCUSDT"]);
    send(
        &mut ws,
        serde_json::json!({"type": "trade", "data": [
            trade("BINANCE:BTCUSDT", 64_001.0, 1_715_526_247_000),
        ]}),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.0.lock().len() < 5 {
        assert!(Instant::now() < deadline, "ticks: {:?}", sink.0.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got: Vec<(String, f64)> = sink
        .0
        .lock()
        .iter()
        .map(|t| (t.symbol.to_string(), t.price))
        .collect();
    assert_eq!(
        got,
        [
            ("AAPL".to_owned(), 150.25),
            ("BINANCE:BTCUSDT".to_owned(), 64_000.5),
            ("AAPL".to_owned(), 150.5),
            ("AAPL".to_owned(), 151.0),
            ("BINANCE:BTCUSDT".to_owned(), 64_001.0),
        ]
    );
    let first = sink.0.lock()[0];
    assert_eq!(first.timestamp.to_rfc3339(), "2024-05-12T15:04:05.123Z");
    assert_eq!(first.volume, Some(1.5));
    assert_eq!(stats.connections.load(Ordering::Relaxed), 2);
    assert_eq!(stats.pings.load(Ordering::Relaxed), 2);
    assert_eq!(stats.invalid_trades.load(Ordering::Relaxed), 2);
    assert_eq!(stats.published.load(Ordering::Relaxed), 5);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the client stops when told")
        .unwrap();
}

#[tokio::test]
async fn keeps_retrying_while_the_server_is_away() {
    // Bind, learn the port, close: the first attempts are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = FinnhubConfig::new(
        format!("ws://{addr}"),
        "",
        vec![Symbol::new("AAPL").unwrap()],
    );
    config.backoff_base = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(40);
    let client = FinnhubClient::new(config);
    let stats = client.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(Arc::new(Recorder::default()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.connections.load(Ordering::Relaxed), 0);

    let listener = TcpListener::bind(addr).await.unwrap();
    let (mut ws, query) = tokio::time::timeout(Duration::from_secs(10), accept(&listener))
        .await
        .expect("the client came back once the server was up");
    assert_eq!(query, "", "no token, no query");
    assert_eq!(subscriptions(&mut ws, 1).await, ["AAPL"]);
    stop.cancel();
    task.await.unwrap();
}

/// A trade dated further in the future than the clock-skew bound is dropped
/// and counted; the trades around it go through.
#[tokio::test]
async fn drops_trades_dated_in_the_future() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let config = FinnhubConfig {
        max_clock_skew: ClockSkew::new(Duration::from_secs(60)),
        ..FinnhubConfig::new(url, "test-token", vec![Symbol::new("AAPL").unwrap()])
    };
    let client = FinnhubClient::new(config);
    let stats = client.stats();
    let sink = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(sink.clone(), stop.clone()));

    let (mut ws, _) = accept(&listener).await;
    subscriptions(&mut ws, 1).await;
    let now_ms = Timestamp::now().as_micros() / 1_000;
    send(
        &mut ws,
        serde_json::json!({"type": "trade", "data": [
            trade("AAPL", 150.0, now_ms - 1_000),
            // Year 2262, then ten minutes ahead: both past the 60 s bound.
            trade("AAPL", 999.0, 9_223_372_036_000),
            trade("AAPL", 998.0, now_ms + 600_000),
            trade("AAPL", 151.0, now_ms + 30_000),
        ]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.0.lock().len() < 2 {
        assert!(Instant::now() < deadline, "ticks: {:?}", sink.0.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let prices: Vec<f64> = sink.0.lock().iter().map(|t| t.price).collect();
    assert_eq!(prices, [150.0, 151.0]);
    assert_eq!(stats.future_trades.load(Ordering::Relaxed), 2);
    assert_eq!(stats.trades.load(Ordering::Relaxed), 2);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the client stops when told")
        .unwrap();
}
