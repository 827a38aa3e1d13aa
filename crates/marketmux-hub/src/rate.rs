//! [`RateCaps`]: one client's rate caps (`max_rate`), one slot per capped
//! stream of a symbol (its ticks, or one candle interval: the same
//! [`SlotKey`] as the queue's conflation slots), kept inside its
//! [`crate::ClientQueue`]. A client may cap a symbol's 1s candles and
//! leave its ticks uncapped, or cap each at its own rate.
//!
//! Bound and policy:
//! - A capped stream sends at most once per [`RateCaps`] interval. An update
//!   that arrives sooner is held in the stream's slot, and a newer one
//!   replaces it (the replaced update is *skipped*, counted in
//!   [`crate::HubStats::capped_skipped`]): at most one replaceable update per
//!   capped stream is ever held.
//! - A held update is due when its stream's interval since the last send has
//!   passed, so it goes out less than one interval after it arrived: a capped
//!   client never keeps a stale last price.
//! - A *final* update (a candle with `closed:true`, [`Update::Final`]) is
//!   never skipped nor replaced. Arriving too soon, it replaces the held
//!   update of its stream (the same candle, still open: superseded) and
//!   waits for the due time; updates arriving after it (the next candle)
//!   are held behind it. At a due time a slot sends its held final updates,
//!   in order, if it has any, else its newest update: the next candle's
//!   first update goes out one interval after the closed one, so the cap
//!   holds for closed candles too. A slot holds at most the final updates
//!   of one interval of the cap (a stream of candles closes at most once per
//!   candle interval, 1 s at least, and a cap's interval is at most 10 s),
//!   and sends them all at its next due time.
//! - No task and no timer per subscription: the slots only record when each is
//!   due, and [`RateCaps::next_due`] is the one deadline the client's writer
//!   waits for besides its queue (see [`crate::Batch::next_due`]).
//! - Uncapped streams have no slot and never touch this structure.

use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::time::Instant;

use crate::queue::{SlotKey, TICKS};

/// One capped stream of one client.
#[derive(Debug)]
struct CapSlot {
    /// Shortest time between two sends (`1 / max_rate`).
    interval: Duration,
    /// When the next update may be sent (None: nothing sent yet, send at once).
    next_at: Option<Instant>,
    /// Final updates that arrived too soon, oldest first: sent before `held`.
    finals: Vec<Bytes>,
    /// The newest replaceable update that arrived too soon.
    held: Option<Bytes>,
}

impl CapSlot {
    fn holds(&self) -> bool {
        self.held.is_some() || !self.finals.is_empty()
    }
}

/// What kind of update is offered to a cap ([`RateCaps::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Update {
    /// A newer one replaces it (a tick, an open candle).
    Latest,
    /// Never replaced nor skipped (a closed candle).
    Final,
}

/// What to do with an update of a capped stream ([`RateCaps::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The stream is not capped: send as usual.
    Uncapped,
    /// The interval has passed: send it now (the slot counts it as sent).
    SendNow,
    /// Held until its slot is `due`; `replaced` when it replaced a held update.
    Held { replaced: bool, due: Instant },
}

/// What a slot held when its cap was removed ([`RateCaps::remove`]), in
/// the order it must be sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// Final updates, oldest first.
    pub(crate) finals: Vec<Bytes>,
    /// The newest replaceable update, sent after them.
    pub(crate) latest: Option<Bytes>,
}

/// How many updates [`RateCaps::take_due`] released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    /// Ticks among them.
    pub(crate) ticks: usize,
    /// Every update, ticks included.
    pub(crate) all: usize,
}

/// Every capped stream of one client and the one deadline they make.
#[derive(Debug, Default)]
pub(crate) struct RateCaps {
    slots: IndexMap<SlotKey, CapSlot>,
    /// The earliest `next_at` of a slot holding an update.
    next_due: Option<Instant>,
}

