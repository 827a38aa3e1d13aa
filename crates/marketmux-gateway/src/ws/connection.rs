//! One client socket: a reader (this task) that handles requests, and a
//! writer task that drains the client's queue into the socket, one write()
//! per batch.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use marketmux_core::{ClientRequest, ErrorCode, Position, ServerMessage, SubscribeOptions, Symbol};
use marketmux_hub::{ClientQueue, CloseCause, DirectSocket, ProtocolViolation};

use super::deflate::Deflate;
use super::recovery;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::close;
use super::frame::{self, OpCode};
use super::reader::{FrameReader, Message, ReadError};
use crate::auth::Identity;
use crate::candles::{CandleRequest, CandleSubscriptions};
use crate::limits::{self, LimitHit};
use crate::state::GatewayState;

/// How long a closing socket waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Most frames read while waiting for the client's close frame.
const CLOSE_LINGER_FRAMES: usize = 64;
/// A writer keeps at most this much buffer between batches.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;
/// Largest frame list (in slots) a writer keeps between batches.
const KEEP_SPARE_FRAMES: usize = 64;

/// What the upgrade settled with the client.
#[derive(Debug, Clone, Default)]
pub struct Agreed {
    /// The authenticated user, if any.
    pub identity: Option<Identity>,
    /// permessage-deflate, when the client offered it and the node compresses.
    pub deflate: Option<Deflate>,
}

