//! [`RateCaps`]: one client's rate caps (`max_rate`), one slot per capped
//! symbol, kept inside its [`crate::ClientQueue`].
//!
//! Bound and policy:
//! - A capped symbol sends at most one tick per [`RateCaps`] interval. A tick
//!   that arrives sooner is held in the symbol's slot, and a newer one
//!   replaces it (the replaced tick is *skipped*, counted in
//!   [`crate::HubStats::capped_skipped`]): at most one tick per capped symbol
//!   is ever held.
//! - A held tick is due when its symbol's interval since the last send has
//!   passed, so it goes out less than one interval after it arrived: a capped
//!   client never keeps a stale last price.
//! - No task and no timer per subscription: the slots only record when each is
//!   due, and [`RateCaps::next_due`] is the one deadline the client's writer
//!   waits for besides its queue (see [`crate::Batch::next_due`]).
//! - Uncapped symbols have no slot and never touch this structure.

use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use marketmux_core::Symbol;
use tokio::time::Instant;

/// One capped symbol of one client.
#[derive(Debug)]
struct CapSlot {
    /// Shortest time between two sends (`1 / max_rate`).
    interval: Duration,
    /// When the next tick may be sent (None: nothing sent yet, send at once).
    next_at: Option<Instant>,
    /// The newest tick that arrived too soon, waiting for `next_at`.
    held: Option<Bytes>,
}

/// What to do with a tick of a capped symbol ([`RateCaps::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The symbol is not capped: send as usual.
    Uncapped,
    /// The interval has passed: send it now (the slot counts it as sent).
    SendNow,
    /// Held until its slot is `due`; `replaced` when it replaced a held tick.
    Held { replaced: bool, due: Instant },
}

/// Every capped symbol of one client and the one deadline they make.
#[derive(Debug, Default)]
pub(crate) struct RateCaps {
    slots: IndexMap<Symbol, CapSlot>,
    /// The earliest `next_at` of a slot holding a tick.
    next_due: Option<Instant>,
}

impl RateCaps {
    /// Caps `symbol` at one tick per `interval`, or changes its cap. A held
    /// tick stays held, now due one new interval after the last send.
    pub(crate) fn set(&mut self, symbol: Symbol, interval: Duration) {
        let slot = self.slots.entry(symbol).or_insert(CapSlot {
            interval,
            next_at: None,
            held: None,
        });
        if let Some(at) = slot.next_at {
            // From the last send: `at` was one old interval after it.
            slot.next_at = at.checked_sub(slot.interval).map(|last| last + interval);
        }
        slot.interval = interval;
        self.recompute_next_due();
    }

    /// Removes `symbol`'s cap; returns the tick it held, if any (the caller
    /// sends it, or drops it after an unsubscribe).
    pub(crate) fn remove(&mut self, symbol: &Symbol) -> Option<Bytes> {
        let held = self.slots.swap_remove(symbol)?.held;
        if held.is_some() {
            self.recompute_next_due();
        }
        held
    }

    /// Whether no symbol is capped.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Decides for a tick of `symbol` arriving at `now`; a tick that is held
    /// is stored here (`frame` is cloned only then).
    pub(crate) fn offer(&mut self, symbol: &Symbol, frame: &Bytes, now: Instant) -> Offer {
        let Some(slot) = self.slots.get_mut(symbol) else {
            return Offer::Uncapped;
        };
        match slot.next_at {
            Some(at) if now < at || slot.held.is_some() => {
                let replaced = slot.held.replace(frame.clone()).is_some();
                if self.next_due.is_none_or(|due| at < due) {
                    self.next_due = Some(at);
                }
                Offer::Held { replaced, due: at }
            }
            _ => {
                slot.next_at = Some(now + slot.interval);
                Offer::SendNow
            }
        }
    }

    /// Notes that a tick of `symbol` was sent at `now` other than through
    /// [`RateCaps::offer`] (a subscription's first tick): the next waits one
    /// interval. A tick it held is older and is dropped.
    pub(crate) fn sent(&mut self, symbol: &Symbol, now: Instant) {
        if let Some(slot) = self.slots.get_mut(symbol) {
            slot.next_at = Some(now + slot.interval);
            if slot.held.take().is_some() {
                self.recompute_next_due();
            }
        }
    }

