//! [`AlertIndex`]: active alerts per symbol, sorted by target, so finding the
//! alerts a price fires costs O(log n + fired) rather than a scan.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use marketmux_core::Symbol;

use crate::model::{Alert, Condition};

/// A target price ordered with `f64::total_cmp` (targets are finite and > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Target(f64);

impl Eq for Target {}
impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Target {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// (target, alert id): unique even when targets repeat.
type Key = (Target, i64);

/// The two sorted sides of one symbol.
#[derive(Default)]
struct SymbolAlerts {
    /// ABOVE alerts: fired by a price >= target, i.e. the low end of this set.
    above: BTreeSet<Key>,
    /// BELOW alerts: fired by a price <= target, i.e. the high end of this set.
    below: BTreeSet<Key>,
}

impl SymbolAlerts {
    fn side(&mut self, c: Condition) -> &mut BTreeSet<Key> {
        match c {
            Condition::Above => &mut self.above,
            Condition::Below => &mut self.below,
        }
    }
}

/// Active alerts of every symbol, and each alert by id.
#[derive(Default)]
pub struct AlertIndex {
    symbols: HashMap<Symbol, SymbolAlerts>,
    by_id: HashMap<i64, Alert>,
}

impl AlertIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of alerts held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no alert is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether alert `id` is held.
    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Adds (or replaces) an active alert; inactive ones are ignored.
    pub fn insert(&mut self, alert: Alert) {
        if !alert.active {
            return;
        }
        self.remove(alert.id);
        self.symbols
            .entry(alert.symbol)
            .or_default()
            .side(alert.condition)
            .insert((Target(alert.target_price), alert.id));
        self.by_id.insert(alert.id, alert);
    }

    /// Removes alert `id`, returning it if it was held.
    pub fn remove(&mut self, id: i64) -> Option<Alert> {
        let alert = self.by_id.remove(&id)?;
        if let Some(s) = self.symbols.get_mut(&alert.symbol) {
            s.side(alert.condition)
                .remove(&(Target(alert.target_price), alert.id));
            if s.above.is_empty() && s.below.is_empty() {
                self.symbols.remove(&alert.symbol);
            }
        }
        Some(alert)
    }

    /// Removes and returns every alert of `symbol` that `price` fires:
    /// ABOVE with target <= price, BELOW with target >= price.
    pub fn take_crossed(&mut self, symbol: &Symbol, price: f64) -> Vec<Alert> {
        let Some(s) = self.symbols.get_mut(symbol) else {
            return Vec::new();
        };
        let mut ids: Vec<i64> = Vec::new();
        let p = Target(price);
        // Fast path: look at the one nearest key of each side first.
        if s.above.first().is_some_and(|k| k.0 <= p) {
            ids.extend(s.above.range(..=(p, i64::MAX)).map(|k| k.1));
        }
        if s.below.last().is_some_and(|k| k.0 >= p) {
            ids.extend(s.below.range((p, i64::MIN)..).map(|k| k.1));
        }
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Every alert id held (for tests and reloads).
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_id.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    pub(crate) fn alert(id: i64, sym: &str, c: Condition, target: f64) -> Alert {
        Alert {
            id,
            user_id: 1,
            symbol: Symbol::new(sym).unwrap(),
            condition: c,
            target_price: target,
            active: true,
            created_at: Utc::now(),
            triggered_at: None,
            triggered_price: None,
        }
    }

    #[test]
    fn takes_exactly_the_crossed_alerts() {
        let mut ix = AlertIndex::new();
        let s = Symbol::new("AAPL").unwrap();
        ix.insert(alert(1, "AAPL", Condition::Above, 100.0));
        ix.insert(alert(2, "AAPL", Condition::Above, 110.0));
        ix.insert(alert(3, "AAPL", Condition::Below, 90.0));
        ix.insert(alert(4, "AAPL", Condition::Below, 80.0));
        ix.insert(alert(5, "MSFT", Condition::Above, 1.0));
        assert!(ix.take_crossed(&s, 95.0).is_empty());
        let got: Vec<i64> = ix.take_crossed(&s, 100.0).iter().map(|a| a.id).collect();
        assert_eq!(got, vec![1]);
        assert!(
            ix.take_crossed(&s, 100.0).is_empty(),
            "taken alerts are gone"
        );
        let mut got: Vec<i64> = ix.take_crossed(&s, 80.0).iter().map(|a| a.id).collect();
        got.sort();
        assert_eq!(got, vec![3, 4]);
        assert_eq!(ix.len(), 2);
        assert!(ix.remove(2).is_some());
        assert!(ix.take_crossed(&s, 1000.0).is_empty());
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn equal_targets_and_inactive() {
        let mut ix = AlertIndex::new();
        let s = Symbol::new("X").unwrap();
        for id in 1..=3 {
            ix.insert(alert(id, "X", Condition::Above, 5.0));
        }
        let mut inactive = alert(9, "X", Condition::Above, 1.0);
        inactive.active = false;
        ix.insert(inactive);
        assert_eq!(ix.take_crossed(&s, 5.0).len(), 3);
        assert!(ix.is_empty());
    }
}
