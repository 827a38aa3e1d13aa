//! [`TickConsumer`]: a consumer-group reader of ticks whose offsets are
//! committed only after the caller has handled a batch (at-least-once).
//!
//! Shared by the bridge (Kafka → Redis) and the alerts evaluator: each creates
//! a `TickConsumer` with its own group, loops on [`TickConsumer::next_batch`],
//! handles the ticks, then calls [`TickConsumer::commit`]. A batch that is never
//! committed (the process died, the handler failed) is read again by whoever
//! owns the partition next.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use marketmux_metrics::errors::{self, Component};

use crate::codec::{self, ConsumedTick};
use crate::config::{KafkaConfig, StartFrom};
use crate::error::KafkaError;

/// Most records handed out in one batch. Bounds the memory a batch holds and
/// how much is read again if the batch is not committed.
pub const DEFAULT_MAX_BATCH: usize = 2_000;

/// The consumer operations whose failures `/metrics` counts.
const CONSUMER_OPS: &[&str] = &[
    "consumer_client",
    "rebalance",
    "commit",
    "consume",
    "decode",
];

/// Counters of one consumer, cheap to read from another task.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Records decoded into ticks.
    pub ticks: AtomicU64,
    /// Records skipped because they were not valid ticks (still committed).
    pub undecodable: AtomicU64,
    /// Offset commits the broker refused (their batches will be read again).
    pub failed_commits: AtomicU64,
    /// Partition assignments received (each rebalance that gave us partitions).
    pub assignments: AtomicU64,
}

/// Logs rebalances and commit failures, and counts them.
#[derive(Clone)]
pub struct GroupContext {
    group: String,
    stats: Arc<ConsumerStats>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        errors::error(Component::Kafka, "consumer_client");
        tracing::warn!(group = %self.group, %error, reason, "Kafka consumer error");
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.stats.assignments.fetch_add(1, Ordering::Relaxed);
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, ?partitions, "Partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, ?partitions, "Partitions revoked");
            }
            Rebalance::Error(e) => {
                errors::error(Component::Kafka, "rebalance");
                tracing::warn!(group = %self.group, error = %e, "Rebalance failed")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            errors::error(Component::Kafka, "commit");
            tracing::warn!(group = %self.group, error = %e, "Offset commit refused; the batch will be read again");
        }
    }
}

/// Ticks read together, and the offsets that mark them handled.
#[derive(Debug, Default)]
pub struct TickBatch {
    /// Decoded ticks in partition order (records of one partition keep their order).
    pub ticks: Vec<ConsumedTick>,
    /// Records that were not valid ticks (logged and skipped).
    pub undecodable: usize,
    /// Per partition, the offset after the last record of this batch.
    next_offsets: BTreeMap<i32, i64>,
}

impl TickBatch {
    /// Records in the batch, decodable or not.
    pub fn records(&self) -> usize {
        self.ticks.len() + self.undecodable
    }

    /// The partitions this batch read from, with the next offset of each.
    pub fn next_offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.next_offsets.iter().map(|(p, o)| (*p, *o))
    }

    /// Folds a later batch's offsets into this one (per partition, the
    /// furthest) and drops the ticks of both: what a consumer that holds its
    /// commits back keeps until it may commit everything it has read.
    pub fn absorb(&mut self, later: TickBatch) {
        for (partition, next) in later.next_offsets {
            let o = self.next_offsets.entry(partition).or_insert(next);
            *o = (*o).max(next);
        }
        self.ticks = Vec::new();
        self.undecodable = 0;
    }
}

/// A member of a consumer group on the tick topic.
pub struct TickConsumer {
    consumer: StreamConsumer<GroupContext>,
    topic: String,
    group: String,
    max_batch: usize,
    stats: Arc<ConsumerStats>,
}

