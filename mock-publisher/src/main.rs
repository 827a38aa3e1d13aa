//! `mock-publisher`: random-walk ticks to a gateway's `POST /api/v1/ticks`,
//! or straight to Redis with `--redis-url` ([`redis_sink`]).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod kafka_sink;
mod redis_sink;

use anyhow::Context as _;
use clap::Parser;
use mock_publisher::{Feed, FeedConfig};

/// Publishes synthetic ticks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Gateway base URL to POST ticks to.
    #[arg(
        long,
        env = "MARKETMUX_HTTP_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    http_url: String,
    /// Publish straight to Redis instead of HTTP (latest price + pub/sub).
    #[arg(long, env = "MARKETMUX_REDIS_URL")]
    redis_url: Option<String>,
    /// Put in front of every Redis key and channel (as the gateways' --redis-prefix).
    #[arg(long, env = "MARKETMUX_REDIS_PREFIX", default_value = "")]
    redis_prefix: String,
    /// Sharded pub/sub (SPUBLISH), as the gateways' --redis-sharded.
    #[arg(long, env = "MARKETMUX_REDIS_SHARDED")]
    redis_sharded: bool,
    /// With --redis-url: ticks of each symbol kept in Redis history, as the
    /// bridge's --history-size; 0 = off.
    #[arg(long, env = "MARKETMUX_HISTORY_SIZE", default_value_t = 1_000)]
    history_size: usize,
    /// With --redis-url: no kept tick older than this, as the bridge's; 0 = off.
    #[arg(long, env = "MARKETMUX_HISTORY_TTL_SECS", default_value_t = 600)]
    history_ttl_secs: u64,
    /// Publish to Kafka instead of HTTP: idempotent, acks=all, key = symbol.
    #[arg(long, env = "MARKETMUX_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Kafka topic of the ticks.
    #[arg(long, env = "MARKETMUX_TOPIC", default_value = "market_ticks")]
    topic: String,
    /// Number of symbols.
    #[arg(long, default_value_t = 40)]
    symbols: usize,
    /// Ticks per second per symbol.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let url = format!("{}/api/v1/ticks", args.http_url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let feed = Feed::new(FeedConfig {
        rate_per_symbol: args.rate,
        symbols: args.symbols,
    });
    // The sink falling behind drops generated ticks: said once when it starts
    // and once when it ends, with the count, never silently.
    let mut dropped = 0usize;
    tokio::spawn(feed.run(move |batch| match tx.try_send(batch) {
        Ok(()) => {
            if dropped > 0 {
                tracing::info!(dropped, "Sink caught up; generated ticks flow again");
                dropped = 0;
            }
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Full(batch)) => {
            if dropped == 0 {
                tracing::warn!(
                    "Sink is behind the feed rate; dropping generated ticks until it catches up"
                );
            }
            dropped += batch.len();
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
    }));
    if let Some(brokers) = args.kafka_brokers.filter(|b| !b.trim().is_empty()) {
        return kafka_sink::run(&brokers, &args.topic, rx).await;
    }
    if let Some(url) = args.redis_url {
        let config = marketmux_bus::RedisConfig {
            url,
            prefix: args.redis_prefix,
            sharded: args.redis_sharded,
            history: marketmux_bus::HistoryConfig {
                size: args.history_size,
                ttl: std::time::Duration::from_secs(args.history_ttl_secs),
            },
            ..Default::default()
        };
        return redis_sink::run(config, rx).await;
    }
    while let Some(batch) = rx.recv().await {
        let body: Vec<serde_json::Value> = batch
            .iter()
            .map(|t| serde_json::json!({"symbol": t.symbol, "price": t.price, "timestamp": t.timestamp.to_rfc3339(), "volume": t.volume}))
            .collect();
        let resp = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        if !resp.status().is_success() {
            anyhow::bail!(
                "{url} answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}
