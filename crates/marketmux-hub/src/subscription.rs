//! [`Subscription`]: one client following one symbol, as the hub sees it:
//! where the client's stream stands (the last `seq` sent to it, in which
//! epoch) and, while the subscription opens, the live ticks held back until
//! its first frames (the reply, then a replay or the latest tick) are queued.
//!
//! Bound and policy:
//! - Within one subscription a client never gets a `seq` at or below one it
//!   already got in the same epoch: such a tick is dropped for that client.
//! - A tick of another epoch means the symbol's sequence started again: the
//!   client is told (a `subscribed` notice, `recovered:false`) and follows
//!   the new sequence from that tick.
//! - At most [`MAX_HELD`] live ticks are held while a subscription opens.
//!   Past that only the newest is kept and the subscription starts from it,
//!   not from the requested position (`recovered:false`).

use std::sync::Arc;

use bytes::Bytes;
use marketmux_core::{Epoch, Position, Tick};

use crate::queue::ClientQueue;

/// Most live ticks held per opening subscription (see the module doc).
pub const MAX_HELD: usize = 4096;

/// What to do with a live tick for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Newer than anything sent: send it.
    Send,
    /// At or below the last `seq` sent in this epoch: drop it.
    Stale,
    /// The first tick of a new epoch: announce the new stream, then send it.
    NewEpoch,
}

/// Live ticks that arrived while the subscription was opening.
#[derive(Default)]
pub(crate) struct Held {
    /// In arrival order, with the frame every subscriber shares.
    pub(crate) ticks: Vec<(Tick, Bytes)>,
    /// More than [`MAX_HELD`] arrived: `ticks` holds only the newest.
    pub(crate) overflowed: bool,
}

impl Held {
    fn push(&mut self, tick: Tick, frame: Bytes) {
        if self.ticks.len() >= MAX_HELD {
            self.ticks.clear();
            self.overflowed = true;
        }
        if self.overflowed {
            self.ticks.clear();
        }
        self.ticks.push((tick, frame));
    }
}

/// One client's subscription to one symbol.
pub(crate) struct Subscription {
    pub(crate) queue: Arc<ClientQueue>,
    /// The epoch of the client's stream (`Epoch::default()`: none named yet).
    epoch: Epoch,
    /// The last `seq` sent to the client in `epoch` (0: none).
    last: u64,
    /// Set while the subscription opens: live ticks wait here.
    held: Option<Box<Held>>,
    /// The subscription has a rate cap: its ticks go through the queue's cap
    /// slot ([`ClientQueue::push_capped_deferred`]).
    pub(crate) capped: bool,
    /// Largest frame the client takes compressed (0: it takes none), read
    /// from its queue when the subscription is made.
    pub(crate) deflate_max: usize,
}

impl Subscription {
    /// A subscription that receives live ticks at once.
    pub(crate) fn live(queue: Arc<ClientQueue>) -> Self {
        Self {
            deflate_max: queue.deflate_max(),
            queue,
            epoch: Epoch::default(),
            last: 0,
            held: None,
            capped: false,
        }
    }

    /// A subscription whose live ticks are held until it starts.
    pub(crate) fn holding(queue: Arc<ClientQueue>) -> Self {
        Self {
            held: Some(Box::default()),
            ..Self::live(queue)
        }
    }

    /// Holds `tick` if the subscription is still opening; returns false if
    /// it is live (the caller sends it).
    #[inline]
    pub(crate) fn hold(&mut self, tick: &Tick, frame: &Bytes) -> bool {
        match &mut self.held {
            Some(held) => {
                held.push(*tick, frame.clone());
                true
            }
            None => false,
        }
    }

