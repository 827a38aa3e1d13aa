//! `GET /ws`: admission (draining, Origin, token), the handshake (with
//! permessage-deflate when offered and `--compression` is on), and
//! handing the socket to [`super::connection::serve`]. The connection limits
//! were applied when the connection was accepted ([`crate::server`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use marketmux_hub::DirectSocket;
use tokio::net::TcpStream;

use super::socket::{DirectHalf, SharedWriteHalf};

use super::connection::Agreed;
use super::deflate;
use super::handshake::{accept_key, HandshakeError};
use crate::conn::ClientStream;
use crate::error::ApiError;
use crate::limits::{ConnectionSlot, Refusal};
use crate::state::GatewayState;
use tracing::Instrument as _;

/// Answers the upgrade with 101 and serves the socket in a new task.
pub async fn ws_handler(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let refuse = |why: Refusal, e: ApiError| {
        state.stats.limits.refused(why);
        e.into_response()
    };
    if state.draining.load(Relaxed) {
        return refuse(
            Refusal::Draining,
            ApiError::unavailable("server is shutting down; reconnect to another node"),
        );
    }
    let accept = match accept_key(req.method(), req.version(), req.headers()) {
        Ok(a) => a,
        Err(e @ HandshakeError::Version) => {
            let mut r = refuse(
                Refusal::BadHandshake,
                ApiError::new(StatusCode::UPGRADE_REQUIRED, "bad_handshake", e.to_string()),
            );
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return r;
        }
        Err(e) => {
            return refuse(
                Refusal::BadHandshake,
                ApiError::bad_request("bad_handshake", e.to_string()),
            )
        }
    };
    let auth = &state.config.auth;
    if let Err(e) = auth.check_origin(req.headers()) {
        return refuse(Refusal::Origin, e.into_api_error());
    }
    let (identity, subprotocol) = match auth.authenticate(req.headers(), req.uri().query()) {
        Ok(Some((id, proto))) => (Some(id), proto),
        Ok(None) => (None, None),
        Err(e) => return refuse(Refusal::Auth, e.into_api_error()),
    };
    let (deflate, extensions) = match state.config.compression {
        true => deflate::negotiate(req.headers()).unzip(),
        false => (None, None),
    };
    if deflate.is_some() {
        state.stats.deflate_sockets.fetch_add(1, Relaxed);
    }
    let agreed = Agreed { identity, deflate };
    // The connection's place under the connection limits, taken at accept:
    // the socket keeps it until it closes.
    let slot = req.extensions().get::<Arc<ConnectionSlot>>().cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    // In the connection's span (`conn{peer, client}`).
    state.sockets.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => run(task_state, upgraded, agreed, peer.ip()).await,
                Err(e) => tracing::debug!(error = %e, "Upgrade failed"),
            }
            drop(slot);
        }
        .in_current_span(),
    );
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = subprotocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(e) = extensions {
        resp = resp.header(header::SEC_WEBSOCKET_EXTENSIONS, e);
    }
    resp.body(Body::empty()).unwrap_or_default()
}

async fn run(state: Arc<GatewayState>, upgraded: Upgraded, agreed: Agreed, peer: IpAddr) {
    // Served by our own accept loop, the socket is a plain TcpStream: take it
    // back so reader and writer own their halves without a shared lock.
    match upgraded.downcast::<TokioIo<ClientStream<TcpStream>>>() {
        Ok(parts) => {
            let (rd, wr) = parts.io.into_inner().into_inner().into_split();
            let half = Arc::new(wr);
            let direct = DirectHalf::new(half.clone(), state.clone());
            let wr = SharedWriteHalf(half);
            let prefix = parts.read_buf;
            let direct: Arc<dyn DirectSocket> = Arc::new(direct);
            super::connection::serve(state, rd, wr, prefix, agreed, peer, Some(direct)).await
        }
        Err(upgraded) => {
            let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
            super::connection::serve(state, rd, wr, Bytes::new(), agreed, peer, None).await
        }
    }
}
