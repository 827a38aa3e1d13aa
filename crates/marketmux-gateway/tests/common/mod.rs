//! A real gateway on 127.0.0.1:0 over the in-process bus (ticks and
//! candles), and a WebSocket client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use marketmux_bus::InProcessBus;
use marketmux_core::Tick;
use marketmux_gateway::{GatewayConfig, GatewayState};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestNode {
    pub addr: SocketAddr,
    pub state: Arc<GatewayState>,
    pub bus: Arc<InProcessBus>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl TestNode {
    pub async fn start(config: GatewayConfig) -> Self {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// A node listening on `bind` (e.g. `0.0.0.0:0`, a non-loopback listener).
    pub async fn start_on(config: GatewayConfig, bind: &str) -> Self {
        let bus = InProcessBus::new();
        let hub = GatewayState::new_hub();
        let h = hub.clone();
        // As the roles do: batches, so ticks reach idle sockets by direct writes.
        bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
            h.publish_batch(ticks);
        }));
        let state = GatewayState::new(config, hub, bus.clone(), bus.clone(), vec![bus.clone()]);
        // The bus builds candles; the node's live copy follows its ticks.
        let candles = state.candles.clone();
        bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| candles.on_ticks(ticks)));
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let shutdown = CancellationToken::new();
        let router = marketmux_gateway::router(state.clone());
        let task = tokio::spawn(marketmux_gateway::serve(
            listener,
            state.clone(),
            router,
            shutdown.clone(),
        ));
        Self {
            addr,
            state,
            bus,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("WebSocket connect");
        ws
    }

    /// Publishes one tick through the bus (as POST /api/v1/ticks would).
    pub fn publish(&self, symbol: &str, price: f64) -> Tick {
        let t = tick(symbol, price);
        self.bus.publish_now(&[t]);
        t
    }

    /// Waits until `f` holds or panics after 10 s.
    pub async fn eventually(&self, what: &str, mut f: impl FnMut(&GatewayState) -> bool) {
        marketmux_test_support::eventually(what, Duration::from_secs(10), || f(&self.state)).await;
    }
}

#[allow(unused_imports)] // not every test file publishes
pub use marketmux_test_support::tick;

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next text message as JSON (pings are answered by tungstenite itself).
pub async fn recv(ws: &mut Ws) -> Value {
    try_recv(ws, Duration::from_secs(5))
        .await
        .expect("a message within 5 s")
}

/// The next text message, or None if nothing arrives within `wait`.
pub async fn try_recv(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(None) => panic!("socket ended"),
            Ok(Some(Err(e))) => panic!("socket error: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).expect("JSON")),
            Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads until the server closes; returns the close code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no close within 10 s"),
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                return (u16::from(c.code), c.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => {
                return (u16::from(CloseCode::Status), String::new())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => panic!("socket ended without a close frame"),
        }
    }
}