impl RateCaps {
    /// Caps the stream `key` at one update per `interval`, or changes its
    /// cap. What it holds stays held, now due one new interval after the
    /// last send.
    pub(crate) fn set(&mut self, key: SlotKey, interval: Duration) {
        let slot = self.slots.entry(key).or_insert(CapSlot {
            interval,
            next_at: None,
            finals: Vec::new(),
            held: None,
        });
        if let Some(at) = slot.next_at {
            // From the last send: `at` was one old interval after it.
            slot.next_at = at.checked_sub(slot.interval).map(|last| last + interval);
        }
        slot.interval = interval;
        self.recompute_next_due();
    }

    /// Removes the cap of `key`; returns what it held (the caller sends it,
    /// or drops it after an unsubscribe).
    pub(crate) fn remove(&mut self, key: &SlotKey) -> Released {
        let Some(slot) = self.slots.swap_remove(key) else {
            return Released::default();
        };
        if slot.holds() {
            self.recompute_next_due();
        }
        Released {
            finals: slot.finals,
            latest: slot.held,
        }
    }

    /// Whether no stream is capped.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Decides for an update of `key` arriving at `now`; an update that is
    /// held is stored here (`frame` is cloned only then).
    pub(crate) fn offer(
        &mut self,
        key: &SlotKey,
        frame: &Bytes,
        kind: Update,
        now: Instant,
    ) -> Offer {
        // Most clients cap nothing: no hashing for them.
        if self.slots.is_empty() {
            return Offer::Uncapped;
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return Offer::Uncapped;
        };
        match slot.next_at {
            Some(at) if now < at || slot.holds() => {
                let replaced = match kind {
                    Update::Latest => slot.held.replace(frame.clone()).is_some(),
                    Update::Final => {
                        // The held update is of the candle that just closed.
                        slot.finals.push(frame.clone());
                        slot.held.take().is_some()
                    }
                };
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

    /// Notes that an update of `key` was sent at `now` other than through
    /// [`RateCaps::offer`] (a subscription's first tick): the next waits one
    /// interval. A replaceable update it held is older and is dropped.
    pub(crate) fn sent(&mut self, key: &SlotKey, now: Instant) {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.next_at = Some(now + slot.interval);
            if slot.held.take().is_some() {
                self.recompute_next_due();
            }
        }
    }

    /// When the next held update is due (None: none is held).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// Moves what is due at `now` to `out`, in slot order: of each due slot
    /// its final updates if it holds any, else its newest update. Each such
    /// slot's next send is one interval later.
    pub(crate) fn take_due(&mut self, now: Instant, out: &mut Vec<Bytes>) -> Due {
        let mut due = Due::default();
        if self.next_due.is_none_or(|at| now < at) {
            return due;
        }
        let mut next_due: Option<Instant> = None;
        for (key, slot) in self.slots.iter_mut() {
            let Some(mut at) = slot.next_at else { continue };
            if !slot.holds() {
                continue;
            }
            if at <= now {
                let n = if slot.finals.is_empty() {
                    out.extend(slot.held.take());
                    1
                } else {
                    let n = slot.finals.len();
                    out.append(&mut slot.finals);
                    n
                };
                due.all += n;
                if key.1 == TICKS {
                    due.ticks += n;
                }
                at = now + slot.interval;
                slot.next_at = Some(at);
                if !slot.holds() {
                    continue;
                }
            }
            next_due = Some(next_due.map_or(at, |d| d.min(at)));
        }
        self.next_due = next_due;
        due
    }

    /// Bytes of the held updates.
    pub(crate) fn held_bytes(&self) -> usize {
        self.slots
            .values()
            .flat_map(|s| s.finals.iter().chain(s.held.as_ref()))
            .map(Bytes::len)
            .sum()
    }

    fn recompute_next_due(&mut self) {
        self.next_due = self
            .slots
            .values()
            .filter(|s| s.holds())
            .filter_map(|s| s.next_at)
            .min();
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::Symbol;

    use super::*;

    fn ticks(s: &str) -> SlotKey {
        (Symbol::new(s).unwrap(), TICKS)
    }

    fn candles(s: &str) -> SlotKey {
        (Symbol::new(s).unwrap(), 1)
    }

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    const MS: Duration = Duration::from_millis(1);
    const LATEST: Update = Update::Latest;
    const FINAL: Update = Update::Final;

    #[test]
    fn the_newest_tick_waits_for_the_interval_then_goes_out() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = ticks("A");
        assert_eq!(caps.offer(&a, &frame("a0"), LATEST, t0), Offer::Uncapped);
        caps.set(a, 250 * MS);
        assert_eq!(caps.offer(&a, &frame("a1"), LATEST, t0), Offer::SendNow);
        let due = t0 + 250 * MS;
        assert_eq!(
            caps.offer(&a, &frame("a2"), LATEST, t0 + 10 * MS),
            Offer::Held {
                replaced: false,
                due
            }
        );
        assert_eq!(
            caps.offer(&a, &frame("a3"), LATEST, t0 + 20 * MS),
            Offer::Held {
                replaced: true,
                due
            }
        );
        assert_eq!(caps.next_due(), Some(t0 + 250 * MS));
        let mut out = Vec::new();
        assert_eq!(caps.take_due(t0 + 249 * MS, &mut out), Due::default());
        assert_eq!(
            caps.take_due(t0 + 250 * MS, &mut out),
            Due { ticks: 1, all: 1 }
        );
        assert_eq!(out, [frame("a3")]);
        assert_eq!(caps.next_due(), None);
        // The release counts as a send: the next tick waits a new interval.
        assert!(matches!(
            caps.offer(&a, &frame("a4"), LATEST, t0 + 300 * MS),
            Offer::Held { .. }
        ));
        assert_eq!(caps.next_due(), Some(t0 + 500 * MS));
        // Once a whole interval passed with nothing held, a tick goes at once.
        assert_eq!(caps.take_due(t0 + 500 * MS, &mut out).all, 1);
        assert_eq!(
            caps.offer(&a, &frame("a5"), LATEST, t0 + 900 * MS),
            Offer::SendNow
        );
    }

    #[test]
    fn symbols_are_due_on_their_own_intervals() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let (a, b) = (ticks("A"), ticks("B"));
        caps.set(a, 100 * MS);
        caps.set(b, 1000 * MS);
        caps.offer(&a, &frame("a1"), LATEST, t0);
        caps.offer(&b, &frame("b1"), LATEST, t0);
        caps.offer(&b, &frame("b2"), LATEST, t0 + MS);
        caps.offer(&a, &frame("a2"), LATEST, t0 + MS);
        assert_eq!(caps.next_due(), Some(t0 + 100 * MS));
        let mut out = Vec::new();
        assert_eq!(caps.take_due(t0 + 100 * MS, &mut out).all, 1);
        assert_eq!(out, [frame("a2")]);
        assert_eq!(caps.next_due(), Some(t0 + 1000 * MS), "b still holds b2");
        assert_eq!(caps.held_bytes(), 2);
    }

    #[test]
    fn a_symbols_ticks_and_candles_are_capped_apart() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let (t, c) = (ticks("A"), candles("A"));
        caps.set(c, 500 * MS);
        // Only the candles are capped: the ticks take the usual path.
        assert_eq!(caps.offer(&t, &frame("t1"), LATEST, t0), Offer::Uncapped);
        assert_eq!(caps.offer(&c, &frame("c1"), LATEST, t0), Offer::SendNow);
        assert!(matches!(
            caps.offer(&c, &frame("c2"), LATEST, t0 + MS),
            Offer::Held { .. }
        ));
        // Capping the ticks too, faster: each stream keeps its own interval.
        caps.set(t, 100 * MS);
        assert_eq!(
            caps.offer(&t, &frame("t2"), LATEST, t0 + MS),
            Offer::SendNow
        );
        caps.offer(&t, &frame("t3"), LATEST, t0 + 2 * MS);
        let mut out = Vec::new();
        assert_eq!(
            caps.take_due(t0 + 101 * MS, &mut out),
            Due { ticks: 1, all: 1 }
        );
        assert_eq!(out, [frame("t3")]);
        assert_eq!(
            caps.take_due(t0 + 500 * MS, &mut out),
            Due { ticks: 0, all: 1 }
        );
        assert_eq!(out, [frame("t3"), frame("c2")]);
        assert_eq!(caps.remove(&t), Released::default());
        assert_eq!(caps.offer(&t, &frame("t4"), LATEST, t0), Offer::Uncapped);
        assert!(!caps.is_empty(), "the candles stay capped");
    }

