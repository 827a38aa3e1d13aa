//! `GET /candles/{symbol}?interval=1m&limit=N`: the last `limit` candles of
//! one interval, oldest first, the current (open) one last:
//! `{"symbol":"AAPL","interval":"1m","candles":[{"start":"…","open":…,
//! "high":…,"low":…,"close":…,"volume":…,"ticks":N,"closed":true},…]}`.
//!
//! Errors (JSON): 400 `invalid_interval` (missing or unknown interval), 400
//! `invalid_limit` (not 1 to [`MAX_CANDLE_PAGE`]), 400 `invalid_symbol`,
//! 404 `not_found` for a symbol that never had a tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use marketmux_core::candle::{push_candle_fields, MAX_CANDLE_PAGE};
use marketmux_core::Interval;

use crate::error::ApiError;
use crate::rest::{page_limit, path_symbol};
use crate::state::GatewayState;

/// Candles one page returns when the request names no `limit`.
pub const DEFAULT_CANDLE_PAGE: usize = 100;

/// `GET /candles/{symbol}?interval=1m&limit=N`.
pub async fn candles(
    State(state): State<Arc<GatewayState>>,
    Path(symbol): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let symbol = path_symbol(&symbol)?;
    let (interval, limit) = candle_query(&query)?;
    let page = state
        .prices
        .candles(&symbol, interval, limit)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no tick known for {symbol}")))?;
    // Symbols and interval names are safe ASCII: no escaping needed.
    let mut body = String::with_capacity(64 + page.len() * 160);
    body.push_str(&format!(
        r#"{{"symbol":"{symbol}","interval":"{interval}","candles":["#
    ));
    for (i, (candle, closed)) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('{');
        push_candle_fields(&mut body, candle, *closed);
        body.push('}');
    }
    body.push_str("]}");
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body))
}

/// `interval` (required, one of `1s 1m 5m 1h 1d`) and `limit` (1 to
/// [`MAX_CANDLE_PAGE`], default [`DEFAULT_CANDLE_PAGE`]).
fn candle_query(query: &BTreeMap<String, String>) -> Result<(Interval, usize), ApiError> {
    let interval = query
        .get("interval")
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_interval",
                "give `interval`: one of 1s, 1m, 5m, 1h, 1d",
            )
        })?
        .parse::<Interval>()
        .map_err(|e| ApiError::bad_request("invalid_interval", e.to_string()))?;
    let limit = match query.get("limit") {
        None => DEFAULT_CANDLE_PAGE,
        Some(value) => page_limit(value, MAX_CANDLE_PAGE)?,
    };
    Ok((interval, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_defaults_and_bounds() {
        assert_eq!(
            candle_query(&query(&[("interval", "1m")])).unwrap(),
            (Interval::M1, DEFAULT_CANDLE_PAGE)
        );
        assert_eq!(
            candle_query(&query(&[("interval", "1d"), ("limit", "1000")])).unwrap(),
            (Interval::D1, 1000)
        );
        for (q, code) in [
            (query(&[]), "invalid_interval"),
            (query(&[("interval", "2m")]), "invalid_interval"),
            (
                query(&[("interval", "1m"), ("limit", "0")]),
                "invalid_limit",
            ),
            (
                query(&[("interval", "1m"), ("limit", "1001")]),
                "invalid_limit",
            ),
            (
                query(&[("interval", "1m"), ("limit", "x")]),
                "invalid_limit",
            ),
        ] {
            assert_eq!(candle_query(&q).unwrap_err().code, code, "{q:?}");
        }
    }
}
