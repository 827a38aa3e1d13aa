//! `--redis-url`: ticks straight into Redis, as the bridge does: each tick
//! gets its symbol's next seq, becomes the latest price (if newer), is kept
//! in history and published on its symbol's channel; one pipeline per batch.
//! Keeps going through a Redis restart.

use marketmux_bus::redis::{RedisConfig, RedisPublisher};
use marketmux_bus::TickPublisher as _;
use marketmux_core::Tick;
use tokio::sync::mpsc::Receiver;

/// Publishes every batch from `batches` until the feed stops.
pub async fn run(config: RedisConfig, mut batches: Receiver<Vec<Tick>>) -> anyhow::Result<()> {
    let publisher = RedisPublisher::connect(&config).await?;
    tracing::info!(url = %config.redacted_url(), prefix = %config.prefix, sharded = config.sharded, "Publishing ticks to Redis");
    let mut failing = false;
    while let Some(batch) = batches.recv().await {
        match publisher.publish(batch).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("Redis accepts ticks again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "Redis refused ticks; dropping them until it is back");
            }
            Err(_) => {}
        }
    }
    Ok(())
}
