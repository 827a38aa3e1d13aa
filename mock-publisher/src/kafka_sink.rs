//! The Kafka sink of `mock-publisher --kafka-brokers`: ticks to the topic
//! through [`KafkaPublisher`] (idempotent, `acks=all`), in feed order.

use anyhow::Context as _;
use marketmux_bus::TickPublisher as _;
use marketmux_core::Tick;
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use tokio::sync::mpsc;

/// Most ticks sent in one publish call: batches queued while one was in
/// flight are merged, so the rate keeps up however long an ack takes.
const MAX_MERGED: usize = 10_000;

/// Publishes every batch from `rx` to `topic` on `brokers`, waiting for each
/// acknowledgement; returns when `rx` closes (after everything is acknowledged).
pub async fn run(
    brokers: &str,
    topic: &str,
    mut rx: mpsc::Receiver<Vec<Tick>>,
) -> anyhow::Result<()> {
    let config = KafkaConfig::new(brokers).with_topic(topic);
    let publisher = KafkaPublisher::new(&config, "mock-publisher")
        .with_context(|| format!("Kafka producer for {brokers}"))?;
    tracing::info!(%brokers, %topic, "Publishing to Kafka");
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_MERGED {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        publisher
            .publish(batch)
            .await
            .with_context(|| format!("Kafka topic {topic} on {brokers}"))?;
    }
    tracing::info!(delivered = publisher.delivered(), "Kafka sink done");
    Ok(())
}
