//! [`FinnhubClient`]: Finnhub's trade WebSocket → ticks → a [`TickPublisher`].
//!
//! Two tasks: the connection loop (connect, subscribe to every symbol, read,
//! answer pings, reconnect with jittered backoff) and the publisher (sends
//! ticks to the sink in arrival order, retrying a refused batch). Between them
//! a bounded channel of [`CHANNEL_BATCHES`] batches: when the sink is slower
//! than the feed the reader waits, so no tick is dropped here; Finnhub then
//! disconnects a reader that stalls too long, and the client reconnects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use marketmux_bus::TickPublisher;
use marketmux_core::{Backoff, ClockSkew, Jitter, Symbol, Tick};
use marketmux_metrics::errors::{self, Component};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::protocol::{self, ServerMessage};
use tracing::Instrument as _;

/// Finnhub's public trade WebSocket.
pub const DEFAULT_FINNHUB_URL: &str = "wss://ws.finnhub.io";

/// Batches of trades queued between the socket reader and the publisher.
pub const CHANNEL_BATCHES: usize = 1024;

/// Most ticks handed to the sink in one call.
const MAX_PUBLISH: usize = 5_000;

/// Where to connect and how to behave.
#[derive(Debug, Clone)]
pub struct FinnhubConfig {
    /// WebSocket URL without the token (`wss://ws.finnhub.io`, or a local fake).
    pub url: String,
    /// API token, sent as `?token=…`.
    pub token: String,
    /// Symbols to subscribe to, again on every reconnection.
    pub symbols: Vec<Symbol>,
    /// First reconnection delay ceiling (doubles per failed attempt).
    pub backoff_base: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Reconnect when the server has said nothing for this long.
    pub idle_timeout: Duration,
    /// Trades dated further in the future than this are dropped (and counted
    /// in [`FinnhubStats::future_trades`]).
    pub max_clock_skew: ClockSkew,
}

impl FinnhubConfig {
    /// Defaults: 500 ms → 30 s backoff, 10 s connect timeout, 60 s idle timeout.
    pub fn new(url: impl Into<String>, token: impl Into<String>, symbols: Vec<Symbol>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            symbols,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_clock_skew: ClockSkew::default(),
        }
    }

    /// The URL with a path (`/` if none: `wss://ws.finnhub.io` alone is not a
    /// valid request target) and the token appended.
    fn url_with_token(&self) -> String {
        let mut url = self.url.clone();
        let authority_start = url.find("://").map_or(0, |i| i + 3);
        if !url[authority_start..].contains(['/', '?']) {
            url.push('/');
        }
        if self.token.is_empty() {
            return url;
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}token={}", self.token)
    }
}

/// Counters of a running client.
#[derive(Debug, Default)]
pub struct FinnhubStats {
    /// Connections established (the first and every reconnection).
    pub connections: AtomicU64,
    /// Trades converted to ticks.
    pub trades: AtomicU64,
    /// Trades refused (bad symbol, price or volume).
    pub invalid_trades: AtomicU64,
    /// Trades dropped for a timestamp too far in the future.
    pub future_trades: AtomicU64,
    /// Server pings answered.
    pub pings: AtomicU64,
    /// Ticks the sink acknowledged.
    pub published: AtomicU64,
    /// Sink calls that failed (then retried).
    pub publish_failures: AtomicU64,
}

/// The Finnhub trade client.
pub struct FinnhubClient {
    config: FinnhubConfig,
    stats: Arc<FinnhubStats>,
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("server closed the connection")]
    Closed,
    #[error("no message for {0:?}")]
    Idle(Duration),
    #[error("stopping")]
    Stopped,
}

impl FinnhubClient {
    /// A client for `config`.
    pub fn new(config: FinnhubConfig) -> Self {
        Self {
            config,
            stats: Arc::new(FinnhubStats::default()),
        }
    }