/// Serves one upgraded socket until it closes. `prefix` holds bytes read past
/// the upgrade request; `agreed`, the user and extensions of the upgrade;
/// `peer`, the client's address (its subscriptions count against the
/// per-address bound); `direct`, the socket for the hub's direct writes
/// while the writer is idle.
pub async fn serve<R, W>(
    state: Arc<GatewayState>,
    rd: R,
    wr: W,
    prefix: Bytes,
    agreed: Agreed,
    peer: IpAddr,
    direct: Option<Arc<dyn DirectSocket>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = state.next_client_id();
    tracing::Span::current().record("client", id);
    let Agreed { identity, deflate } = agreed;
    tracing::debug!(
        deflate = deflate.is_some(),
        user = identity.as_ref().map(|i| i.user_id),
        "Socket open"
    );
    let queue = state.hub.new_client(id, state.config.queue);
    if let Some(deflate) = deflate {
        queue.set_deflate(deflate.max_payload());
    }
    if let Some(socket) = direct {
        queue.attach_direct(socket);
    }
    state.registry.insert(queue.clone());
    // Admitted just as a drain began, after its snapshot of the registry (the
    // registry's lock orders the two): closed like the others.
    if state.draining.load(Relaxed) {
        queue.close(CloseCause::Restart);
    }
    if let Some(identity) = &identity {
        state.registry.bind_user(id, identity.user_id);
    }
    let mut writer = tokio::spawn(write_loop(state.clone(), queue.clone(), wr));
    let mut session = Session {
        subscriptions: HashSet::new(),
        candles: CandleSubscriptions::new(peer),
        bucket: TokenBucket::new(state.config.max_messages_per_sec),
        strikes: 0,
        identity,
        peer,
        queue: queue.clone(),
        state: state.clone(),
    };
    let mut reader =
        FrameReader::new(rd, prefix, state.config.max_frame_bytes).with_deflate(deflate.is_some());
    session.read_loop(&mut reader).await;
    // Whatever ended the reader, the writer must end too (first reason wins).
    queue.close_after_pending(CloseCause::Normal);

    // Leave every topic before anything else, so no tick is queued for a dead socket.
    state
        .subscriptions_per_ip
        .release(peer, session.subscriptions.len());
    for s in session.subscriptions.drain() {
        state.hub.unsubscribe(&s, id);
    }
    session.candles.leave_all(&state, &queue);
    // Give the writer time to send the close frame, and the client to answer
    // it; a client that floods frames instead is not read for the whole linger.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        for _ in 0..CLOSE_LINGER_FRAMES {
            match reader.next_message().await {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    if tokio::time::timeout(CLOSE_LINGER, &mut writer)
        .await
        .is_err()
    {
        // The client stopped reading: abandon the blocked write.
        queue.close(CloseCause::CloseTimedOut);
        let _ = writer.await;
    }
    state.stats.closed_by.record(queue.close_cause().as_ref());
    state.registry.remove(id);
}

/// What the rate limit decided for one client message.
enum Admission {
    Admitted,
    /// Over the limit: the message is dropped (the client was told once).
    Dropped,
    /// Far over the limit: the socket is closing.
    Closed,
}

struct Session {
    state: Arc<GatewayState>,
    queue: Arc<ClientQueue>,
    subscriptions: HashSet<Symbol>,
    /// The candle series this socket follows.
    candles: CandleSubscriptions,
    bucket: TokenBucket,
    /// Messages refused by the rate limit since the bucket last had tokens.
    strikes: u32,
    /// The authenticated user (authentication on), whose token may restrict symbols.
    identity: Option<Identity>,
    /// The client's address: its subscriptions count against the per-address bound.
    peer: IpAddr,
}

impl Session {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) {
        let idle = self.state.config.idle_timeout;
        // A socket opened with a token is closed when the token expires.
        let expires = self.identity.as_ref().and_then(|i| i.expires_at).map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        let expiry = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(idle, reader.next_message()) => m,
                _ = self.queue.closed() => return,
                _ = &mut expiry => {
                    self.queue.close_after_pending(CloseCause::TokenExpired);
                    return;
                }
            };
            let msg = match msg {
                Err(_) => {
                    self.queue.close_after_pending(CloseCause::IdleTimeout);
                    return;
                }
                Ok(Err(ReadError::Protocol(violation))) => {
                    if matches!(
                        violation,
                        ProtocolViolation::FrameTooLarge
                            | ProtocolViolation::MessageTooLarge
                            | ProtocolViolation::InflatedTooLarge
                    ) {
                        self.state.stats.limits.hit(LimitHit::FrameTooLarge);
                    }
                    self.queue
                        .close_after_pending(CloseCause::Protocol(violation));
                    return;
                }
                Ok(Err(_)) => {
                    self.queue.close(CloseCause::ConnectionLost);
                    return;
                }
                Ok(Ok(m)) => m,
            };
            match msg {
                Message::Text(text) => {
                    self.state.stats.messages_in.fetch_add(1, Relaxed);
                    match self.admit() {
                        Admission::Admitted => {}
                        Admission::Dropped => continue,
                        Admission::Closed => return,
                    }
                    // The reader validated UTF-8.
                    let text = std::str::from_utf8(&text).unwrap_or_default();
                    self.handle_text(text).await;
                }
                Message::Binary => {
                    match self.admit() {
                        Admission::Admitted => {}
                        Admission::Dropped => continue,
                        Admission::Closed => return,
                    }
                    self.error(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported; send JSON text",
                        None,
                    );
                }
                Message::Ping(payload) => {
                    // Pings cost a reply like any request: same rate limit.
                    match self.admit() {
                        Admission::Admitted => {}
                        Admission::Dropped => continue,
                        Admission::Closed => return,
                    }
                    self.queue
                        .push_control(frame::encode(OpCode::Pong, &payload));
                }
                // Frames that need no answer still cost the server a read and
                // a decode: each counts against the budget, so a flood of them
                // is told `rate_limited` and closed like any other.
                Message::Pong | Message::Fragment => {
                    if matches!(self.admit(), Admission::Closed) {
                        return;
                    }
                }
                Message::Close(code) => {
                    self.queue
                        .close_after_pending(CloseCause::ClientClosed { code });
                    return;
                }
            }
        }
    }

    /// The per-address and per-node bounds, for `fresh` symbols this socket
    /// does not follow yet: on success their per-address places are taken.
    /// `Err` is the message of the refusal (the whole subscribe is refused).
    fn check_node_limits(&self, fresh: &[Symbol]) -> Result<(), String> {
        let state = &self.state;
        let new_topics = fresh.iter().filter(|s| !state.hub.has_topic(s)).count() as u64;
        if new_topics > state.hub.topics_free() {
            state.stats.limits.hit(LimitHit::MaxTopics);
            return Err(format!(
                "this node follows its limit of {} symbols; {new_topics} of these are not followed yet (symbols already followed can still be subscribed to)",
                state.config.max_topics
            ));
        }
        limits::reserve_per_ip(state, self.peer, fresh.len(), "symbols")
    }

    /// Applies the per-socket rate limit.
    fn admit(&mut self) -> Admission {
        if self.bucket.take(Instant::now()) {
            self.strikes = 0;
            return Admission::Admitted;
        }
        self.strikes += 1;
        self.state.stats.limits.hit(LimitHit::RateLimited);
        if self.strikes == 1 {
            let msg = format!(
                "more than {} messages per second; further messages are dropped until the rate falls",
                self.state.config.max_messages_per_sec
            );
            self.error(ErrorCode::RateLimited, &msg, None);
        }
        if self.strikes > self.state.config.max_messages_per_sec.max(1) {
            self.queue.close_after_pending(CloseCause::RateLimited);
            return Admission::Closed;
        }
        Admission::Dropped
    }

    fn reply(&self, msg: ServerMessage<'_>) {
        self.queue.push_control(GatewayState::control_frame(&msg));
    }

    fn error(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        self.reply(ServerMessage::Error { code, message, id });
    }

    async fn handle_text(&mut self, text: &str) {
        let req = match ClientRequest::parse(text) {
            Ok(r) => r,
            Err(e) => return self.error(e.code, &e.message, e.id.as_deref()),
        };
        match req {
            ClientRequest::Subscribe {
                symbols,
                candles,
                options,
                id,
                ..
            } if !candles.is_empty() => {
                if let Some(denied) = self.denied(&symbols) {
                    let msg = format!("your token does not allow subscribing to {denied}");
                    return self.error(ErrorCode::Forbidden, &msg, id.as_deref());
                }
                let (state, queue) = (self.state.clone(), self.queue.clone());
                let request = CandleRequest {
                    symbols: &symbols,
                    intervals: &candles,
                    max_rate: options.max_rate,
                    id: id.as_deref(),
                };
                self.candles
                    .subscribe(&state, &queue, &request, self.subscriptions.len())
                    .await
            }
            ClientRequest::Unsubscribe {
                symbols,
                candles,
                id,
            } if !candles.is_empty() => self.candles.unsubscribe(
                &self.state,
                &self.queue,
                &symbols,
                &candles,
                id.as_deref(),
            ),
            ClientRequest::Subscribe {
                symbols,
                since,
                options,
                id,
                ..
            } => self.subscribe(symbols, since, options, id.as_deref()).await,
            ClientRequest::Unsubscribe { symbols, id, .. } => {
                for s in &symbols {
                    if self.subscriptions.remove(s) {
                        self.state.hub.unsubscribe(s, self.queue.id());
                        self.queue.forget_symbol(s);
                        self.state.subscriptions_per_ip.release(self.peer, 1);
                    }
                }
                self.reply(ServerMessage::Unsubscribed {
                    symbols: &symbols,
                    id: id.as_deref(),
                });
            }
            ClientRequest::Ping { id } => self.reply(ServerMessage::Pong { id: id.as_deref() }),
            ClientRequest::Identify { user_id, id } => {
                if self.state.config.allow_identify && self.identity.is_none() {
                    self.state.registry.bind_user(self.queue.id(), user_id);
                    self.reply(ServerMessage::Identified {
                        user_id,
                        id: id.as_deref(),
                    });
                } else {
                    self.error(
                        ErrorCode::Forbidden,
                        "identify is only available in the dev role with authentication off",
                        id.as_deref(),
                    );
                }
            }
        }
    }

    /// The first of `symbols` the socket's token does not allow, if any.
    fn denied(&self, symbols: &[Symbol]) -> Option<Symbol> {
        let filter = self.identity.as_ref().and_then(|i| i.symbols.as_ref())?;
        symbols.iter().find(|s| !filter.allows(s)).copied()
    }

    async fn subscribe(
        &mut self,
        symbols: Vec<Symbol>,
        since: Vec<(Symbol, Position)>,
        options: SubscribeOptions,
        id: Option<&str>,
    ) {
        if let Some(denied) = self.denied(&symbols) {
            let msg = format!("your token does not allow subscribing to {denied}");
            return self.error(ErrorCode::Forbidden, &msg, id);
        }
        let mut seen = HashSet::with_capacity(symbols.len());
        let fresh: Vec<Symbol> = symbols
            .iter()
            .filter(|s| !self.subscriptions.contains(s) && seen.insert(**s))
            .copied()
            .collect();
        // Tick subscriptions and candle series share the socket's bound.
        let held = self.subscriptions.len() + self.candles.len();
        if let Err(msg) = limits::check_per_socket(&self.state, held, fresh.len(), "symbols") {
            return self.error(ErrorCode::TooManySubscriptions, &msg, id);
        }
        if let Err(msg) = self.check_node_limits(&fresh) {
            return self.error(ErrorCode::TooManySubscriptions, &msg, id);
        }
        // Follows the new symbols at once (their live ticks held), finds
        // where each stream stands, queues the reply, then each symbol's
        // first ticks and what was held.
        let plan = recovery::open(&self.state, &self.queue, &symbols, &fresh, &since).await;
        self.subscriptions.extend(plan.followed());
        // Every symbol of the request takes the request's cap (before the new
        // ones start, so their first live ticks are capped too).
        let interval = options.max_rate.map(|r| r.interval());
        for s in &symbols {
            if self.subscriptions.contains(s) {
                self.state.hub.set_rate(s, &self.queue, interval);
            }
        }
        self.reply(ServerMessage::Subscribed {
            symbols: &symbols,
            streams: &plan.streams,
            id,
        });
        let refused = plan.start(&self.state, &self.queue);
        if !refused.is_empty() {
            self.state
                .subscriptions_per_ip
                .release(self.peer, refused.len());
            self.state.stats.limits.hit(LimitHit::MaxTopics);
            let msg = format!(
                "not subscribed to {}: this node follows its limit of {} symbols",
                refused
                    .iter()
                    .map(Symbol::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.state.config.max_topics
            );
            self.error(ErrorCode::TooManySubscriptions, &msg, id);
        }
    }
}

