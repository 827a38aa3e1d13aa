//! [`LatestPrices`]: the newest tick per symbol, in memory.

use std::collections::HashMap;

use marketmux_core::{Symbol, Tick};
use parking_lot::RwLock;

/// The newest tick per symbol; an older timestamp never replaces a newer one.
#[derive(Default)]
pub struct LatestPrices {
    shards: [RwLock<HashMap<Symbol, Tick>>; 16],
}

impl LatestPrices {
    fn shard(&self, symbol: &Symbol) -> &RwLock<HashMap<Symbol, Tick>> {
        let b = symbol.as_str().as_bytes();
        let h = b
            .iter()
            .fold(0usize, |h, c| h.wrapping_mul(31).wrapping_add(*c as usize));
        &self.shards[h % self.shards.len()]
    }

    /// Stores `tick` unless a newer one is stored. Returns true if stored.
    pub fn put_if_newer(&self, tick: &Tick) -> bool {
        let mut map = self.shard(&tick.symbol).write();
        match map.get(&tick.symbol) {
            Some(old) if old.timestamp > tick.timestamp => false,
            _ => {
                map.insert(tick.symbol, *tick);
                true
            }
        }
    }

    /// The newest tick of `symbol`.
    pub fn get(&self, symbol: &Symbol) -> Option<Tick> {
        self.shard(symbol).read().get(symbol).copied()
    }

    /// Every known symbol, sorted.
    pub fn symbols(&self) -> Vec<Symbol> {
        let mut v: Vec<Symbol> = self
            .shards
            .iter()
            .flat_map(|s| s.read().keys().copied().collect::<Vec<_>>())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::Timestamp;

    use super::*;

    #[test]
    fn older_never_replaces_newer() {
        let p = LatestPrices::default();
        let s = Symbol::new("AAPL").unwrap();
        assert!(p.put_if_newer(&Tick::new(s, 2.0, Timestamp(200), None).unwrap()));
        assert!(!p.put_if_newer(&Tick::new(s, 1.0, Timestamp(100), None).unwrap()));
        assert_eq!(p.get(&s).unwrap().price, 2.0);
        assert!(p.put_if_newer(&Tick::new(s, 3.0, Timestamp(300), None).unwrap()));
        assert_eq!(p.get(&s).unwrap().price, 3.0);
        assert_eq!(p.symbols(), vec![s]);
    }
}
