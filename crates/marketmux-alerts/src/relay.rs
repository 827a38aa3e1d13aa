//! Fired alerts to the gateways' sockets: [`spawn`] returns the evaluator's
//! [`AlertSink`], which queues each fired alert without blocking, and starts
//! the task that publishes them in order ([`AlertRelay`] on Redis).
//!
//! Bound and policy: at most [`PUSH_QUEUE`] fired alerts wait. Past it (Redis
//! down for long) new pushes are dropped, logged once when dropping starts
//! and once when the queue has room again; those alerts stay fired in the
//! store and listed by `GET /alerts`. A failed publish is retried with capped
//! exponential backoff until it succeeds or the role stops, while ticks keep
//! being evaluated. Redis going down and coming back are each logged once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::redis::alerts::AlertRelay;
use marketmux_bus::BusError;
use marketmux_core::{Backoff, Jitter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::evaluator::AlertSink;
use crate::model::FiredAlert;
use tracing::Instrument as _;

/// Fired alerts waiting to be published. Past this (Redis down for long) new
/// pushes are dropped; those alerts stay fired in the store and listed by
/// `GET /alerts`.
pub const PUSH_QUEUE: usize = 10_000;

/// Publish retries wait from this long, doubling each time...
const PUSH_RETRY_FIRST: Duration = Duration::from_millis(100);

/// ...up to this long.
const PUSH_RETRY_MAX: Duration = Duration::from_secs(5);

/// The sink that queues fired alerts for `pusher`, and the task publishing
/// them until `shutdown`.
pub fn spawn<P: PushAlert>(pusher: P, shutdown: CancellationToken) -> AlertSink {
    let (tx, rx) = mpsc::channel::<Push>(PUSH_QUEUE);
    tokio::spawn(
        relay_fired(
            pusher,
            rx,
            Backoff::new(PUSH_RETRY_FIRST, PUSH_RETRY_MAX, Jitter::None),
            shutdown,
        )
        .in_current_span(),
    );
    queue_sink(tx)
}

/// One fired alert to publish: (user id, alert JSON object).
type Push = (i64, String);

/// Publishes one fired alert for the gateways: [`AlertRelay`] on Redis, or a test double.
pub trait PushAlert: Send + Sync + 'static {
    /// Publishes `alert_json` for `user_id`'s sockets.
    fn push(
        &self,
        user_id: i64,
        alert_json: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
}

impl PushAlert for AlertRelay {
    async fn push(&self, user_id: i64, alert_json: &str) -> Result<(), BusError> {
        self.publish(user_id, alert_json).await.map(|_listeners| ())
    }
}

/// A sink that queues each fired alert for [`relay_fired`] without blocking.
/// When the queue is full the push is dropped; that is logged once when it
/// starts and once when the queue has room again (with the count dropped).
fn queue_sink(tx: mpsc::Sender<Push>) -> AlertSink {
    // Pushes dropped since the queue was last found with room (0: not full).
    let dropped = AtomicU64::new(0);
    Arc::new(move |fired: &FiredAlert| {
        match tx.try_send((fired.alert.user_id, fired.to_json())) {
            Ok(()) => {
                if dropped.load(Relaxed) > 0 {
                    let dropped = dropped.swap(0, Relaxed);
                    if dropped > 0 {
                        tracing::info!(dropped, "Fired-alert push queue has room again");
                    }
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if dropped.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(
                        capacity = PUSH_QUEUE,
                        alert_id = fired.alert.id,
                        "Fired-alert push queue is full: dropping pushes until it drains \
                         (the alerts stay fired in the store)"
                    );
                }
            }
            // The relay task ended: the role is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    })
}

/// Publishes queued fired alerts in order. A failed publish is retried after
/// `backoff` (doubling, capped) until it succeeds or `shutdown`; Redis going
/// down and coming back are each logged once, not per retry.
async fn relay_fired<P: PushAlert>(
    pusher: P,
    mut rx: mpsc::Receiver<Push>,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut down = false;
    let unpushed = loop {
        let (user, alert) = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break 0,
            },
            _ = shutdown.cancelled() => break rx.len(),
        };
        backoff.reset();
        let delivered = loop {
            let res = tokio::select! {
                r = pusher.push(user, &alert) => r,
                _ = shutdown.cancelled() => break false,
            };
            match res {
                Ok(()) => break true,
                Err(e) => {
                    if !down {
                        down = true;
                        tracing::warn!(
                            error = %e,
                            user,
                            "Publishing fired alerts to the gateways failed; retrying with backoff"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.cancelled() => break false,
                    }
                }
            }
        };
        if !delivered {
            // Shut down mid-retry: this alert and the queued ones stay unpushed.
            break 1 + rx.len();
        }
        if down {
            down = false;
            tracing::info!(queued = rx.len(), "Publishing fired alerts works again");
        }
    };
    if unpushed > 0 {
        tracing::warn!(
            unpushed,
            "Stopping with fired alerts not pushed to the gateways (they stay fired in the store)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use marketmux_core::Symbol;
    use parking_lot::Mutex;

    use super::*;
    use crate::model::{Alert, Condition};

    /// Fails its first `fail_first` calls, then records what it published.
    #[derive(Clone, Default)]
    struct FlakyPusher {
        fail_first: usize,
        calls: Arc<AtomicUsize>,
        published: Arc<Mutex<Vec<Push>>>,
    }

    impl PushAlert for FlakyPusher {
        async fn push(&self, user_id: i64, alert_json: &str) -> Result<(), BusError> {
            if self.calls.fetch_add(1, Relaxed) < self.fail_first {
                return Err(BusError::Unavailable("redis down (test)".into()));
            }
            self.published.lock().push((user_id, alert_json.to_owned()));
            Ok(())
        }
    }

    fn fast() -> Backoff {
        Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(4),
            Jitter::None,
        )
    }

    fn fired(id: i64) -> FiredAlert {
        FiredAlert {
            alert: Alert {
                id,
                user_id: 7,
                symbol: Symbol::new("AAPL").unwrap(),
                condition: Condition::Above,
                target_price: 1.0,
                active: false,
                created_at: Default::default(),
                triggered_at: None,
                triggered_price: Some(1.5),
            },
        }
    }

    #[tokio::test]
    async fn failed_publishes_are_retried_until_delivered_in_order() {
        let pusher = FlakyPusher {
            fail_first: 5,
            ..FlakyPusher::default()
        };
        let (tx, rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay_fired(pusher.clone(), rx, fast(), shutdown.clone()));
        let sink = queue_sink(tx);
        for id in 1..=3 {
            sink(&fired(id));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while pusher.published.lock().len() < 3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("all pushes delivered once the publisher recovers");
        let got: Vec<String> = pusher
            .published
            .lock()
            .iter()
            .map(|(_, a)| a.clone())
            .collect();
        let want: Vec<String> = (1..=3).map(|id| fired(id).to_json()).collect();
        assert_eq!(got, want);
        assert_eq!(pusher.calls.load(Relaxed), 5 + 3);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_retrying_and_a_full_queue_never_blocks_the_sink() {
        let pusher = FlakyPusher {
            fail_first: usize::MAX,
            ..FlakyPusher::default()
        };
        let (tx, rx) = mpsc::channel(2);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay_fired(pusher.clone(), rx, fast(), shutdown.clone()));
        let sink = queue_sink(tx);
        // One in flight, two queued, the rest dropped without blocking.
        for id in 1..=50 {
            sink(&fired(id));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(pusher.calls.load(Relaxed) > 1, "the head alert is retried");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay stops at shutdown")
            .unwrap();
        assert!(pusher.published.lock().is_empty());
        sink(&fired(51)); // closed queue: ignored
    }
}