    /// When the next held tick is due (None: none is held).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// Moves every held tick that is due at `now` to `out`, in slot order,
    /// and returns how many; each slot's next send is one interval later.
    pub(crate) fn take_due(&mut self, now: Instant, out: &mut Vec<Bytes>) -> usize {
        if self.next_due.is_none_or(|due| now < due) {
            return 0;
        }
        let mut n = 0;
        let mut next_due: Option<Instant> = None;
        for slot in self.slots.values_mut() {
            let Some(at) = slot.next_at else { continue };
            if slot.held.is_none() {
                continue;
            }
            if at <= now {
                if let Some(frame) = slot.held.take() {
                    out.push(frame);
                    n += 1;
                }
                slot.next_at = Some(now + slot.interval);
            } else {
                next_due = Some(next_due.map_or(at, |d| d.min(at)));
            }
        }
        self.next_due = next_due;
        n
    }

    /// Bytes of the held ticks.
    pub(crate) fn held_bytes(&self) -> usize {
        self.slots
            .values()
            .filter_map(|s| s.held.as_ref())
            .map(Bytes::len)
            .sum()
    }

    fn recompute_next_due(&mut self) {
        self.next_due = self
            .slots
            .values()
            .filter(|s| s.held.is_some())
            .filter_map(|s| s.next_at)
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_newest_tick_waits_for_the_interval_then_goes_out() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = sym("A");
        assert_eq!(caps.offer(&a, &frame("a0"), t0), Offer::Uncapped);
        caps.set(a, 250 * MS);
        assert_eq!(caps.offer(&a, &frame("a1"), t0), Offer::SendNow);
        let due = t0 + 250 * MS;
        assert_eq!(
            caps.offer(&a, &frame("a2"), t0 + 10 * MS),
            Offer::Held {
                replaced: false,
                due
            }
        );
        assert_eq!(
            caps.offer(&a, &frame("a3"), t0 + 20 * MS),
            Offer::Held {
                replaced: true,
                due
            }
        );
        assert_eq!(caps.next_due(), Some(t0 + 250 * MS));
        let mut out = Vec::new();
        assert_eq!(caps.take_due(t0 + 249 * MS, &mut out), 0);
        assert_eq!(caps.take_due(t0 + 250 * MS, &mut out), 1);
        assert_eq!(out, [frame("a3")]);
        assert_eq!(caps.next_due(), None);
        // The release counts as a send: the next tick waits a new interval.
        assert!(matches!(
            caps.offer(&a, &frame("a4"), t0 + 300 * MS),
            Offer::Held { .. }
        ));
        assert_eq!(caps.next_due(), Some(t0 + 500 * MS));
        // Once a whole interval passed with nothing held, a tick goes at once.
        assert_eq!(caps.take_due(t0 + 500 * MS, &mut out), 1);
        assert_eq!(caps.offer(&a, &frame("a5"), t0 + 900 * MS), Offer::SendNow);
    }

    #[test]
    fn symbols_are_due_on_their_own_intervals() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let (a, b) = (sym("A"), sym("B"));
        caps.set(a, 100 * MS);
        caps.set(b, 1000 * MS);
        caps.offer(&a, &frame("a1"), t0);
        caps.offer(&b, &frame("b1"), t0);
        caps.offer(&b, &frame("b2"), t0 + MS);
        caps.offer(&a, &frame("a2"), t0 + MS);
        assert_eq!(caps.next_due(), Some(t0 + 100 * MS));
        let mut out = Vec::new();
        assert_eq!(caps.take_due(t0 + 100 * MS, &mut out), 1);
        assert_eq!(out, [frame("a2")]);
        assert_eq!(caps.next_due(), Some(t0 + 1000 * MS), "b still holds b2");
        assert_eq!(caps.held_bytes(), 2);
    }

    #[test]
    fn changing_or_removing_a_cap_moves_or_releases_the_held_tick() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = sym("A");
        caps.set(a, 1000 * MS);
        caps.offer(&a, &frame("a1"), t0);
        caps.offer(&a, &frame("a2"), t0 + MS);
        assert_eq!(caps.next_due(), Some(t0 + 1000 * MS));
        caps.set(a, 100 * MS);
        assert_eq!(caps.next_due(), Some(t0 + 100 * MS));
        assert_eq!(caps.remove(&a), Some(frame("a2")));
        assert_eq!(caps.next_due(), None);
        assert!(caps.is_empty());
        assert_eq!(caps.offer(&a, &frame("a3"), t0), Offer::Uncapped);
    }

    #[test]
    fn a_first_tick_sent_elsewhere_starts_the_interval() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = sym("A");
        caps.set(a, 100 * MS);
        caps.sent(&a, t0);
        assert!(matches!(
            caps.offer(&a, &frame("a1"), t0 + MS),
            Offer::Held { .. }
        ));
    }
}
