//! Fired alerts across nodes: the alerts role publishes each fired alert on
//! one Redis channel (`{prefix}alerts`); every gateway listens and pushes it
//! to that user's sockets on the node.
//!
//! The message is `{"user_id":N,"alert":{...}}`. Delivery is at most once per
//! listening node (Redis pub/sub): a gateway that is disconnected from Redis
//! when an alert fires does not get it, but the alert stays fired in the store
//! and is listed by `GET /alerts`.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::redis::{unavailable, RedisConfig};
use crate::BusError;
use marketmux_metrics::errors::{self, Component};
use tracing::Instrument as _;

/// Receives `(user_id, alert JSON object)` for each fired alert. Must not block.
pub type AlertHandler = Arc<dyn Fn(i64, &str) + Send + Sync>;

/// The channel fired alerts travel on.
pub fn alert_channel(config: &RedisConfig) -> String {
    format!("{}alerts", config.prefix)
}

/// Publishes fired alerts for the gateways.
pub struct AlertRelay {
    client: Client,
    channel: String,
}

impl AlertRelay {
    /// Connects a command client.
    pub async fn connect(config: &RedisConfig) -> Result<Self, BusError> {
        Ok(Self {
            client: config.connect_client().await?,
            channel: alert_channel(config),
        })
    }

    /// Publishes one fired alert; returns how many gateways listened.
    pub async fn publish(&self, user_id: i64, alert_json: &str) -> Result<u64, BusError> {
        let payload = format!(r#"{{"user_id":{user_id},"alert":{alert_json}}}"#);
        self.client
            .publish::<u64, _, _>(&self.channel, payload)
            .await
            .map_err(|e| {
                errors::error(Component::Redis, "publish");
                unavailable(e)
            })
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    user_id: i64,
    #[serde(borrow)]
    alert: &'a RawValue,
}

/// A running fired-alert listener; [`AlertListener::stop`] ends it.
pub struct AlertListener {
    client: SubscriberClient,
    task: JoinHandle<()>,
}

impl AlertListener {
    /// Closes the subscriber connection and waits for the listener task.
    pub async fn stop(self) {
        let _ = self.client.quit().await;
        self.task.abort();
        let _ = self.task.await;
    }
}

/// How long to wait before trying a failed resubscribe again.
const RESUBSCRIBE_RETRY: Duration = Duration::from_secs(1);

/// Listens for fired alerts and hands each to `handler`; resubscribes after a
/// reconnect, and again every [`RESUBSCRIBE_RETRY`] until that succeeds.
pub async fn listen_alerts(
    config: &RedisConfig,
    handler: AlertHandler,
) -> Result<AlertListener, BusError> {
    let client = config.connect_subscriber().await?;
    let channel = alert_channel(config);
    client
        .subscribe(channel.clone())
        .await
        .map_err(unavailable)?;
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    let resubscriber = client.clone();
    let task = tokio::spawn(async move {
        let mut retry_at: Option<Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = messages.recv() => match m {
                    Ok(msg) => {
                        let parsed = msg.value.as_bytes().and_then(|b| serde_json::from_slice::<Envelope<'_>>(b).ok());
                        match parsed {
                            Some(e) => handler(e.user_id, e.alert.get()),
                            None => {
                                errors::error(Component::Redis, "decode");
                                tracing::warn!(channel = %msg.channel, "Dropping an undecodable alert message")
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        errors::errors(Component::Redis, "lagged", n);
                        tracing::warn!(lost = n, "Alert listener fell behind")
                    }
                    Err(RecvError::Closed) => return,
                },
                r = reconnects.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => retry_at = Some(Instant::now()),
                    Err(RecvError::Closed) => return,
                },
                () = retry => {
                    retry_at = match resubscriber.subscribe(channel.clone()).await {
                        Ok(()) => None,
                        Err(e) => {
                            errors::error(Component::Redis, "subscribe");
                            tracing::warn!(error = %e, "Resubscribing to fired alerts failed; retrying");
                            Some(Instant::now() + RESUBSCRIBE_RETRY)
                        }
                    };
                }
            }
        }
    }
    .in_current_span());
    Ok(AlertListener { client, task })
}