    /// Counters, readable while the client runs.
    pub fn stats(&self) -> Arc<FinnhubStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then publishes what it already read.
    pub async fn run(self, sink: Arc<dyn TickPublisher>, shutdown: CancellationToken) {
        // wss:// needs a process-wide crypto provider; an error means one is already set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        errors::register(Component::Feed, &["disconnect", "upstream_error"]);
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let publisher = tokio::spawn(
            publish_loop(rx, sink, self.stats.clone(), shutdown.clone()).in_current_span(),
        );
        let mut backoff = Backoff::new(
            self.config.backoff_base,
            self.config.backoff_max,
            Jitter::Full,
        );
        loop {
            let end = self.connection(&tx, &shutdown, &mut backoff).await;
            if matches!(end, ConnectionEnd::Stopped) || shutdown.is_cancelled() {
                break;
            }
            let delay = backoff.next_delay();
            errors::error(Component::Feed, "disconnect");
            tracing::warn!(url = %self.config.url, reason = %end, delay_ms = delay.as_millis() as u64, "Finnhub connection ended; reconnecting");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        drop(tx);
        if let Err(e) = publisher.await {
            tracing::warn!(error = %e, "Finnhub publisher task failed");
        }
    }

    /// One connection: connect, subscribe, read until it ends.
    async fn connection(
        &self,
        tx: &mpsc::Sender<Vec<Tick>>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> ConnectionEnd {
        let url = self.config.url_with_token();
        let connect = tokio::time::timeout(
            self.config.connect_timeout,
            tokio_tungstenite::connect_async(url.as_str()),
        );
        let mut ws = tokio::select! {
            _ = shutdown.cancelled() => return ConnectionEnd::Stopped,
            r = connect => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => return ConnectionEnd::Connect(e.to_string()),
                Err(_) => return ConnectionEnd::Connect(format!("timed out after {:?}", self.config.connect_timeout)),
            },
        };
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        for symbol in &self.config.symbols {
            if let Err(e) = ws.feed(Message::text(protocol::subscribe(symbol))).await {
                return ConnectionEnd::Lost(e.to_string());
            }
        }
        if let Err(e) = ws.flush().await {
            return ConnectionEnd::Lost(e.to_string());
        }
        tracing::info!(url = %self.config.url, symbols = self.config.symbols.len(), "Finnhub connected and subscribed");
        let mut heard = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return ConnectionEnd::Stopped;
                }
                n = tokio::time::timeout(self.config.idle_timeout, ws.next()) => n,
            };
            let message = match next {
                Err(_) => return ConnectionEnd::Idle(self.config.idle_timeout),
                Ok(None) => return ConnectionEnd::Closed,
                Ok(Some(Err(e))) => return ConnectionEnd::Lost(e.to_string()),
                Ok(Some(Ok(m))) => m,
            };
            if !heard {
                // The server talks to us: the next outage starts from a short delay.
                heard = true;
                backoff.reset();
            }
            let text = match &message {
                Message::Text(t) => t.as_str(),
                Message::Close(_) => return ConnectionEnd::Closed,
                // Ping frames are answered by tungstenite itself.
                _ => continue,
            };
            match protocol::parse(text) {
                Ok(ServerMessage::Trade { data }) => {
                    let ticks = self.convert(&data);
                    if !ticks.is_empty() && tx.send(ticks).await.is_err() {
                        return ConnectionEnd::Stopped;
                    }
                }
                Ok(ServerMessage::Ping) => {
                    self.stats.pings.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = ws.send(Message::text(protocol::PONG)).await {
                        return ConnectionEnd::Lost(e.to_string());
                    }
                }
                Ok(ServerMessage::Error { msg }) => {
                    errors::error(Component::Feed, "upstream_error");
                    tracing::warn!(message = %msg, "Finnhub reported an error");
                }
                Ok(ServerMessage::Other) => {}
                Err(e) => tracing::debug!(error = %e, "Ignoring an unparsable Finnhub frame"),
            }
        }
    }

    fn convert(&self, trades: &[protocol::Trade]) -> Vec<Tick> {
        let mut ticks = Vec::with_capacity(trades.len());
        for trade in trades {
            match protocol::trade_to_tick(trade) {
                Ok(t) => match self.config.max_clock_skew.check(&t) {
                    Ok(()) => ticks.push(t),
                    Err(e) => {
                        self.stats.future_trades.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(symbol = %t.symbol, error = %e, "Dropping a trade dated in the future");
                    }
                },
                Err(reason) => {
                    self.stats.invalid_trades.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%reason, "Skipping an invalid trade");
                }
            }
        }
        self.stats
            .trades
            .fetch_add(ticks.len() as u64, Ordering::Relaxed);
        ticks
    }
}

/// Hands batches to the sink in order, merging what is queued, retrying a
/// refused batch until it is accepted or the client stops.
async fn publish_loop(
    mut rx: mpsc::Receiver<Vec<Tick>>,
    sink: Arc<dyn TickPublisher>,
    stats: Arc<FinnhubStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        Jitter::Full,
    );
    while let Some(mut ticks) = rx.recv().await {
        while ticks.len() < MAX_PUBLISH {
            match rx.try_recv() {
                Ok(more) => ticks.extend(more),
                Err(_) => break,
            }
        }
        loop {
            match sink.publish(ticks.clone()).await {
                Ok(()) => {
                    stats
                        .published
                        .fetch_add(ticks.len() as u64, Ordering::Relaxed);
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ticks = ticks.len(), "Sink refused Finnhub ticks; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_goes_in_the_query_of_a_valid_url() {
        let c = |url: &str, token: &str| FinnhubConfig::new(url, token, vec![]).url_with_token();
        assert_eq!(
            c("wss://ws.finnhub.io", "abc"),
            "wss://ws.finnhub.io/?token=abc"
        );
        assert_eq!(
            c("ws://127.0.0.1:9/feed", "abc"),
            "ws://127.0.0.1:9/feed?token=abc"
        );
        assert_eq!(c("ws://h/x?a=1", "abc"), "ws://h/x?a=1&token=abc");
        assert_eq!(c("ws://h:1", ""), "ws://h:1/");
    }
}
