//! The PostgreSQL change feed: a `LISTEN` on [`CHANNEL`], where the
//! `alerts_notify` trigger announces every committed insert, update and
//! delete of an alert, turned into [`StoreEvent`]s.
//!
//! Notifications sent while the listening connection is down are lost, so
//! the feed starts with [`StoreEvent::Resync`] and sends another each time
//! it is listening again after a lost connection: the reader then reloads
//! every active alert, and nothing committed in between is missed. A
//! reader that falls [`FEED_QUEUE`] events behind gets a `Resync` instead
//! of the events it missed.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StoreEvent;
use tracing::Instrument as _;

/// The channel the `alerts_notify` trigger (migrations) announces on.
pub const CHANNEL: &str = "marketmux_alerts";

/// Events waiting for the reader; past it they are replaced by one `Resync`.
pub const FEED_QUEUE: usize = 4_096;

/// Reconnects wait from this long, doubling on each failure...
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// ...up to this long.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Parses a notification payload: `changed:<id>` or `removed:<id>`.
pub fn parse_payload(payload: &str) -> Option<StoreEvent> {
    let (kind, id) = payload.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "changed" => Some(StoreEvent::Changed(id)),
        "removed" => Some(StoreEvent::Removed(id)),
        _ => None,
    }
}

/// Starts listening on one connection of `pool` (held for as long as the
/// feed runs) and returns the feed; it ends at `shutdown` or when the
/// receiver is dropped.
pub(super) fn spawn_feed(pool: PgPool, shutdown: CancellationToken) -> mpsc::Receiver<StoreEvent> {
    let (tx, rx) = mpsc::channel(FEED_QUEUE);
    tokio::spawn(run_feed(pool, Outbox { tx, lost: false }, shutdown).in_current_span());
    rx
}

/// The sending side: never waits on the reader.
struct Outbox {
    tx: mpsc::Sender<StoreEvent>,
    /// Events were dropped on a full queue: a `Resync` is owed.
    lost: bool,
}

/// The reader is gone.
struct Closed;

impl Outbox {
    fn send(&mut self, event: StoreEvent) -> Result<(), Closed> {
        if self.lost {
            match self.tx.try_send(StoreEvent::Resync) {
                Ok(()) => self.lost = false,
                Err(mpsc::error::TrySendError::Full(_)) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            }
            if event == StoreEvent::Resync {
                return Ok(());
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    capacity = FEED_QUEUE,
                    "Alert change feed is full; the index will be reloaded"
                );
                self.lost = true;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn run_feed(pool: PgPool, mut out: Outbox, shutdown: CancellationToken) {
    let mut wait = RETRY_FIRST;
    let mut failing = false;
    loop {
        let listener = tokio::select! {
            l = listen(&pool) => l,
            _ = shutdown.cancelled() => return,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, "Cannot listen for alert changes; retrying (the periodic reload still runs)");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
                wait = (wait * 2).min(RETRY_MAX);
                continue;
            }
        };
        if failing {
            failing = false;
            tracing::info!("Listening for alert changes again");
        }
        wait = RETRY_FIRST;
        // Listening from here on: a reload now misses nothing.
        if out.send(StoreEvent::Resync).is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = out.tx.closed() => return,
                _ = shutdown.cancelled() => return,
            };
            let event = match next {
                Ok(Some(n)) => match parse_payload(n.payload()) {
                    Some(event) => event,
                    None => {
                        tracing::debug!(payload = n.payload(), "Unknown alert change notification");
                        continue;
                    }
                },
                // The connection was lost and is back (listening again):
                // whatever was announced meanwhile is gone.
                Ok(None) => {
                    tracing::warn!("Alert change listener reconnected; reloading the index");
                    StoreEvent::Resync
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Alert change listener failed; reconnecting");
                    break;
                }
            };
            if out.send(event).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("changed:42"), Some(StoreEvent::Changed(42)));
        assert_eq!(parse_payload("removed:7"), Some(StoreEvent::Removed(7)));
        for bad in ["", "changed", "changed:x", "moved:1"] {
            assert_eq!(parse_payload(bad), None);
        }
    }

    #[tokio::test]
    async fn a_full_queue_turns_into_one_resync() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut out = Outbox { tx, lost: false };
        for id in 1..=5 {
            assert!(out.send(StoreEvent::Changed(id)).is_ok());
        }
        assert_eq!(rx.recv().await, Some(StoreEvent::Changed(1)));
        assert_eq!(rx.recv().await, Some(StoreEvent::Changed(2)));
        assert!(out.send(StoreEvent::Removed(9)).is_ok());
        assert_eq!(rx.recv().await, Some(StoreEvent::Resync));
        assert_eq!(rx.recv().await, Some(StoreEvent::Removed(9)));
        drop(rx);
        assert!(out.send(StoreEvent::Resync).is_err());
    }
}
