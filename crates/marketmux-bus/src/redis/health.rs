//! [`RedisHealth`]: whether the node's Redis connections serve now (backs
//! `/ready`), and one log line per change of that state.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use std::sync::Arc;
use tokio::sync::watch;

use crate::redis::subscriber::RedisSubscriber;
use crate::Readiness;

/// How often [`log_changes`] looks at the connections.
const POLL: Duration = Duration::from_millis(250);

/// Both connections up, and every wanted channel subscribed.
pub struct RedisHealth {
    client: Client,
    subscriber_client: SubscriberClient,
    subscriber: Option<RedisSubscriber>,
}

impl RedisHealth {
    /// Health of a command connection, a subscriber connection, and (if
    /// given) whether the subscriber has resubscribed after a reconnect.
    pub fn new(
        client: Client,
        subscriber_client: SubscriberClient,
        subscriber: Option<RedisSubscriber>,
    ) -> Self {
        Self {
            client,
            subscriber_client,
            subscriber,
        }
    }
}

impl Readiness for RedisHealth {
    fn check(&self) -> Result<(), String> {
        if !self.client.is_connected() {
            return Err("redis: command connection down, reconnecting".into());
        }
        if !self.subscriber_client.is_connected() {
            return Err("redis: subscriber connection down, reconnecting".into());
        }
        if self.subscriber.as_ref().is_some_and(|s| !s.is_synced()) {
            return Err("redis: resubscribing channels".into());
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// Logs once when Redis goes away and once when the node serves again.
pub async fn log_changes(health: Arc<RedisHealth>, url: String, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(POLL);
    let mut was_ok = true;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        match health.check() {
            Ok(()) if !was_ok => {
                was_ok = true;
                tracing::info!(%url, "Redis is back: connections up and channels resubscribed");
            }
            Err(why) if was_ok => {
                was_ok = false;
                tracing::warn!(%url, %why, "Redis unavailable: /ready answers 503 until it is back");
            }
            _ => {}
        }
    }
}
