//! [`KafkaError`]: what can go wrong talking to Kafka.

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration or could not create the client.
    #[error("cannot create the Kafka {what} for brokers {brokers}: {source}")]
    Client {
        /// Which client: producer or consumer.
        what: &'static str,
        /// The brokers it was for.
        brokers: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the topic failed.
    #[error("cannot subscribe to topic {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Reading from the topic failed.
    #[error("cannot read from Kafka: {0}")]
    Consume(#[source] rdkafka::error::KafkaError),
    /// Committing offsets failed (the batch will be delivered again).
    #[error("cannot commit offsets: {0}")]
    Commit(#[source] rdkafka::error::KafkaError),
    /// A record could not be decoded as a tick.
    #[error("undecodable record at {topic}/{partition}@{offset}: {reason}")]
    Decode {
        /// The record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why it cannot be decoded.
        reason: String,
    },
}
