//! [`Bridge`]: Kafka tick topic → a [`TickPublisher`] (Redis in the `bridge`
//! role), at-least-once.
//!
//! Each batch read from the consumer group goes to the sink in one call;
//! its offsets are committed only after the sink accepted it. If the sink
//! fails, the same batch is retried (with backoff) and nothing later is read
//! meanwhile. If the process dies, the uncommitted batch is read again by the
//! member that gets the partition. Every tick goes to the sink with its
//! origin (the record's producer and producer sequence), so the sink drops
//! what it accepted before (Redis: in the script that assigns `seq`): a
//! record read twice reaches no client twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::{Origin, TickPublisher};
use marketmux_core::{Backoff, ClockSkew, Jitter, Tick};
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerStats, TickConsumer};
use crate::sequence::{SequenceCheck, SequenceTracker};

/// First wait after a failed sink call or read; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The wait between retries of a failed read or sink call: one bridge
/// retrying its own work, so a plain doubling (no jitter).
fn retry_backoff() -> Backoff {
    Backoff::new(FIRST_RETRY, MAX_RETRY, Jitter::None)
}

/// Counters of a running bridge.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Batches forwarded and committed.
    pub batches: AtomicU64,
    /// Ticks the sink accepted (not counting the ones it dropped as duplicates).
    pub ticks: AtomicU64,
    /// Sink calls that failed (then retried).
    pub sink_failures: AtomicU64,
    /// Records this bridge saw again (a redelivery to it), not sent to the sink.
    pub duplicates: AtomicU64,
    /// Records dropped as already accepted: those above, plus the ones the
    /// sink recognised (another bridge forwarded them before a failover).
    pub dropped_duplicates: AtomicU64,
    /// Sequence numbers skipped by producers' records seen here.
    pub missing: AtomicU64,
    /// Ticks dropped for a timestamp too far in the future ([`ClockSkew`]).
    pub future_timestamps: AtomicU64,
}

/// Moves ticks from a [`TickConsumer`] to a [`TickPublisher`].
pub struct Bridge {
    consumer: TickConsumer,
    sink: Arc<dyn TickPublisher>,
    stats: Arc<BridgeStats>,
    skew: ClockSkew,
}

impl Bridge {
    /// A bridge from `consumer` to `sink`.
    pub fn new(consumer: TickConsumer, sink: Arc<dyn TickPublisher>) -> Self {
        Self {
            consumer,
            sink,
            stats: Arc::new(BridgeStats::default()),
            skew: ClockSkew::default(),
        }
    }

    /// Drops ticks dated further ahead than `skew` (default 60 s) instead of
    /// forwarding them.
    pub fn with_clock_skew(mut self, skew: ClockSkew) -> Self {
        self.skew = skew;
        self
    }

    /// Counters, readable while the bridge runs.
    pub fn stats(&self) -> Arc<BridgeStats> {
        self.stats.clone()
    }

    /// The Kafka consumer's counters (records decoded, refused commits, …).
    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.consumer.stats().clone()
    }

    /// Runs until `shutdown` is cancelled; then commits what was handled and
    /// leaves the group so the other members take the partitions at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let Bridge {
            consumer,
            sink,
            stats,
            skew,
        } = self;
        let mut sequences = SequenceTracker::default();
        let mut read_retry = retry_backoff();
        let mut last_handled = None;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = consumer.next_batch() => b,
            };
            let mut batch = match batch {
                Ok(b) => {
                    read_retry.reset();
                    b
                }
                Err(e) => {
                    let wait = read_retry.next_delay();
                    tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "Kafka read failed; retrying");
                    if sleep_or_stop(&shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            };
            let (dups, missing) = (sequences.duplicates, sequences.missing);
            // Records this bridge already forwarded (a broker that kept a
            // retried produce twice, a partition read again here) are not
            // sent again. A replay across a failover (another bridge
            // forwarded it) is recognised by the sink from the origin.
            // Records without producer metadata are Unchecked: no origin.
            let mut ticks = Vec::with_capacity(batch.ticks.len());
            for t in &batch.ticks {
                let origin = match sequences.observe(t.tick.symbol, &t.meta) {
                    SequenceCheck::Duplicate => continue,
                    SequenceCheck::Unchecked => None,
                    SequenceCheck::InOrder | SequenceCheck::Gap(_) => Some(Origin {
                        producer_id: t.meta.producer_id,
                        sequence: t.meta.sequence,
                    }),
                };
                if let Err(e) = skew.check(&t.tick) {
                    // Committed with the batch, never forwarded: a price dated in
                    // the future would stay its symbol's latest until that date.
                    stats.future_timestamps.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(symbol = %t.tick.symbol, error = %e, "Dropping a tick dated in the future");
                    continue;
                }
                ticks.push((t.tick, origin));
            }
            let seen_here = sequences.duplicates - dups;
            stats.duplicates.fetch_add(seen_here, Ordering::Relaxed);
            stats
                .dropped_duplicates
                .fetch_add(seen_here, Ordering::Relaxed);
            stats
                .missing
                .fetch_add(sequences.missing - missing, Ordering::Relaxed);

            if !forward(&*sink, ticks, &stats, &shutdown).await {
                // Stopping with the batch unhandled: not committed, read again later.
                break;
            }
            if let Err(e) = consumer.commit(&batch) {
                tracing::warn!(error = %e, "Commit failed; the batch will be read again");
            }
            stats.batches.fetch_add(1, Ordering::Relaxed);
            batch.ticks.clear();
            last_handled = Some(batch);
        }
        // Leaving the group blocks for a broker round trip or two: off the runtime.
        let group = consumer.group().to_owned();
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(batch) = last_handled {
                if let Err(e) = consumer.commit_and_wait(&batch) {
                    tracing::warn!(error = %e, "Final commit failed; the last batch will be read again");
                }
            }
            drop(consumer);
        })
        .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "Closing the Kafka consumer failed");
        }
        tracing::info!(%group, ticks = stats.ticks.load(Ordering::Relaxed), "Bridge stopped");
    }
}

/// Sends `ticks` until the sink accepts them; false if stopped first. A
/// retry after a failure may find some of them accepted already: the sink
/// drops those by their origin.
async fn forward(
    sink: &dyn TickPublisher,
    ticks: Vec<(Tick, Option<Origin>)>,
    stats: &BridgeStats,
    shutdown: &CancellationToken,
) -> bool {
    if ticks.is_empty() {
        return true;
    }
    let n = ticks.len() as u64;
    let mut retry = retry_backoff();
    loop {
        match sink.publish_from(ticks.clone()).await {
            Ok(dropped) => {
                let dropped = dropped as u64;
                stats.ticks.fetch_add(n - dropped.min(n), Ordering::Relaxed);
                stats
                    .dropped_duplicates
                    .fetch_add(dropped, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                stats.sink_failures.fetch_add(1, Ordering::Relaxed);
                let wait = retry.next_delay();
                tracing::warn!(error = %e, ticks = n, retry_ms = wait.as_millis() as u64, "Sink refused a batch; retrying it");
                if sleep_or_stop(shutdown, wait).await {
                    return false;
                }
            }
        }
    }
}

/// Sleeps `d`; true if `shutdown` fired first.
async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
