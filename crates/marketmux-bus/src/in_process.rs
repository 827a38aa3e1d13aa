//! [`InProcessBus`]: the bus of the `dev` role, on in-process calls.

use std::sync::Arc;

use async_trait::async_trait;
use marketmux_core::{CandleConfig, Interval, Position, Symbol, Tick};
use parking_lot::{Mutex, RwLock};

use crate::candles::CandlePage;
use crate::saved::{self, SavedError};
use crate::stream::{HistoryConfig, HistoryPage, Origin, StreamOpen, MAX_HISTORY_PAGE};
use crate::streams::SymbolStreams;
use crate::{BusError, LatestPrices, PriceStore, Readiness, TickBatchHandler, TickPublisher};

/// Publishing numbers each tick in its symbol's stream, keeps it in history,
/// stores the latest price and hands the tick straight to the node's
/// handlers (the hub), in the caller's order. One lock covers numbering and
/// delivery, so concurrent publishers' ticks reach the handlers in `seq` order.
#[derive(Default)]
pub struct InProcessBus {
    prices: LatestPrices,
    streams: Mutex<SymbolStreams>,
    handlers: RwLock<Vec<TickBatchHandler>>,
}

impl InProcessBus {
    /// An empty bus with no handler and the default history.
    pub fn new() -> Arc<Self> {
        Self::with_history(HistoryConfig::default())
    }

    /// An empty bus keeping `history` of each symbol.
    pub fn with_history(history: HistoryConfig) -> Arc<Self> {
        Self::with_streams(history, CandleConfig::default())
    }

    /// An empty bus keeping `history` of each symbol and its candles as
    /// `candles` says.
    pub fn with_streams(history: HistoryConfig, candles: CandleConfig) -> Arc<Self> {
        crate::candles::register();
        Arc::new(Self {
            streams: Mutex::new(SymbolStreams::new(history).with_candles(candles)),
            ..Self::default()
        })
    }

    /// Adds a receiver of every published batch, whole and in order (the
    /// hub: one hand-off per batch; the alert inbox).
    pub fn add_batch_handler(&self, handler: TickBatchHandler) {
        self.handlers.write().push(handler);
    }

    /// Writes every symbol's stream (epoch, seq, kept ticks, latest tick) to
    /// `path`, for [`InProcessBus::restore_streams`] after a clean restart.
    /// Returns how many streams were saved.
    pub fn save_streams(&self, path: &std::path::Path) -> Result<usize, SavedError> {
        let streams = self.streams.lock();
        let all = streams.iter().map(|(s, st)| (s, st, self.prices.get(s)));
        saved::save(path, all)
    }

    /// Reads (and removes) what [`InProcessBus::save_streams`] wrote, so the
    /// symbols keep their epochs and sequences; call before publishing.
    /// Without a file, nothing changes (every symbol starts a new epoch).
    pub fn restore_streams(&self, path: &std::path::Path) -> Result<usize, SavedError> {
        let restored = saved::take(path)?;
        let n = restored.len();
        let mut streams = self.streams.lock();
        for (symbol, stream, latest) in restored {
            if let Some(t) = latest {
                self.prices.put_if_newer(&t);
            }
            streams.restore(symbol, stream);
        }
        Ok(n)
    }

    /// The in-memory latest prices.
    pub fn prices(&self) -> &LatestPrices {
        &self.prices
    }

    /// Publishes without awaiting (the call is synchronous in process).
    pub fn publish_now(&self, ticks: &[Tick]) {
        self.publish_origins(ticks.iter().map(|t| (*t, None)));
    }

    /// Numbers, keeps and delivers the ticks whose origin was not accepted
    /// before; returns how many were dropped as duplicates.
    fn publish_origins(
        &self,
        ticks: impl ExactSizeIterator<Item = (Tick, Option<Origin>)>,
    ) -> usize {
        let mut accepted = Vec::with_capacity(ticks.len());
        let mut dropped = 0;
        let mut streams = self.streams.lock();
        for (tick, origin) in ticks {
            match streams.accept(&tick, origin) {
                Some(t) => accepted.push(t),
                None => dropped += 1,
            }
        }
        if accepted.is_empty() {
            return dropped;
        }
        for tick in &accepted {
            self.prices.put_if_newer(tick);
        }
        for h in self.handlers.read().iter() {
            h(&accepted);
        }
        drop(streams);
        dropped
    }
}

#[async_trait]
impl TickPublisher for InProcessBus {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.publish_now(&ticks);
        Ok(())
    }

    async fn publish_from(&self, ticks: Vec<(Tick, Option<Origin>)>) -> Result<usize, BusError> {
        Ok(self.publish_origins(ticks.into_iter()))
    }
}

#[async_trait]
impl PriceStore for InProcessBus {
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        Ok(self.prices.get(symbol))
    }

    /// Read under the publishing lock: every tick after `head` is delivered
    /// to the handlers after this returns.
    async fn open(&self, symbol: &Symbol, since: Option<Position>) -> Result<StreamOpen, BusError> {
        let mut streams = self.streams.lock();
        let latest = self.prices.get(symbol);
        Ok(streams.open(symbol, since, latest))
    }

    async fn history(
        &self,
        symbol: &Symbol,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        let limit = limit.min(MAX_HISTORY_PAGE);
        Ok(self.streams.lock().history(symbol, since, limit))
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Result<Option<CandlePage>, BusError> {
        Ok(self.streams.lock().candles(symbol, interval, limit))
    }
}

impl Readiness for InProcessBus {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use marketmux_core::Timestamp;

    use super::*;

    #[tokio::test]
    async fn publish_stores_and_delivers() {
        let bus = InProcessBus::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
            s2.fetch_add(ticks.len(), Ordering::Relaxed);
        }));
        let s = Symbol::new("AAPL").unwrap();
        bus.publish(vec![Tick::new(s, 1.5, Timestamp::now(), None).unwrap()])
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(bus.latest(&s).await.unwrap().unwrap().price, 1.5);
    }
}