    #[test]
    fn a_closed_candle_replaces_the_held_update_and_the_next_waits_behind_it() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let c = candles("A");
        caps.set(c, 500 * MS);
        assert_eq!(caps.offer(&c, &frame("open1"), LATEST, t0), Offer::SendNow);
        caps.offer(&c, &frame("open1b"), LATEST, t0 + 100 * MS);
        // The candle closes: the held open state is superseded, not sent.
        let due = t0 + 500 * MS;
        assert_eq!(
            caps.offer(&c, &frame("closed1"), FINAL, t0 + 200 * MS),
            Offer::Held {
                replaced: true,
                due
            }
        );
        // The next candle's updates wait behind it, and replace each other.
        assert_eq!(
            caps.offer(&c, &frame("open2"), LATEST, t0 + 300 * MS),
            Offer::Held {
                replaced: false,
                due
            }
        );
        caps.offer(&c, &frame("open2b"), LATEST, t0 + 400 * MS);
        let mut out = Vec::new();
        assert_eq!(caps.take_due(due, &mut out).all, 1);
        assert_eq!(out, [frame("closed1")], "the closed candle alone");
        assert_eq!(caps.next_due(), Some(due + 500 * MS));
        out.clear();
        assert_eq!(caps.take_due(due + 500 * MS, &mut out).all, 1);
        assert_eq!(out, [frame("open2b")]);
        assert_eq!(caps.next_due(), None);
        // A closed candle with nothing held and the interval passed: at once.
        assert_eq!(
            caps.offer(&c, &frame("closed2"), FINAL, due + 1000 * MS),
            Offer::SendNow
        );
    }

    #[test]
    fn closed_candles_are_never_replaced_and_go_out_together_under_a_slow_cap() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let c = candles("A");
        // One update per 10 s on 1 s candles.
        caps.set(c, 10_000 * MS);
        assert_eq!(caps.offer(&c, &frame("o1"), LATEST, t0), Offer::SendNow);
        for (i, closed) in ["c1", "c2", "c3"].iter().enumerate() {
            let at = t0 + (1000 * (i as u32 + 1)) * MS;
            caps.offer(&c, &Bytes::from_static(closed.as_bytes()), FINAL, at);
            caps.offer(&c, &frame("open"), LATEST, at + MS);
        }
        assert_eq!(caps.held_bytes(), 2 * 3 + 4);
        let mut out = Vec::new();
        assert_eq!(caps.take_due(t0 + 10_000 * MS, &mut out).all, 3);
        assert_eq!(out, [frame("c1"), frame("c2"), frame("c3")]);
        // Removing the cap hands back the rest in order.
        caps.offer(&c, &frame("c4"), FINAL, t0 + 11_000 * MS);
        assert_eq!(
            caps.remove(&c),
            Released {
                finals: vec![frame("c4")],
                latest: None
            }
        );
        assert_eq!(caps.next_due(), None);
    }

    #[test]
    fn changing_or_removing_a_cap_moves_or_releases_the_held_tick() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = ticks("A");
        caps.set(a, 1000 * MS);
        caps.offer(&a, &frame("a1"), LATEST, t0);
        caps.offer(&a, &frame("a2"), LATEST, t0 + MS);
        assert_eq!(caps.next_due(), Some(t0 + 1000 * MS));
        caps.set(a, 100 * MS);
        assert_eq!(caps.next_due(), Some(t0 + 100 * MS));
        assert_eq!(
            caps.remove(&a),
            Released {
                finals: Vec::new(),
                latest: Some(frame("a2"))
            }
        );
        assert_eq!(caps.next_due(), None);
        assert!(caps.is_empty());
        assert_eq!(caps.offer(&a, &frame("a3"), LATEST, t0), Offer::Uncapped);
    }

    #[test]
    fn a_first_tick_sent_elsewhere_starts_the_interval() {
        let t0 = Instant::now();
        let mut caps = RateCaps::default();
        let a = ticks("A");
        caps.set(a, 100 * MS);
        caps.sent(&a, t0);
        assert!(matches!(
            caps.offer(&a, &frame("a1"), LATEST, t0 + MS),
            Offer::Held { .. }
        ));
    }
}