impl TickConsumer {
    /// Joins `group` and subscribes to `config.topic`.
    pub fn new(
        config: &KafkaConfig,
        group: &str,
        start_from: StartFrom,
    ) -> Result<Self, KafkaError> {
        let stats = Arc::new(ConsumerStats::default());
        errors::register(Component::Kafka, CONSUMER_OPS);
        let context = GroupContext {
            group: group.to_owned(),
            stats: stats.clone(),
        };
        let consumer: StreamConsumer<GroupContext> = config
            .consumer_config(group, start_from)
            .create_with_context(context)
            .map_err(|source| KafkaError::Client {
                what: "consumer",
                brokers: config.brokers.clone(),
                source,
            })?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| KafkaError::Subscribe {
                topic: config.topic.clone(),
                source,
            })?;
        Ok(Self {
            consumer,
            topic: config.topic.clone(),
            group: group.to_owned(),
            max_batch: DEFAULT_MAX_BATCH,
            stats,
        })
    }

    /// Hands out at most `max` records per batch (at least 1).
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// The group this consumer belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Counters of this consumer.
    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    /// The partitions currently assigned to this member.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// Waits for at least one record, then takes every record already
    /// fetched, up to the batch limit, without waiting further: under load
    /// batches grow, when idle a single tick goes through at once.
    ///
    /// Cancellation safe: a record is only taken when the future returns it.
    pub async fn next_batch(&self) -> Result<TickBatch, KafkaError> {
        let mut stream = self.consumer.stream();
        let mut batch = TickBatch::default();
        let first = stream.next().await;
        let mut next = first;
        loop {
            match next {
                Some(Ok(message)) => self.add(&mut batch, &message),
                Some(Err(e)) if batch.records() == 0 => {
                    errors::error(Component::Kafka, "consume");
                    return Err(KafkaError::Consume(e));
                }
                // Hand over what we have; the error comes back on the next call if it persists.
                Some(Err(_)) | None => break,
            }
            if batch.records() >= self.max_batch {
                break;
            }
            match stream.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(batch)
    }

    fn add(&self, batch: &mut TickBatch, message: &rdkafka::message::BorrowedMessage<'_>) {
        let partition = message.partition();
        let offset = message.offset();
        batch.next_offsets.insert(partition, offset + 1);
        match codec::decode(message.payload().unwrap_or_default()) {
            Ok((tick, meta)) => {
                self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                batch.ticks.push(ConsumedTick {
                    tick,
                    meta,
                    partition,
                    offset,
                });
            }
            Err(reason) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                errors::error(Component::Kafka, "decode");
                batch.undecodable += 1;
                let e = KafkaError::Decode {
                    topic: self.topic.clone(),
                    partition,
                    offset,
                    reason,
                };
                tracing::warn!(error = %e, "Skipping a record that is not a tick");
            }
        }
    }

    fn offsets(&self, batch: &TickBatch) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::with_capacity(batch.next_offsets.len());
        for (partition, offset) in batch.next_offsets() {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(KafkaError::Commit)?;
        }
        Ok(tpl)
    }

    /// Marks `batch` handled: commits its offsets without waiting for the
    /// broker's answer (a refused commit is logged and counted; the records
    /// are then read again, which the handlers tolerate).
    pub fn commit(&self, batch: &TickBatch) -> Result<(), KafkaError> {
        if batch.next_offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.offsets(batch)?;
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| {
            errors::error(Component::Kafka, "commit");
            KafkaError::Commit(e)
        })
    }

    /// Commits `batch` and waits for the broker's answer. Blocks the thread
    /// for a round trip: for shutdown and tests, not the hot loop.
    pub fn commit_and_wait(&self, batch: &TickBatch) -> Result<(), KafkaError> {
        if batch.next_offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.offsets(batch)?;
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(KafkaError::Commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(i32, i64)]) -> TickBatch {
        TickBatch {
            next_offsets: pairs.iter().copied().collect(),
            undecodable: 1,
            ..TickBatch::default()
        }
    }

    #[test]
    fn absorbing_keeps_the_furthest_offset_of_every_partition() {
        let mut held = offsets(&[(0, 10), (1, 7)]);
        held.absorb(offsets(&[(1, 9), (2, 3)]));
        held.absorb(offsets(&[(0, 4)]));
        let got: Vec<(i32, i64)> = held.next_offsets().collect();
        assert_eq!(got, vec![(0, 10), (1, 9), (2, 3)]);
        assert_eq!(held.records(), 0, "only offsets are kept");
    }
}
