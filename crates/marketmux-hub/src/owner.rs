//! [`SocketOwner`]: who may write to a client's socket, and whether the
//! client is closing.
//!
//! A client's socket has two writers: its writer task, which drains the
//! queue and may wait on a socket the client does not read, and the hub's
//! direct path ([`crate::direct`]), which writes a batch from the fan-out
//! thread while the writer task has nothing to do. They must never write at
//! the same time, and nothing may follow the close frame. The queue keeps one
//! `SocketOwner` under its lock and changes it only through the methods here:
//!
//! ```text
//!            take_batch: empty               start_direct
//!   Writer ───────────────────▶ Idle ─────────────────────▶ Direct
//!     ▲  ◀── take_batch: frames ──┘ ◀── settle: nothing left ───┘
//!     └───────────────────── settle: frames left ───────────────┘
//!
//!   Writer, Idle ── close_after_pending ──▶ Closing ── queue drained ──▶ Closed
//!   Writer, Idle, Closing ── close ──▶ Closed
//!   Direct ── either close ──▶ Direct, the close in `ending` until settle
//! ```
//!
//! A close asked for during a direct write waits for that write to settle:
//! the writer task, which sends the close frame, does not touch the socket
//! before the hub's write returned, so the close frame never lands inside
//! or before a frame of it. A hard close still takes effect at once for
//! everyone else (pushes are refused, the queue is freed, waiters see it).

use crate::close::CloseCause;

/// Who may write to a client's socket now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketOwner {
    /// The writer task took the last batch and may still be writing it: the
    /// hub queues and wakes it.
    #[default]
    Writer,
    /// The writer task found the queue empty and waits: the hub may write a
    /// batch to the socket itself.
    Idle,
    /// The hub writes frames it took out of the queue, without holding the
    /// queue's lock. Pushes queue behind them; the writer task waits.
    Direct {
        /// A close asked for meanwhile, applied when the write settles.
        ending: Option<Ending>,
        /// The writer task asked for a batch meanwhile and must be woken.
        writer_waits: bool,
    },
    /// No more pushes: the writer task sends what is queued, then closes.
    Closing(CloseCause),
    /// Closed: the writer task sends the close frame, nobody else writes.
    Closed(CloseCause),
}

/// A close that arrived during a direct write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Close once what is queued has been written.
    AfterPending(CloseCause),
    /// Closed already (the queue was freed); the writer task waits only for
    /// the direct write to return.
    Now(CloseCause),
}

/// What the writer task may do when it asks for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterTurn {
    /// Take what is queued.
    Take,
    /// Take what is queued; once nothing is, close with this cause.
    Drain(CloseCause),
    /// Nothing now: the hub is writing and wakes the writer when it is done.
    Wait,
    /// Send the close frame for this cause and stop.
    Closed(CloseCause),
}

impl SocketOwner {
    /// Whether new frames may be queued.
    pub(crate) fn accepts_pushes(&self) -> bool {
        matches!(
            self,
            Self::Writer | Self::Idle | Self::Direct { ending: None, .. }
        )
    }

    /// Why the client is closed, once it is (a close waiting for a direct
    /// write counts: the queue is already freed).
    pub(crate) fn closed_cause(&self) -> Option<CloseCause> {
        match self {
            Self::Closed(cause)
            | Self::Direct {
                ending: Some(Ending::Now(cause)),
                ..
            } => Some(*cause),
            _ => None,
        }
    }

