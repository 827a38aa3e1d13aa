//! REST endpoints: health, readiness, latest price, a symbol's history, tick
//! ingest, live counts.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use http::StatusCode;
use marketmux_bus::{HistoryPage, MAX_HISTORY_PAGE};
use marketmux_core::ingest::{parse_ticks, IngestError};
use marketmux_core::{encode_tick, Symbol};
use serde_json::json;

use crate::error::ApiError;
use crate::limits::LimitHit;
use crate::state::GatewayState;

/// `GET /health`: the process is alive.
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 when the bus and stores answer, 503 naming what does not.
pub async fn ready(State(state): State<Arc<GatewayState>>) -> Result<impl IntoResponse, ApiError> {
    state
        .check_ready()
        .map(|()| Json(json!({ "status": "ready" })))
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why))
}

/// `GET /price/{symbol}`: the latest tick of a symbol.
pub async fn price(
    State(state): State<Arc<GatewayState>>,
    Path(symbol): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let symbol = path_symbol(&symbol)?;
    let tick = state
        .prices
        .latest(&symbol)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no price known for {symbol}")))?;
    let mut body = json!({
        "symbol": tick.symbol,
        "price": tick.price,
        "timestamp": tick.timestamp.to_rfc3339(),
    });
    if let Some(v) = tick.volume {
        body["volume"] = json!(v);
    }
    Ok(Json(body))
}

/// Ticks one history page returns when the request names no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// `GET /history/{symbol}?since=SEQ&limit=N`: the symbol's kept ticks after
/// `since` (the first `limit`), or the last `limit` without it, in increasing
/// `seq`: `{"symbol":"AAPL","epoch":"k3f9","ticks":[...]}`, each tick as the
/// WebSocket sends it. 404 for a symbol with no stream, 410 `history_gone`
/// when the tick after `since` is no longer kept.
pub async fn history(
    State(state): State<Arc<GatewayState>>,
    Path(symbol): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let symbol = path_symbol(&symbol)?;
    let (since, limit) = history_query(&query)?;
    let page = state
        .prices
        .history(&symbol, since, limit)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let (epoch, ticks) = match page {
        HistoryPage::Ticks { epoch, ticks } => (epoch, ticks),
        HistoryPage::Unknown => {
            return Err(ApiError::not_found(format!("no stream known for {symbol}")))
        }
        HistoryPage::Gone { epoch } => {
            let after = since.unwrap_or(0);
            return Err(ApiError::new(
                StatusCode::GONE,
                "history_gone",
                format!(
                    "the ticks of {symbol} after seq {after} are no longer kept (epoch {epoch}); \
                     get the latest price and resume from it"
                ),
            ));
        }
    };
    // Ticks are encoded as for sockets; symbols and epochs need no escaping.
    let mut body = String::with_capacity(64 + ticks.len() * 128);
    body.push_str(&format!(
        r#"{{"symbol":"{symbol}","epoch":"{epoch}","ticks":["#
    ));
    for (i, t) in ticks.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&encode_tick(t));
    }
    body.push_str("]}");
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body))
}

/// `since` (a seq, optional) and `limit` (1 to [`MAX_HISTORY_PAGE`], default
/// [`DEFAULT_HISTORY_PAGE`]) of a history request.
fn history_query(query: &BTreeMap<String, String>) -> Result<(Option<u64>, usize), ApiError> {
    let mut since = None;
    let mut limit = DEFAULT_HISTORY_PAGE;
    for (key, value) in query {
        match key.as_str() {
            "since" => {
                since = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_since",
                        format!(
                            "`since` must be a seq (an integer >= 0), got {:?}",
                            truncate(value)
                        ),
                    )
                })?)
            }
            "limit" => limit = page_limit(value, MAX_HISTORY_PAGE)?,
            _ => {}
        }
    }
    Ok((since, limit))
}