    /// Whether more ticks arrived while opening than could be held.
    pub(crate) fn overflowed(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.overflowed)
    }

    /// Ends the hold, returning what was held (None if it was live already).
    pub(crate) fn take_held(&mut self) -> Option<Box<Held>> {
        self.held.take()
    }

    /// Where the client's stream stands, once an epoch is known.
    pub(crate) fn position(&self) -> Option<Position> {
        self.epoch.is_set().then_some(Position {
            epoch: self.epoch,
            seq: self.last,
        })
    }

    /// Sets where the client's stream stands (before its first frames).
    pub(crate) fn set_position(&mut self, position: Position) {
        self.epoch = position.epoch;
        self.last = position.seq;
    }

    /// Decides what a tick about to be sent means for this client, and
    /// records it as sent when it is to be sent. Ticks without a `seq` (a
    /// bus that numbers nothing) are always sent.
    #[inline]
    pub(crate) fn admit(&mut self, tick: &Tick) -> Admit {
        if tick.seq == 0 {
            return Admit::Send;
        }
        if tick.epoch == self.epoch {
            if tick.seq <= self.last {
                return Admit::Stale;
            }
            self.last = tick.seq;
            return Admit::Send;
        }
        self.epoch = tick.epoch;
        self.last = tick.seq;
        if tick.epoch.is_set() {
            Admit::NewEpoch
        } else {
            Admit::Send
        }
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::{Symbol, Timestamp};

    use super::*;
    use crate::QueueLimits;

    fn tick(epoch: u64, seq: u64) -> Tick {
        Tick::new(Symbol::new("AAPL").unwrap(), 1.0, Timestamp::now(), None)
            .unwrap()
            .sequenced(Position {
                epoch: Epoch::from_raw(epoch),
                seq,
            })
    }

    fn sub() -> Subscription {
        Subscription::live(ClientQueue::new(1, QueueLimits::default(), Arc::default()))
    }

    #[test]
    fn never_the_same_seq_twice_in_one_epoch() {
        let mut s = sub();
        s.set_position(Position {
            epoch: Epoch::from_raw(7),
            seq: 10,
        });
        assert_eq!(s.admit(&tick(7, 10)), Admit::Stale);
        assert_eq!(s.admit(&tick(7, 3)), Admit::Stale);
        assert_eq!(s.admit(&tick(7, 11)), Admit::Send);
        assert_eq!(s.admit(&tick(7, 11)), Admit::Stale);
        assert_eq!(s.admit(&tick(7, 15)), Admit::Send, "a jump is sent");
        assert_eq!(
            s.position(),
            Some(Position {
                epoch: Epoch::from_raw(7),
                seq: 15
            })
        );
    }

    #[test]
    fn a_new_epoch_is_announced_and_followed() {
        let mut s = sub();
        s.set_position(Position {
            epoch: Epoch::from_raw(7),
            seq: 10,
        });
        assert_eq!(s.admit(&tick(9, 1)), Admit::NewEpoch);
        assert_eq!(s.admit(&tick(9, 1)), Admit::Stale);
        assert_eq!(s.admit(&tick(9, 2)), Admit::Send);
        // A subscription that never learnt its epoch is told the first one.
        let mut s = sub();
        assert_eq!(s.admit(&tick(9, 4)), Admit::NewEpoch);
        assert_eq!(s.admit(&tick(9, 5)), Admit::Send);
    }

    #[test]
    fn the_hold_keeps_only_the_newest_past_its_bound() {
        let mut s = Subscription::holding(sub().queue);
        for seq in 1..=MAX_HELD as u64 {
            assert!(s.hold(&tick(7, seq), &Bytes::new()));
        }
        assert!(!s.overflowed());
        assert!(s.hold(&tick(7, MAX_HELD as u64 + 1), &Bytes::new()));
        assert!(s.hold(&tick(7, MAX_HELD as u64 + 2), &Bytes::new()));
        assert!(s.overflowed());
        let held = s.take_held().unwrap();
        assert_eq!(held.ticks.len(), 1);
        assert_eq!(held.ticks[0].0.seq, MAX_HELD as u64 + 2);
        assert!(!s.hold(&tick(7, 1), &Bytes::new()), "live now");
    }
}