/// Drains the queue into the socket: everything queued goes out in one write().
async fn write_loop<W: AsyncWrite + Unpin>(
    state: Arc<GatewayState>,
    queue: Arc<ClientQueue>,
    mut wr: W,
) {
    let mut spare = VecDeque::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut batch = match queue.take_batch(std::mem::take(&mut spare)) {
            Ok(b) => b,
            Err(cause) => {
                let close = close::close_frame(&cause);
                let _ = tokio::time::timeout(CLOSE_LINGER, async {
                    wr.write_all(&close).await?;
                    wr.shutdown().await
                })
                .await;
                return;
            }
        };
        if batch.is_empty() {
            // A tick held by a rate cap is taken when due: the writer's one
            // timer, whatever the number of capped symbols.
            match batch.next_due {
                Some(due) => {
                    tokio::select! {
                        _ = queue.wait_ready() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => queue.wait_ready().await,
            }
            continue;
        }
        buf.clear();
        buf.reserve(batch.len_bytes());
        let frames = batch.len() as u64;
        let queued_at = batch.queued_at;
        let deadline = queue.lag_deadline(&batch);
        for f in batch.frames.drain(..).chain(batch.conflated.drain(..)) {
            buf.extend_from_slice(&f);
        }
        // Keep a small spare list only: after a burst, an idle socket must not
        // hold a large one (the idle-memory bound is a few KiB per socket).
        if batch.frames.capacity() <= KEEP_SPARE_FRAMES {
            spare = batch.frames;
        }
        // A client that stops reading is closed once the batch's oldest frame
        // is older than the lag bound, even if nothing more is pushed to it.
        let behind = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let written = tokio::select! {
            r = wr.write_all(&buf) => r,
            // The write a client that stopped reading blocks is abandoned.
            _ = queue.closed() => return,
            _ = behind => {
                queue.close_lagging();
                return;
            }
        };
        if let Err(e) = written {
            tracing::debug!(client = queue.id(), error = %e, "Socket write failed");
            queue.close(CloseCause::WriteFailed);
            return;
        }
        state
            .stats
            .record_write(frames, buf.len() as u64, queued_at);
        if buf.capacity() > KEEP_WRITE_BUFFER {
            buf = Vec::new();
        }
    }
}

/// A token bucket: `rate` messages per second, bursts of twice that.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            tokens: rate * 2.0,
            rate,
            burst: rate * 2.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10);
        b.last = start;
        assert_eq!((0..25).filter(|_| b.take(start)).count(), 20);
        assert_eq!(
            (0..25)
                .filter(|_| b.take(start + Duration::from_millis(500)))
                .count(),
            5
        );
    }
}
