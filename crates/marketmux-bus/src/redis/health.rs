//! [`RedisHealth`]: whether the node's Redis connections serve now (backs
//! `/ready` and refuses ingest while they do not), and one log line per
//! change of that state.
//!
//! A connection serves when fred holds it open and Redis answered its last
//! PING in time: [`probe`] PINGs each connection every `interval` and
//! allows `timeout` for the answer, so a Redis that stops answering (frozen,
//! or a connection silently gone) turns the node unready within
//! `interval + timeout`, even though its sockets stay open. An answer older
//! than twice that (the probe itself stalled) counts as none.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::redis::subscriber::RedisSubscriber;
use crate::Readiness;

/// How often [`log_changes`] looks at the connections.
const POLL: Duration = Duration::from_millis(250);

/// The last PING of one connection: when it was answered, or that it failed.
struct Pong {
    /// Milliseconds from [`RedisHealth::born`] to the last answer;
    /// [`Pong::FAILED`] when the last PING failed or timed out.
    at_ms: AtomicU64,
}

impl Pong {
    const FAILED: u64 = u64::MAX;
}

/// Both connections up and answering, and every wanted channel subscribed.
pub struct RedisHealth {
    client: Client,
    subscriber_client: SubscriberClient,
    subscriber: Option<RedisSubscriber>,
    born: Instant,
    /// A PING answered longer ago than this is too old.
    stale: Duration,
    timeout: Duration,
    command: Pong,
    subscription: Pong,
}

impl RedisHealth {
    /// Health of a command connection, a subscriber connection, and (if
    /// given) whether the subscriber has resubscribed after a reconnect.
    /// [`probe`] PINGs every `interval` and waits `timeout` for the answer.
    pub fn new(
        client: Client,
        subscriber_client: SubscriberClient,
        subscriber: Option<RedisSubscriber>,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        let born = Instant::now();
        // Both connected just now: answered at birth.
        let answered = || Pong {
            at_ms: AtomicU64::new(0),
        };
        Self {
            client,
            subscriber_client,
            subscriber,
            born,
            stale: 2 * (interval + timeout),
            timeout,
            command: answered(),
            subscription: answered(),
        }
    }

    fn record(&self, pong: &Pong, ok: bool) {
        let ms = if ok {
            u64::try_from(self.born.elapsed().as_millis()).unwrap_or(Pong::FAILED - 1)
        } else {
            Pong::FAILED
        };
        pong.at_ms.store(ms, Relaxed);
    }

    fn answering(&self, pong: &Pong, which: &str) -> Result<(), String> {
        self.answering_at(pong, which, self.born.elapsed())
    }

    /// [`RedisHealth::answering`] when `now` has passed since birth.
    fn answering_at(&self, pong: &Pong, which: &str, now: Duration) -> Result<(), String> {
        let at = pong.at_ms.load(Relaxed);
        let since = now.saturating_sub(Duration::from_millis(at));
        if at == Pong::FAILED || since > self.stale {
            return Err(format!(
                "redis: {which} connection does not answer PING within {:?}",
                self.timeout
            ));
        }
        Ok(())
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
        self.answering(&self.command, "command")?;
        self.answering(&self.subscription, "subscriber")?;
        if self.subscriber.as_ref().is_some_and(|s| !s.is_synced()) {
            return Err("redis: resubscribing channels".into());
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// PINGs both connections every `interval` (each waits at most the health's
/// `timeout`) and records the outcomes, until `stop` changes.
pub async fn probe(health: Arc<RedisHealth>, interval: Duration, mut stop: watch::Receiver<bool>) {
    // Sent only on a live connection and never again after a reconnect: a
    // PING answers for the connection it went out on.
    let once = Options {
        fail_fast: true,
        max_attempts: Some(1),
        timeout: Some(health.timeout),
        ..Options::default()
    };
    let command = health.client.with_options(&once);
    let subscription = health.subscriber_client.with_options(&once);
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let deadline = health.timeout;
        let (c, s) = tokio::join!(
            tokio::time::timeout(deadline, command.ping::<Value>(None)),
            tokio::time::timeout(deadline, subscription.ping::<Value>(None)),
        );
        health.record(&health.command, matches!(c, Ok(Ok(_))));
        health.record(&health.subscription, matches!(s, Ok(Ok(_))));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> RedisHealth {
        let client = Builder::default_centralized().build().unwrap();
        let subscriber = Builder::default_centralized()
            .build_subscriber_client()
            .unwrap();
        RedisHealth::new(
            client,
            subscriber,
            None,
            Duration::from_millis(100),
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn a_failed_or_stale_ping_makes_a_connection_unready() {
        let h = health();
        assert!(h.answering(&h.command, "command").is_ok());
        h.record(&h.command, false);
        let err = h.answering(&h.command, "command").unwrap_err();
        assert!(
            err.contains("command connection does not answer PING"),
            "{err}"
        );
        h.record(&h.command, true);
        assert!(h.answering(&h.command, "command").is_ok());
        // No answer for longer than twice interval plus timeout: a stalled probe.
        let later = h.born.elapsed() + Duration::from_millis(401);
        assert!(h.answering_at(&h.command, "command", later).is_err());
        assert!(h
            .answering_at(&h.subscription, "subscriber", later)
            .is_err());
    }

    #[tokio::test]
    async fn connections_that_are_not_connected_are_named() {
        let err = health().check().unwrap_err();
        assert!(err.contains("command connection down"), "{err}");
    }
}
