//! [`InProcessBus`]: the bus of the `dev` role, on in-process calls.

use std::sync::Arc;

use async_trait::async_trait;
use marketmux_core::{Symbol, Tick};
use parking_lot::RwLock;

use crate::{BusError, LatestPrices, PriceStore, Readiness, TickHandler, TickPublisher};

/// Publishing stores the latest price and hands the tick straight to the
/// node's handler (the hub), in the caller's order.
#[derive(Default)]
pub struct InProcessBus {
    prices: LatestPrices,
    handlers: RwLock<Vec<TickHandler>>,
    batch_handlers: RwLock<Vec<BatchHandler>>,
}

/// Receives each published batch whole (the hub: one writer wake-up per batch).
pub type BatchHandler = Arc<dyn Fn(&[Tick]) + Send + Sync>;

impl InProcessBus {
    /// An empty bus with no handler.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a receiver of every published tick (the hub, an alert evaluator).
    pub fn add_handler(&self, handler: TickHandler) {
        self.handlers.write().push(handler);
    }

    /// Adds a receiver of every published batch, in order.
    pub fn add_batch_handler(&self, handler: BatchHandler) {
        self.batch_handlers.write().push(handler);
    }

    /// The in-memory latest prices.
    pub fn prices(&self) -> &LatestPrices {
        &self.prices
    }

    /// Publishes without awaiting (the call is synchronous in process).
    pub fn publish_now(&self, ticks: &[Tick]) {
        let handlers = self.handlers.read();
        for tick in ticks {
            self.prices.put_if_newer(tick);
            for h in handlers.iter() {
                h(tick);
            }
        }
        for h in self.batch_handlers.read().iter() {
            h(ticks);
        }
    }
}

#[async_trait]
impl TickPublisher for InProcessBus {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.publish_now(&ticks);
        Ok(())
    }
}

#[async_trait]
impl PriceStore for InProcessBus {
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        Ok(self.prices.get(symbol))
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
        bus.add_handler(Arc::new(move |_t: &Tick| {
            s2.fetch_add(1, Ordering::Relaxed);
        }));
        let s = Symbol::new("AAPL").unwrap();
        bus.publish(vec![Tick::new(s, 1.5, Timestamp::now(), None).unwrap()])
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(bus.latest(&s).await.unwrap().unwrap().price, 1.5);
    }
}
