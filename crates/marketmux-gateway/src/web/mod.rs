//! The live page served at `GET /`, compiled into the binary, and the small
//! JSON endpoints it reads.
//!
//! - `GET /`, `/app.css`, `/app.js`: the ticker board (plain HTML, CSS, JS; no CDN).
//! - `/candles.js`, `/candles.css`: the candle chart of the picked symbol
//!   (canvas; history from `GET /candles`, live over its own socket).
//! - `GET /api/v1/stats`: clients on this node, ticks/s and deliveries/s.
//! - `GET /api/v1/symbols?q=PREFIX&limit=N`: symbols for the type-ahead.

mod rates;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Extension, Json, Router};
use http::header;
use marketmux_core::Symbol;
use serde::Deserialize;
use serde_json::json;

use crate::state::GatewayState;
pub use rates::RateWindow;

/// Lists the symbols whose latest price is known, for the type-ahead.
///
/// A role that can list its price store adds one to the router as an axum
/// [`Extension`]; without it `/api/v1/symbols` lists the symbols followed on
/// this node.
#[derive(Clone)]
pub struct SymbolDirectory(Arc<dyn Fn() -> Vec<Symbol> + Send + Sync>);

impl SymbolDirectory {
    /// A directory that calls `list` on each request.
    pub fn new(list: impl Fn() -> Vec<Symbol> + Send + Sync + 'static) -> Self {
        Self(Arc::new(list))
    }

    /// `router` with this directory behind `/api/v1/symbols`.
    pub fn serve_on(self, router: Router) -> Router {
        router.layer(Extension(self))
    }
}

/// The page's routes, merged into the gateway router. Each call owns a fresh
/// [`RateWindow`], so every node computes its own rates.
pub fn routes() -> Router<Arc<GatewayState>> {
    let window = Arc::new(RateWindow::default());
    Router::new()
        .route("/", get(index))
        .route("/app.css", get(app_css))
        .route("/app.js", get(app_js))
        .route("/candles.js", get(candles_js))
        .route("/candles.css", get(candles_css))
        .route(
            "/api/v1/stats",
            get(move |state: State<Arc<GatewayState>>| stats(state, window.clone())),
        )
        .route("/api/v1/symbols", get(symbols))
}

/// `GET /`: the ticker board.
pub async fn index() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("index.html")),
    )
}

/// `GET /app.css`.
pub async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("app.css"),
    )
}

/// `GET /candles.js`: the candle chart.
pub async fn candles_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("candles.js"),
    )
}

/// `GET /candles.css`.
pub async fn candles_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("candles.css"),
    )
}

/// `GET /app.js`.
pub async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("app.js"),
    )
}

/// `GET /api/v1/stats`: this node's clients and its rates over the last seconds
/// (`null` until two samples are a moment apart).
async fn stats(
    State(state): State<Arc<GatewayState>>,
    window: Arc<RateWindow>,
) -> Json<serde_json::Value> {
    let hub = state.hub.stats().snapshot();
    let rates = window.sample(hub.ticks_in, hub.deliveries);
    Json(json!({
        "clients": state.registry.len(),
        "topics": hub.topics,
        "subscriptions": hub.subscriptions,
        "ticks_in": hub.ticks_in,
        "deliveries": hub.deliveries,
        "conflated": hub.conflated,
        "ticks_per_sec": rates.map(|r| r.ticks_per_sec),
        "deliveries_per_sec": rates.map(|r| r.deliveries_per_sec),
        "window_secs": rates.map(|r| r.window_secs),
    }))
}

/// Query of `GET /api/v1/symbols`.
#[derive(Deserialize)]
struct SymbolQuery {
    /// Case-insensitive prefix.
    q: Option<String>,
    /// At most this many (default 50, at most [`MAX_SYMBOLS_LISTED`]).
    limit: Option<usize>,
}

/// Bound of one `/api/v1/symbols` answer.
const MAX_SYMBOLS_LISTED: usize = 1000;

/// `GET /api/v1/symbols`: `{"symbols":[...]}`, sorted, filtered by prefix.
async fn symbols(
    State(state): State<Arc<GatewayState>>,
    directory: Option<Extension<SymbolDirectory>>,
    Query(query): Query<SymbolQuery>,
) -> Json<serde_json::Value> {
    let mut all = state.hub.symbols();
    if let Some(Extension(d)) = directory {
        all.extend((d.0)());
    }
    all.sort_unstable();
    all.dedup();
    let prefix = query.q.unwrap_or_default().to_ascii_uppercase();
    let limit = query.limit.unwrap_or(50).min(MAX_SYMBOLS_LISTED);
    let list: Vec<&str> = all
        .iter()
        .map(Symbol::as_str)
        .filter(|s| s.to_ascii_uppercase().starts_with(&prefix))
        .take(limit)
        .collect();
    Json(json!({ "symbols": list }))
}
