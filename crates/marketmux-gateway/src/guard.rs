//! Checks every request passes before a handler sees it, on its head alone:
//!
//! - `Host` on the allow-list, if there is one (DNS rebinding: a page on
//!   `evil.example` that resolves its name to 127.0.0.1 sends `Host: evil.example`);
//! - a write (`POST`, `PUT`, `PATCH`, `DELETE`) carries no foreign `Origin`
//!   (403) and, but for `DELETE`, `Content-Type: application/json` (415): a
//!   web page can send a cross-site form or `text/plain` body without asking,
//!   never a JSON one;
//! - the body arrives within [`GatewayConfig::body_timeout`] of the head, or
//!   the request is answered 408 and its connection closed.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::{Body as _, Frame, SizeHint};

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::limits::LimitHit;
use crate::state::GatewayState;

/// Whether `host` (a `Host` header: `name[:port]`, `[v6]:port`) names this
/// machine's loopback: `localhost`, `*.localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The name part of a `Host` value, without port or IPv6 brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `config` lets a request with this `Host` in. Without a `Host`
/// (not a browser) it passes; a browser always sends one.
pub fn host_allowed(config: &GatewayConfig, host: Option<&HeaderValue>) -> bool {
    let Some(list) = &config.allowed_hosts else {
        return true;
    };
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    is_loopback_host(host)
        || list.iter().any(|a| {
            a == "*" || a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(host_name(host))
        })
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The checks on the head (see the module doc); `Err` is the answer.
pub fn check_head(
    config: &GatewayConfig,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if !host_allowed(config, headers.get(header::HOST)) {
        let host: String = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            format!("host {host:?} is not served here; list it in --allowed-hosts"),
        ));
    }
    if is_write(method) {
        config
            .auth
            .check_origin(headers)
            .map_err(|e| e.into_api_error())?;
        if *method != Method::DELETE && !is_json(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
    }
    Ok(())
}

/// Middleware: [`check_head`], then the handler with its body under the
/// body deadline; a body late past it turns the answer into 408.
pub async fn admit(State(state): State<Arc<GatewayState>>, req: Request, next: Next) -> Response {
    if let Err(e) = check_head(&state.config, req.method(), req.headers()) {
        return e.into_response();
    }
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let late = Arc::new(AtomicBool::new(false));
    let timeout = state.config.body_timeout;
    let req = req.map(|body| Body::new(DeadlineBody::new(body, timeout, late.clone())));
    let res = next.run(req).await;
    if !late.load(Relaxed) {
        return res;
    }
    state.stats.limits.hit(LimitHit::RequestTimeout);
    let mut res = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs_f32()
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Why a body read stopped: its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
pub struct BodyTimeout;

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    late: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration, late: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            late,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.late.store(true, Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn host_allow_list() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let any = GatewayConfig::default();
        assert!(host_allowed(&any, Some(&hv("evil.example"))));
        let local = GatewayConfig {
            allowed_hosts: Some(vec![]),
            ..GatewayConfig::default()
        };
        assert!(host_allowed(&local, Some(&hv("127.0.0.1:8080"))));
        assert!(host_allowed(&local, None), "no Host: not a browser");
        assert!(!host_allowed(&local, Some(&hv("evil.example:8080"))));
        let listed = GatewayConfig {
            allowed_hosts: Some(vec!["prices.example".into()]),
            ..GatewayConfig::default()
        };
        assert!(host_allowed(&listed, Some(&hv("prices.example:8080"))));
        assert!(host_allowed(&listed, Some(&hv("localhost:8080"))));
        assert!(!host_allowed(&listed, Some(&hv("evil.example"))));
    }

    #[test]
    fn writes_need_json_and_no_foreign_origin() {
        let c = GatewayConfig::default();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let status = |m: Method, h: &HeaderMap| check_head(&c, &m, h).err().map(|e| e.status);
        assert_eq!(status(Method::GET, &h), None);
        assert_eq!(status(Method::DELETE, &h), None);
        assert_eq!(
            status(Method::POST, &h),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            status(Method::POST, &h),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(status(Method::POST, &h), None);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert_eq!(status(Method::POST, &h), None, "the node's own page");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(status(Method::POST, &h), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(Method::DELETE, &h), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(Method::GET, &h), None, "reads are not writes");
    }
}
