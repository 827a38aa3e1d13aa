//! [`KafkaPublisher`]: ticks into the topic, acknowledged only once Kafka has them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use marketmux_bus::{BusError, Readiness, TickPublisher};
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_metrics::errors::{self, Component};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientContext;
use tokio::sync::Mutex;

use crate::codec::{self, TickMeta};
use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// How long to wait before retrying when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Tracks whether the brokers answer, from librdkafka's error callback and
/// from delivery reports.
#[derive(Default, Clone)]
pub struct ProducerHealth {
    /// Set when all brokers are down or a delivery failed; cleared by a delivery.
    down: Arc<AtomicBool>,
}

impl ClientContext for ProducerHealth {
    fn error(&self, error: RdError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.down.store(true, Ordering::Relaxed);
        }
        errors::error(Component::Kafka, "producer_client");
        tracing::warn!(%error, reason, "Kafka producer error");
    }
}

/// Produces ticks to Kafka: key = symbol, value = protobuf, idempotent, `acks=all`.
///
/// [`TickPublisher::publish`] enqueues every tick in order, then waits for
/// every delivery report: `Ok` means the brokers acknowledged all of them.
/// Each tick carries this producer's id and a per-symbol sequence number so
/// consumers can spot gaps and duplicates.
pub struct KafkaPublisher {
    producer: FutureProducer<ProducerHealth>,
    health: ProducerHealth,
    topic: String,
    source: String,
    producer_id: u64,
    delivery_timeout: Duration,
    /// Next sequence number per symbol. Held while enqueuing so that the
    /// sequence order is the partition order.
    sequences: Mutex<HashMap<Symbol, u64>>,
    delivered: AtomicU64,
}

impl KafkaPublisher {
    /// Creates the producer. `source` names the origin in every record
    /// ("gateway", "finnhub", "mock-publisher"). Connects lazily.
    pub fn new(config: &KafkaConfig, source: impl Into<String>) -> Result<Self, KafkaError> {
        let health = ProducerHealth::default();
        errors::register(Component::Kafka, &["producer_client", "produce"]);
        let producer = config
            .producer_config()
            .create_with_context(health.clone())
            .map_err(|source| KafkaError::Client {
                what: "producer",
                brokers: config.brokers.clone(),
                source,
            })?;
        Ok(Self {
            producer,
            health,
            topic: config.topic.clone(),
            source: source.into(),
            producer_id: rand::random(),
            delivery_timeout: config.delivery_timeout,
            sequences: Mutex::new(HashMap::new()),
            delivered: AtomicU64::new(0),
        })
    }

    /// The random id this producer writes into every record.
    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// Ticks acknowledged by the brokers so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for everything enqueued to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .flush(timeout)
            .map_err(|source| KafkaError::Client {
                what: "producer flush",
                brokers: String::new(),
                source,
            })
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> BusError {
        errors::error(Component::Kafka, "produce");
        self.health.down.store(true, Ordering::Relaxed);
        BusError::Unavailable(format!("Kafka topic {}: {what}", self.topic))
    }
}

#[async_trait]
impl TickPublisher for KafkaPublisher {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        if ticks.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.delivery_timeout;
        let mut pending = Vec::with_capacity(ticks.len());
        {
            let mut sequences = self.sequences.lock().await;
            let accepted = Timestamp::now();
            for tick in &ticks {
                let seq = sequences.entry(tick.symbol).or_insert(0);
                *seq += 1;
                let meta = TickMeta {
                    source: self.source.clone(),
                    producer_id: self.producer_id,
                    sequence: *seq,
                    accepted,
                };
                let payload = codec::encode(tick, &meta);
                let key = tick.symbol.as_str();
                loop {
                    let record = FutureRecord::to(&self.topic).key(key).payload(&payload);
                    match self.producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(delivery);
                            break;
                        }
                        Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                            if tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                        }
                        Err((e, _)) => return Err(self.unavailable(format!("cannot enqueue: {e}"))),
                    }
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.unavailable(format!("not acknowledged: {e}"))),
                Err(_) => {
                    return Err(self.unavailable("producer shut down before the acknowledgement"))
                }
            }
        }
        self.health.down.store(false, Ordering::Relaxed);
        self.delivered
            .fetch_add(ticks.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Readiness for KafkaPublisher {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self) -> Result<(), String> {
        if self.health.down.load(Ordering::Relaxed) {
            Err(format!(
                "Kafka brokers unreachable or not acknowledging (topic {})",
                self.topic
            ))
        } else {
            Ok(())
        }
    }
}
