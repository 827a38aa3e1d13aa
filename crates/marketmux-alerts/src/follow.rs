//! Keeps an [`Evaluator`]'s index in step with the store's change feed
//! ([`AlertStore::watch`]), so an alert created or deleted through any
//! instance is evaluated (or dropped) by every instance at once, not at the
//! next periodic reload.
//!
//! - [`StoreEvent::Changed`]: the alert is read again and indexed while active.
//! - [`StoreEvent::Removed`]: the alert leaves the index (and any pending fire).
//! - [`StoreEvent::Resync`]: every active alert is read again; a failed
//!   reload is retried with backoff until it succeeds.
//!
//! Each step is idempotent, so an instance's own writes, which it applied
//! directly, do no harm when their announcement comes back.

use std::sync::Arc;
use std::time::Duration;

use marketmux_core::{Backoff, Jitter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::evaluator::Evaluator;
use crate::store::{AlertStore, StoreError, StoreEvent};
use tracing::Instrument as _;

/// Failed reads wait from this long before a full reload, doubling...
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// ...up to this long.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows `store`'s change feed into `evaluator` until `shutdown`; `None`
/// when the store has no feed (the embedded store).
pub fn spawn(
    store: Arc<dyn AlertStore>,
    evaluator: Arc<Evaluator>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    let feed = store.watch(shutdown.clone())?;
    Some(tokio::spawn(
        follow(store, evaluator, feed, shutdown).in_current_span(),
    ))
}

/// Applies every event of `feed` to `evaluator`.
pub async fn follow(
    store: Arc<dyn AlertStore>,
    evaluator: Arc<Evaluator>,
    mut feed: mpsc::Receiver<StoreEvent>,
    shutdown: CancellationToken,
) {
    let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX, Jitter::None);
    // Whether the index may lag the store (a read failed): reload until it works.
    let mut stale = false;
    loop {
        let event = if stale {
            tokio::select! {
                _ = tokio::time::sleep(retry.next_delay()) => StoreEvent::Resync,
                _ = shutdown.cancelled() => return,
            }
        } else {
            tokio::select! {
                e = feed.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        };
        match apply(store.as_ref(), &evaluator, event).await {
            Ok(()) => {
                if stale {
                    tracing::info!("Alert index reloaded after a failed change read");
                }
                stale = false;
                retry.reset();
            }
            Err(e) => {
                if !stale {
                    tracing::warn!(error = %e, ?event, "Cannot apply an alert change; reloading the index until the store answers");
                }
                stale = true;
            }
        }
    }
}

async fn apply(
    store: &dyn AlertStore,
    evaluator: &Evaluator,
    event: StoreEvent,
) -> Result<(), StoreError> {
    match event {
        StoreEvent::Changed(id) => match store.get(id).await? {
            Some(alert) if alert.active => evaluator.track(alert),
            _ => evaluator.forget(id),
        },
        StoreEvent::Removed(id) => evaluator.forget(id),
        StoreEvent::Resync => {
            let n = evaluator.reload().await?;
            tracing::debug!(active = n, "Alert index reloaded from the change feed");
        }
    }
    Ok(())
}
