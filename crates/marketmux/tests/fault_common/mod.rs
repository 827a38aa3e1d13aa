//! The fault suite's harness: real processes (the `marketmux` binary's roles,
//! tansu, PostgreSQL) that a test kills, stops and starts again while ticks
//! flow, and the counting that says whether every tick and every alert got
//! through exactly once.
//!
//! - [`proc`]: child processes with logs, signals and fd counts.
//! - [`broker`]: tansu behind a proxy the test can cut.
//! - [`postgres`]: a PostgreSQL server of the test's own.
//! - [`roles`]: the `marketmux` roles as child processes.
//! - here: the tick sender, the per-socket tally and the fired-alert watch.

#![allow(dead_code)] // each fault test uses its own part

pub mod broker;
pub mod postgres;
pub mod proc;
pub mod roles;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use marketmux_core::Timestamp;
use marketmux_test_support::eventually;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};

use marketmux_alerts::grpc::GrpcAlertClient;
use marketmux_alerts::{AlertService, NewAlert};

use crate::kafka_common::SocketView;

/// What the sender posted: tick `i` has price `i + 1` (unique), so a price
/// names its tick.
#[derive(Debug, Default)]
pub struct Posted {
    /// Ticks sent.
    pub sent: usize,
    /// Prices of the ticks answered 202.
    pub accepted: HashSet<u64>,
    /// Answers by status (0: no answer: connection refused, timeout).
    pub statuses: HashMap<u16, usize>,
}

/// Posts `n` ticks over `symbols` in chunks of `chunk` to `gateways` (round
/// robin), one POST at a time, `pause` between them; ticks of a chunk that
/// was not answered 202 are not accepted (they may still arrive: a broker
/// may have stored some before the producer gave up).
pub async fn post_ticks(
    gateways: Vec<SocketAddr>,
    symbols: Vec<String>,
    n: usize,
    chunk: usize,
    pause: Duration,
    posted: Arc<Mutex<Posted>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let t0 = Timestamp::now().0;
    for (c, start) in (0..n).step_by(chunk).enumerate() {
        let end = (start + chunk).min(n);
        let body: Vec<Json> = (start..end)
            .map(|i| {
                json!({"symbol": symbols[i % symbols.len()], "price": (i + 1) as f64,
                       "timestamp": Timestamp(t0 + i as i64 * 1_000).to_rfc3339()})
            })
            .collect();
        let addr = gateways[c % gateways.len()];
        let status = match http
            .post(format!("http://{addr}/api/v1/ticks"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        {
            let mut p = posted.lock();
            p.sent += end - start;
            *p.statuses.entry(status).or_default() += 1;
            if status == 202 {
                p.accepted.extend((start..end).map(|i| i as u64 + 1));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// One socket's account of the ticks it should have had.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Ticks received.
    pub delivered: usize,
    /// Accepted ticks never received.
    pub missing: usize,
    /// Ticks received more than once.
    pub duplicated: usize,
    /// Received ticks that were not accepted (a refused POST whose ticks
    /// still reached the broker): allowed, at most once each.
    pub unaccepted: usize,
    /// Symbols whose `seq` did not strictly increase.
    pub out_of_order: usize,
}

impl Tally {
    /// Counts `view` against the accepted prices.
    pub fn of(view: &SocketView, accepted: &HashSet<u64>) -> Self {
        Self {
            delivered: view.ticks,
            missing: accepted.difference(&view.prices).count(),
            duplicated: view.ticks - view.prices.len(),
            unaccepted: view.prices.difference(accepted).count(),
            out_of_order: view.out_of_order().len(),
        }
    }

    /// The sum over several sockets.
    pub fn sum(all: &[Tally]) -> Self {
        all.iter().fold(Self::default(), |a, t| Self {
            delivered: a.delivered + t.delivered,
            missing: a.missing + t.missing,
            duplicated: a.duplicated + t.duplicated,
            unaccepted: a.unaccepted + t.unaccepted,
            out_of_order: a.out_of_order + t.out_of_order,
        })
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivered={} missing={} duplicated={} unaccepted_delivered={} out_of_order={}",
            self.delivered, self.missing, self.duplicated, self.unaccepted, self.out_of_order
        )
    }
}

/// Every fired alert published on `{prefix}alerts`, counted per alert id.
pub struct AlertWatch {
    _sub: SubscriberClient,
    fires: Arc<Mutex<HashMap<i64, usize>>>,
}

impl AlertWatch {
    /// Subscribes before anything fires.
    pub async fn start(redis: &str, prefix: &str) -> Self {
        let config = marketmux_bus::RedisConfig {
            url: redis.into(),
            ..Default::default()
        };
        let sub = config.connect_subscriber().await.expect("redis subscriber");
        let fires = Arc::new(Mutex::new(HashMap::new()));
        let f = fires.clone();
        let mut rx = sub.message_rx();
        tokio::spawn(async move {
            while let Ok(m) = rx.recv().await {
                let text: String = m.value.convert().unwrap_or_default();
                let j: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
                if let Some(id) = j["alert"]["id"].as_i64() {
                    *f.lock().entry(id).or_default() += 1;
                }
            }
        });
        sub.subscribe(format!("{prefix}alerts"))
            .await
            .expect("subscribe to the alerts channel");
        Self { _sub: sub, fires }
    }

    /// Pushes seen per alert id.
    pub fn fires(&self) -> HashMap<i64, usize> {
        self.fires.lock().clone()
    }

    /// (alerts pushed at least once, pushes beyond the first).
    pub fn counts(&self) -> (usize, usize) {
        let f = self.fires.lock();
        (f.len(), f.values().map(|n| n.saturating_sub(1)).sum())
    }
}

/// Creates `per_symbol` ABOVE alerts on each symbol (user `k + 1` for symbol
/// `k`) whose targets lie between the prices [`post_ticks`] sends for it, so
/// each is crossed once somewhere in a stream of `n` ticks; returns their ids.
pub async fn crossing_alerts(
    grpc: SocketAddr,
    symbols: &[String],
    n: usize,
    per_symbol: usize,
) -> Vec<i64> {
    let client = GrpcAlertClient::connect_lazy(&format!("http://{grpc}")).expect("gRPC client");
    let mut ids = Vec::new();
    for (k, symbol) in symbols.iter().enumerate() {
        for j in 1..=per_symbol {
            let target = (n * j / (per_symbol + 1)) as f64 + 0.5;
            let new =
                NewAlert::parse(k as i64 + 1, symbol, target, "ABOVE").expect("a valid alert");
            ids.push(
                client
                    .create(new)
                    .await
                    .expect("create an alert over gRPC")
                    .id,
            );
        }
    }
    ids
}

/// Waits until every socket has every accepted tick, then a little longer
/// so that a late duplicate would show; returns each socket's tally.
///
/// # Panics
/// When a socket still lacks an accepted tick after `within`.
pub async fn settle(
    views: &[Arc<Mutex<SocketView>>],
    accepted: &HashSet<u64>,
    within: Duration,
) -> Vec<Tally> {
    eventually("every socket has every accepted tick", within, || {
        views.iter().all(|v| v.lock().prices.is_superset(accepted))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    views
        .iter()
        .map(|v| Tally::of(&v.lock(), accepted))
        .collect()
}