/// The `{symbol}` of a path, else 400 `invalid_symbol`.
pub(crate) fn path_symbol(value: &str) -> Result<Symbol, ApiError> {
    Symbol::new(value).map_err(|e| ApiError::bad_request("invalid_symbol", e.to_string()))
}

/// A page's `limit` query value: an integer from 1 to `max`, else 400
/// `invalid_limit`.
pub(crate) fn page_limit(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_limit",
                format!(
                    "`limit` must be an integer from 1 to {max}, got {:?}",
                    truncate(value)
                ),
            )
        })
}

/// At most 40 characters of client input, for error messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `POST /api/v1/ticks`: one tick or an array; 202 once the bus has them all.
///
/// The token and the announced length are checked on the head: an
/// unauthenticated or oversized request is answered before any of its body
/// is read (and its connection closed). The body's time is bounded by
/// [`crate::guard`].
pub async fn ingest(
    State(state): State<Arc<GatewayState>>,
    headers: http::HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    state.config.auth.check_ingest(&headers)?;
    let limit = state.config.max_ingest_body_bytes;
    let too_large = |code, message: String| {
        state.stats.limits.hit(LimitHit::IngestTooLarge);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    };
    let body_too_large = || too_large("body_too_large", format!("body over {limit} bytes"));
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(body_too_large());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                break;
            }
            cause = c.source();
        }
        if cause.is_some() {
            body_too_large()
        } else {
            ApiError::bad_request("invalid_body", format!("cannot read the body: {e}"))
        }
    })?;
    let ticks = parse_ticks(&body, &state.config.max_clock_skew).map_err(|e| match e {
        IngestError::TooMany(_) => too_large("too_many_ticks", e.to_string()),
        IngestError::Json(_) => ApiError::bad_request("invalid_json", e.to_string()),
        IngestError::Future { .. } => ApiError::bad_request("timestamp_in_future", e.to_string()),
        _ => ApiError::bad_request("invalid_tick", e.to_string()),
    })?;
    let n = ticks.len();
    state
        .publisher
        .publish(ticks)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": n }))))
}

/// `GET /debug/vars`: live counts, for leak checks and dashboards.
pub async fn debug_vars(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    let hub = state.hub.stats().snapshot();
    let (opened, closed) = state.registry.opened_closed();
    let s = &state.stats;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    Json(json!({
        "connections": state.registry.len(),
        "connections_opened": opened,
        "connections_closed": closed,
        "bound_users": state.registry.bound_users(),
        "queued_bytes": state.registry.queued_bytes(),
        "topics": state.hub.topic_count(),
        "subscriptions": hub.subscriptions,
        "tasks": tasks,
        "ticks_in": hub.ticks_in,
        "ticks_encoded": hub.ticks_encoded,
        "deliveries": hub.deliveries,
        "conflated": hub.conflated,
        "slow_closed": hub.slow_closed,
        "stale_dropped": hub.stale_dropped,
        "stream_restarts": hub.stream_restarts,
        "capped_skipped": hub.capped_skipped,
        "deflated_frames": hub.deflated_frames,
        "deflate_bytes_saved": hub.deflate_bytes_saved,
        "deflate_sockets": s.deflate_sockets.load(Relaxed),
        "recoveries": s.recovery.by_outcome().collect::<BTreeMap<_, _>>(),
        "replayed": s.recovery.replayed(),
        "bytes_written": s.bytes_written.load(Relaxed),
        "frames_written": s.frames_written.load(Relaxed),
        "write_batches": s.write_batches.load(Relaxed),
        "messages_in": s.messages_in.load(Relaxed),
        "upgrades_refused": s.limits.refused_total(),
        "upgrades_refused_by_reason": s.limits.refused_by_reason().collect::<BTreeMap<_, _>>(),
        "limit_hits": s.limits.hits_by_limit().collect::<BTreeMap<_, _>>(),
        "closed_by_reason": s.closed_by.by_reason().collect::<BTreeMap<_, _>>(),
    }))
}
