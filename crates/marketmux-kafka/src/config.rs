//! [`KafkaConfig`]: where the brokers are, which topic, and the librdkafka
//! settings every MarketMux client shares.

use std::time::Duration;

use rdkafka::ClientConfig;

/// The topic ticks travel on unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "market_ticks";

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest retained record: nothing already in Kafka is skipped.
    #[default]
    Earliest,
    /// Only records produced after the group joined.
    Latest,
}

/// Brokers, topic and extra librdkafka settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic of the ticks.
    pub topic: String,
    /// How long a produced record may wait for its acknowledgement before the
    /// publish fails (librdkafka `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`).
    pub linger: Duration,
    /// Further librdkafka properties (security settings, test tuning), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Defaults for `brokers`: topic `market_ticks`, 10 s delivery timeout, 1 ms linger.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            delivery_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(1),
            extra: Vec::new(),
        }
    }

    /// Uses `topic` instead of the default.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Adds a librdkafka property, e.g. `("security.protocol", "SASL_SSL")`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "marketmux")
            .set("socket.keepalive.enable", "true")
            // A broker that comes back is found within 2 s (librdkafka's default is 10 s).
            .set("reconnect.backoff.max.ms", "2000");
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Producer settings: idempotent, `acks=all`, bounded delivery time.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("compression.type", "lz4");
        self.finish(c)
    }

    /// Consumer settings for group `group`: no auto-commit (the caller commits
    /// handled batches), start at `start_from` when the group has no offset.
    pub fn consumer_config(&self, group: &str, start_from: StartFrom) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("enable.partition.eof", "false")
            // Hand records over as soon as they arrive: the bridge is on the latency path.
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        self.finish(c)
    }
}
