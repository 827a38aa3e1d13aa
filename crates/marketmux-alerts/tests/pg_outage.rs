//! PostgreSQL going away for real (a loopback TCP proxy in front of it is cut):
//! the API answers 503, a crossing seen meanwhile is kept pending and fired
//! exactly once when the database is reachable again.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use common::*;
use http::{Request, StatusCode};
use marketmux_alerts::{rest, AlertStore, Evaluator, LocalAlertService, PgAlertStore};
use marketmux_test_support::tick;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Forwards loopback connections to PostgreSQL until cut; while cut, open
/// connections are dropped and new ones closed at once.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<parking_lot::Mutex<CancellationToken>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let (u, g) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = g.lock().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut g = self.generation.lock();
        g.cancel();
        *g = CancellationToken::new();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_and_delays_fires_without_losing_them() {
    let db = PgTestDb::new().await;
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    assert_ne!(url, db.url, "the test database URL goes through the proxy");
    let store: Arc<dyn AlertStore> = Arc::new(PgAlertStore::connect(&url).await.unwrap());

    let a = store
        .add(&new_alert(1, "AAPL", "ABOVE", 100.0))
        .await
        .unwrap();
    let rec = Recorder::default();
    let ev = Evaluator::new(store.clone(), rec.sink());
    ev.reload().await.unwrap();
    let app = rest::routes(LocalAlertService::new(store.clone(), Some(ev.clone())));

    proxy.cut();
    let resp = app
        .clone()
        .oneshot(
            Request::get("/alerts?user_id=1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(
        ev.on_tick(&tick("AAPL", 101.0)).await,
        0,
        "not stored: not fired yet"
    );
    assert_eq!(ev.pending_len(), 1);
    assert_eq!(ev.retry_pending().await, 1, "still down");
    assert!(rec.ids().is_empty());

    proxy.restore();
    let mut left = 1;
    for _ in 0..50 {
        left = ev.retry_pending().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "fired once the database is back");
    assert_eq!(rec.ids(), vec![a.id]);
    ev.on_tick(&tick("AAPL", 102.0)).await;
    assert_eq!(ev.retry_pending().await, 0);
    assert_eq!(rec.ids().len(), 1, "never twice");
    let stored = store.list_all(1, false).await.unwrap();
    assert_eq!(stored[0].triggered_price, Some(101.0));
    let resp = app
        .oneshot(
            Request::get("/alerts?user_id=1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