    /// Whether the hub may write to the socket now (the writer task waits).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, Self::Idle)
    }

    /// The hub starts a direct write. Only from [`SocketOwner::Idle`].
    pub(crate) fn start_direct(&mut self) {
        debug_assert!(self.is_idle(), "a direct write needs an idle writer");
        *self = Self::Direct {
            ending: None,
            writer_waits: false,
        };
    }

    /// The hub's direct write returned; `left` says whether anything is
    /// still queued (unwritten, or queued meanwhile). Returns whether the
    /// writer task must be woken: it owns the socket again, or a close waits
    /// for it.
    pub(crate) fn settle_direct(&mut self, left: bool) -> bool {
        let Self::Direct {
            ending,
            writer_waits,
        } = *self
        else {
            debug_assert!(false, "settling a direct write that was not started");
            return true;
        };
        let (next, wake) = match ending {
            None if left => (Self::Writer, true),
            None => (Self::Idle, writer_waits),
            Some(Ending::AfterPending(cause)) => (Self::Closing(cause), true),
            Some(Ending::Now(cause)) => (Self::Closed(cause), true),
        };
        *self = next;
        wake
    }

    /// The writer task asks for a batch.
    pub(crate) fn writer_turn(&mut self) -> WriterTurn {
        match self {
            Self::Writer | Self::Idle => WriterTurn::Take,
            Self::Closing(cause) => WriterTurn::Drain(*cause),
            Self::Direct { writer_waits, .. } => {
                *writer_waits = true;
                WriterTurn::Wait
            }
            Self::Closed(cause) => WriterTurn::Closed(*cause),
        }
    }

    /// The writer task took a batch (`empty`: there was nothing to take, it
    /// waits). A closing client stays closing.
    pub(crate) fn writer_took(&mut self, empty: bool) {
        if matches!(self, Self::Writer | Self::Idle) {
            *self = if empty { Self::Idle } else { Self::Writer };
        }
    }

    /// Closes once what is queued is written; returns false when the client
    /// was already closing or closed (the first cause wins).
    pub(crate) fn close_after_pending(&mut self, cause: CloseCause) -> bool {
        match self {
            Self::Writer | Self::Idle => *self = Self::Closing(cause),
            Self::Direct { ending, .. } if ending.is_none() => {
                *ending = Some(Ending::AfterPending(cause))
            }
            _ => return false,
        }
        true
    }

    /// Closes now; returns the cause it closed with (the first cause given,
    /// including one given to `close_after_pending`), or None when it was
    /// already closed.
    pub(crate) fn close_now(&mut self, cause: CloseCause) -> Option<CloseCause> {
        match self {
            Self::Writer | Self::Idle => {
                *self = Self::Closed(cause);
                Some(cause)
            }
            Self::Closing(first) => {
                let first = *first;
                *self = Self::Closed(first);
                Some(first)
            }
            Self::Direct { ending, .. } => match *ending {
                None => {
                    *ending = Some(Ending::Now(cause));
                    Some(cause)
                }
                Some(Ending::AfterPending(first)) => {
                    *ending = Some(Ending::Now(first));
                    Some(first)
                }
                Some(Ending::Now(_)) => None,
            },
            Self::Closed(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTART: CloseCause = CloseCause::Restart;
    const NORMAL: CloseCause = CloseCause::Normal;

    fn direct() -> SocketOwner {
        let mut owner = SocketOwner::Idle;
        owner.start_direct();
        owner
    }

    #[test]
    fn the_writer_hands_the_socket_to_the_hub_only_when_idle() {
        let mut owner = SocketOwner::default();
        assert!(!owner.is_idle(), "a new writer has not looked yet");
        assert_eq!(owner.writer_turn(), WriterTurn::Take);
        owner.writer_took(false);
        assert_eq!(owner, SocketOwner::Writer);
        owner.writer_took(true);
        assert!(owner.is_idle());
        owner.start_direct();
        assert!(owner.accepts_pushes(), "pushes queue behind a direct write");
        assert!(!owner.is_idle(), "one direct write at a time");
    }

    #[test]
    fn a_writer_asking_during_a_direct_write_waits_and_is_woken() {
        let mut owner = direct();
        assert_eq!(owner.writer_turn(), WriterTurn::Wait);
        assert!(owner.settle_direct(false), "the writer asked: woken");
        assert!(owner.is_idle());

        let mut owner = direct();
        assert!(!owner.settle_direct(false), "nobody asked, nothing left");
        assert!(owner.is_idle());

        let mut owner = direct();
        assert!(owner.settle_direct(true), "what is left is the writer's");
        assert_eq!(owner, SocketOwner::Writer);
    }

    #[test]
    fn a_close_during_a_direct_write_waits_for_it_to_settle() {
        let mut owner = direct();
        assert!(owner.close_after_pending(RESTART));
        assert!(!owner.accepts_pushes());
        assert_eq!(owner.closed_cause(), None, "still draining");
        assert_eq!(owner.writer_turn(), WriterTurn::Wait);
        assert!(owner.settle_direct(true));
        assert_eq!(owner.writer_turn(), WriterTurn::Drain(RESTART));

        let mut owner = direct();
        assert_eq!(owner.close_now(NORMAL), Some(NORMAL));
        assert_eq!(owner.closed_cause(), Some(NORMAL), "closed for everyone");
        assert_eq!(owner.writer_turn(), WriterTurn::Wait, "no close frame yet");
        assert!(owner.settle_direct(false));
        assert_eq!(owner.writer_turn(), WriterTurn::Closed(NORMAL));
    }

    #[test]
    fn the_first_cause_wins() {
        let mut owner = SocketOwner::Writer;
        assert!(owner.close_after_pending(RESTART));
        assert!(!owner.close_after_pending(NORMAL));
        assert_eq!(owner.close_now(NORMAL), Some(RESTART));
        assert_eq!(owner.close_now(NORMAL), None);
        assert_eq!(owner, SocketOwner::Closed(RESTART));

        let mut owner = direct();
        owner.close_after_pending(RESTART);
        assert_eq!(owner.close_now(NORMAL), Some(RESTART));
        assert_eq!(owner.close_now(NORMAL), None);
        owner.settle_direct(true);
        assert_eq!(owner, SocketOwner::Closed(RESTART));
    }

    #[test]
    fn a_closing_writer_stays_closing_while_it_drains() {
        let mut owner = SocketOwner::Idle;
        owner.close_after_pending(RESTART);
        owner.writer_took(false);
        owner.writer_took(true);
        assert_eq!(owner, SocketOwner::Closing(RESTART));
        assert!(!owner.is_idle(), "no direct write while closing");
    }
}
