//! [`SequenceTracker`]: spots gaps and duplicates from the per-producer,
//! per-symbol sequence numbers every record carries.

use std::collections::HashMap;

use marketmux_core::Symbol;

use crate::codec::TickMeta;

/// Most (producer, symbol) pairs remembered; past it the memory is cleared
/// (counting restarts, nothing else is affected).
pub const MAX_TRACKED: usize = 200_000;

/// What one record's sequence number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The next expected one, or the first seen of this producer and symbol.
    InOrder,
    /// At or below one already seen: a redelivery (harmless, at-least-once).
    Duplicate,
    /// Skips this many numbers: records lost upstream or filtered.
    Gap(u64),
    /// No producer metadata (producer 0 or sequence 0): cannot be checked.
    Unchecked,
}

/// Remembers the last sequence per (producer, symbol) and counts anomalies.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    last: HashMap<(u64, Symbol), u64>,
    /// Records seen again.
    pub duplicates: u64,
    /// Sequence numbers skipped, summed.
    pub missing: u64,
}

impl SequenceTracker {
    /// Checks and remembers one record.
    pub fn observe(&mut self, symbol: Symbol, meta: &TickMeta) -> SequenceCheck {
        if meta.producer_id == 0 || meta.sequence == 0 {
            return SequenceCheck::Unchecked;
        }
        if self.last.len() >= MAX_TRACKED {
            self.last.clear();
        }
        let key = (meta.producer_id, symbol);
        let check = match self.last.get(&key) {
            None => SequenceCheck::InOrder,
            Some(&last) if meta.sequence <= last => SequenceCheck::Duplicate,
            Some(&last) if meta.sequence == last + 1 => SequenceCheck::InOrder,
            Some(&last) => SequenceCheck::Gap(meta.sequence - last - 1),
        };
        match check {
            SequenceCheck::Duplicate => self.duplicates += 1,
            SequenceCheck::Gap(n) => {
                self.missing += n;
                self.last.insert(key, meta.sequence);
            }
            SequenceCheck::InOrder => {
                self.last.insert(key, meta.sequence);
            }
            SequenceCheck::Unchecked => {}
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::Timestamp;

    use super::*;

    fn meta(producer_id: u64, sequence: u64) -> TickMeta {
        TickMeta {
            source: "t".into(),
            producer_id,
            sequence,
            accepted: Timestamp(0),
        }
    }

    #[test]
    fn counts_duplicates_and_gaps_per_producer_and_symbol() {
        let a = Symbol::new("AAPL").unwrap();
        let m = Symbol::new("MSFT").unwrap();
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(a, &meta(1, 5)), SequenceCheck::InOrder);
        assert_eq!(t.observe(a, &meta(1, 6)), SequenceCheck::InOrder);
        assert_eq!(t.observe(m, &meta(1, 1)), SequenceCheck::InOrder);
        assert_eq!(t.observe(a, &meta(2, 1)), SequenceCheck::InOrder);
        assert_eq!(t.observe(a, &meta(1, 6)), SequenceCheck::Duplicate);
        assert_eq!(t.observe(a, &meta(1, 9)), SequenceCheck::Gap(2));
        assert_eq!((t.duplicates, t.missing), (1, 2));
    }
}
