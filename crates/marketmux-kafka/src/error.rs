//! [`KafkaError`]: what can go wrong talking to Kafka.

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration or could not create the client.
    #[error("cannot create the Kafka {what} for brokers {brokers}: {source}")]
    Client {
        what: &'static str,
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the topic failed.
    #[error("cannot subscribe to topic {topic}: {source}")]
    Subscribe {
        topic: String,
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
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}
