//! [`TickInbox`]: hands ticks from the bus to the evaluator task without ever
//! blocking the publisher, and without losing a fire when the task falls behind.
//!
//! Bound and policy: the inbox holds at most two ticks per symbol, the lowest
//! and the highest price seen since the evaluator last drained it. A new tick
//! of a symbol already waiting replaces the low or the high (or neither), so
//! memory is bounded by the number of distinct symbols, and pushing is a short
//! lock and a wake-up. No crossing is lost: an ABOVE alert fired by any of the
//! conflated ticks is fired by the highest, a BELOW alert by the lowest; only
//! `triggered_price`/`triggered_at` then name that extreme tick rather than
//! the first one that crossed. When the evaluator keeps up (the usual case)
//! every tick is evaluated on its own.

use std::collections::HashMap;

use marketmux_core::{Symbol, Tick};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The extremes of one symbol since the last drain.
struct Slot {
    low: Tick,
    high: Tick,
}

/// Ticks waiting for the evaluator, conflated per symbol to their extremes.
#[derive(Default)]
pub struct TickInbox {
    waiting: Mutex<Waiting>,
    ready: Notify,
}

#[derive(Default)]
struct Waiting {
    slots: HashMap<Symbol, Slot>,
    /// Symbols in first-arrival order.
    order: Vec<Symbol>,
    /// Ticks merged into an existing slot (counter).
    conflated: u64,
}

impl TickInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tick; never blocks beyond a short lock.
    pub fn push(&self, tick: &Tick) {
        {
            let mut w = self.waiting.lock();
            match w.slots.get_mut(&tick.symbol) {
                Some(slot) => {
                    if tick.price < slot.low.price {
                        slot.low = *tick;
                    }
                    if tick.price > slot.high.price {
                        slot.high = *tick;
                    }
                    w.conflated += 1;
                }
                None => {
                    w.slots.insert(
                        tick.symbol,
                        Slot {
                            low: *tick,
                            high: *tick,
                        },
                    );
                    w.order.push(tick.symbol);
                }
            }
        }
        self.ready.notify_one();
    }

    /// Waits until at least one tick may be waiting.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes every waiting tick: per symbol (first-arrival order) the low and
    /// the high, in timestamp order, once when they are the same tick.
    pub fn drain(&self) -> Vec<Tick> {
        let mut w = self.waiting.lock();
        let order = std::mem::take(&mut w.order);
        let mut out = Vec::with_capacity(order.len());
        for sym in order {
            if let Some(Slot { low, high }) = w.slots.remove(&sym) {
                if low == high {
                    out.push(low);
                } else if low.timestamp <= high.timestamp {
                    out.extend([low, high]);
                } else {
                    out.extend([high, low]);
                }
            }
        }
        out
    }

    /// Ticks merged into a waiting one since start.
    pub fn conflated(&self) -> u64 {
        self.waiting.lock().conflated
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::Timestamp;

    use super::*;

    fn t(sym: &str, price: f64, ts: i64) -> Tick {
        Tick::new(Symbol::new(sym).unwrap(), price, Timestamp(ts), None).unwrap()
    }

    #[test]
    fn keeps_the_extremes_per_symbol() {
        let inbox = TickInbox::new();
        inbox.push(&t("A", 10.0, 1));
        inbox.push(&t("B", 5.0, 2));
        inbox.push(&t("A", 12.0, 3));
        inbox.push(&t("A", 8.0, 4));
        inbox.push(&t("A", 11.0, 5));
        let got: Vec<(String, f64)> = inbox
            .drain()
            .iter()
            .map(|t| (t.symbol.as_str().to_string(), t.price))
            .collect();
        assert_eq!(
            got,
            vec![("A".into(), 12.0), ("A".into(), 8.0), ("B".into(), 5.0)]
        );
        assert!(inbox.drain().is_empty());
        assert_eq!(inbox.conflated(), 3);
    }
}
