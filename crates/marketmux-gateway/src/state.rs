//! [`GatewayState`]: what every request and socket of a node shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use marketmux_bus::{PriceStore, Readiness, TickPublisher};
use marketmux_core::{encode_tick, ServerMessage, Tick};
use marketmux_hub::{ControlEncoder, HubConfig, SymbolHub, TickEncoder};
use tokio_util::task::TaskTracker;

use crate::candles::CandleHub;
use crate::config::GatewayConfig;
use crate::ws::registry::ConnectionRegistry;
use crate::ws::{deflate, frame};

/// Socket-level counters (the hub keeps its own).
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Bytes written to sockets.
    pub bytes_written: AtomicU64,
    /// Socket writes, each carrying every frame queued at the time.
    pub write_batches: AtomicU64,
    /// Frames written (ticks and control).
    pub frames_written: AtomicU64,
    /// Client messages read.
    pub messages_in: AtomicU64,
    /// Sockets opened with permessage-deflate.
    pub deflate_sockets: AtomicU64,
    /// Upgrades refused and limits hit, by reason.
    pub limits: crate::limits::LimitCounters,
    /// Closed sockets by reason.
    pub closed_by: crate::metrics::CloseCounters,
    /// Bus-to-socket latency of the oldest frame of each write.
    pub delivery_latency: marketmux_metrics::LatencyHistogram,
    /// Positions clients resumed from, and the ticks replayed to them.
    pub recovery: crate::metrics::RecoveryCounters,
}

impl GatewayStats {
    /// Counts one completed socket write of `frames` frames and `bytes`
    /// bytes whose oldest frame reached the node at `oldest` (the writer
    /// task's writes and the hub's direct writes alike).
    pub fn record_write(&self, frames: u64, bytes: u64, oldest: Option<tokio::time::Instant>) {
        self.bytes_written.fetch_add(bytes, Relaxed);
        self.frames_written.fetch_add(frames, Relaxed);
        self.write_batches.fetch_add(1, Relaxed);
        if let Some(t) = oldest {
            self.delivery_latency.record(t.elapsed());
        }
    }
}

/// Shared state of one gateway node.
pub struct GatewayState {
    /// Who follows which symbol; fed by the bus.
    pub hub: Arc<SymbolHub>,
    /// Who follows which symbol's candles, and their live copy; fed by the bus.
    pub candles: Arc<CandleHub>,
    /// Every open socket.
    pub registry: ConnectionRegistry,
    /// Every socket's task, from its upgrade to its end: the shutdown drain
    /// waits on it (after closing the sockets) instead of polling the registry.
    pub sockets: TaskTracker,
    /// Where `POST /api/v1/ticks` sends accepted ticks.
    pub publisher: Arc<dyn TickPublisher>,
    /// Latest prices for `GET /price` and snapshots of symbols the hub has not seen.
    pub prices: Arc<dyn PriceStore>,
    /// Components whose health `/ready` reports.
    pub readiness: Vec<Arc<dyn Readiness>>,
    /// Limits and timings.
    pub config: GatewayConfig,
    /// Set at shutdown: `/ready` fails and upgrades are refused.
    pub draining: AtomicBool,
    /// Socket counters.
    pub stats: GatewayStats,
    /// Subscriptions per client address, under `max_subscriptions_per_ip`.
    pub subscriptions_per_ip: crate::limits::SubscriptionsPerIp,
    next_client_id: AtomicU64,
}

/// The hub's encoder for this gateway: a complete WebSocket text frame, built once.
pub fn ws_tick_encoder() -> TickEncoder {
    Arc::new(|tick: &Tick| frame::text_frame(&encode_tick(tick)))
}

impl GatewayState {
    /// A node over `hub`, publishing to `publisher` and reading prices from
    /// `prices`, with a candle hub of its own (fed by nothing: see
    /// [`GatewayState::with_candles`]).
    pub fn new(
        config: GatewayConfig,
        hub: Arc<SymbolHub>,
        publisher: Arc<dyn TickPublisher>,
        prices: Arc<dyn PriceStore>,
        readiness: Vec<Arc<dyn Readiness>>,
    ) -> Arc<Self> {
        let candles = CandleHub::new(marketmux_core::CandleConfig::default().grace_ms);
        Self::with_candles(config, hub, candles, publisher, prices, readiness)
    }

    /// Like [`GatewayState::new`], with `candles` (which the caller feeds
    /// the bus's ticks, as it feeds `hub`).
    pub fn with_candles(
        config: GatewayConfig,
        hub: Arc<SymbolHub>,
        candles: Arc<CandleHub>,
        publisher: Arc<dyn TickPublisher>,
        prices: Arc<dyn PriceStore>,
        readiness: Vec<Arc<dyn Readiness>>,
    ) -> Arc<Self> {
        hub.set_max_topics(match config.max_topics {
            0 => usize::MAX,
            max => max,
        });
        Arc::new(Self {
            hub,
            candles,
            registry: ConnectionRegistry::default(),
            sockets: TaskTracker::new(),
            publisher,
            prices,
            readiness,
            config,
            draining: AtomicBool::new(false),
            stats: GatewayStats::default(),
            subscriptions_per_ip: Default::default(),
            next_client_id: AtomicU64::new(1),
        })
    }

    /// A hub configured for WebSocket delivery: frames compressed for the
    /// sockets that negotiated permessage-deflate.
    pub fn new_hub() -> Arc<SymbolHub> {
        let control: ControlEncoder = Arc::new(|m: &ServerMessage<'_>| Self::control_frame(m));
        Arc::new(
            SymbolHub::new(HubConfig::default(), ws_tick_encoder())
                .with_control_encoder(control)
                .with_deflater(Arc::new(|f: &Bytes| deflate::deflate_frame(f))),
        )
    }

    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Relaxed)
    }

    /// Pushes a fired alert (a JSON object) to every socket of `user_id` on this node.
    pub fn push_alert(&self, user_id: i64, alert_json: &str) -> usize {
        let frame =
            Self::control_frame(&marketmux_core::ServerMessage::Alert { alert: alert_json });
        self.registry.push_to_user(user_id, &frame)
    }

    /// `Err` lists what is not ready.
    pub fn check_ready(&self) -> Result<(), String> {
        if self.draining.load(Relaxed) {
            return Err("draining for shutdown".into());
        }
        let down: Vec<String> = self
            .readiness
            .iter()
            .filter_map(|r| r.check().err())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(down.join("; "))
        }
    }

    /// A text frame for a control message.
    pub(crate) fn control_frame(msg: &marketmux_core::ServerMessage<'_>) -> Bytes {
        frame::text_frame(&msg.encode())
    }
}
