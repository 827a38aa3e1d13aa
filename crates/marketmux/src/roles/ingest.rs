//! `marketmux ingest`: Finnhub's trade WebSocket → Kafka `market_ticks`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_bus::Readiness;
use marketmux_core::Symbol;
use marketmux_ingest::{FinnhubClient, FinnhubConfig, FinnhubStats, DEFAULT_FINNHUB_URL};
use marketmux_kafka::{KafkaConfig, KafkaPublisher};
use marketmux_metrics::exporter::RoleSeries;
use marketmux_metrics::{component_up, counters};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::IngestArgs;
use crate::conventional::FINNHUB_TOKEN;
use crate::node::Node;

/// How long the producer may take to deliver what is queued at shutdown.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// Starts the Finnhub client producing to Kafka.
pub async fn start(args: IngestArgs) -> anyhow::Result<Node> {
    run(args).instrument(super::role_span("ingest")).await
}

async fn run(args: IngestArgs) -> anyhow::Result<Node> {
    let brokers = args.kafka.brokers("ingest")?;
    let token = FINNHUB_TOKEN.resolve(args.finnhub_token.as_deref());
    if token.is_none() && args.finnhub_url == DEFAULT_FINNHUB_URL {
        let e = FINNHUB_TOKEN.missing("ingest");
        anyhow::bail!("{e}, to reach {DEFAULT_FINNHUB_URL}");
    }
    let token = token.unwrap_or_default();
    let symbols = args
        .symbols
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| Symbol::new(s).with_context(|| format!("--symbols: {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if symbols.is_empty() {
        anyhow::bail!("--symbols is empty: name at least one symbol, e.g. AAPL,MSFT");
    }
    let config = KafkaConfig::new(brokers.clone()).with_topic(args.kafka.topic.clone());
    let publisher =
        Arc::new(KafkaPublisher::new(&config, "finnhub").context("ingest: Kafka producer")?);
    let client = FinnhubClient::new(FinnhubConfig {
        max_clock_skew: args.skew.clock_skew(),
        ..FinnhubConfig::new(args.finnhub_url.clone(), token, symbols.clone())
    });
    tracing::info!(url = %args.finnhub_url, %brokers, topic = %args.kafka.topic, symbols = symbols.len(), "Ingest started");
    let shutdown = CancellationToken::new();
    let series = ingest_series(client.stats(), publisher.clone());
    let metrics_addr = super::serve_metrics(&args.metrics, series, shutdown.clone()).await?;
    let stop = shutdown.clone();
    let task = tokio::spawn(
        async move {
            client.run(publisher.clone(), stop).await;
            tokio::task::spawn_blocking(move || publisher.flush(FLUSH_AT_EXIT))
                .await
                .context("ingest: flushing the Kafka producer")?
                .context("ingest: flushing the Kafka producer")?;
            Ok(())
        }
        .in_current_span(),
    );
    Ok(Node {
        addr: None,
        metrics_addr,
        shutdown,
        task,
    })
}

/// The Finnhub client's and the producer's counters on `/metrics`.
pub(super) fn ingest_series(feed: Arc<FinnhubStats>, producer: Arc<KafkaPublisher>) -> RoleSeries {
    Arc::new(move |out: &mut String| {
        let series = [
            (
                "marketmux_ingest_connections_total",
                "Finnhub connections established (reconnections included).",
                feed.connections.load(Relaxed),
            ),
            (
                "marketmux_ingest_trades_total",
                "Finnhub trades converted to ticks.",
                feed.trades.load(Relaxed),
            ),
            (
                "marketmux_ingest_invalid_trades_total",
                "Finnhub trades refused (bad symbol, price or volume).",
                feed.invalid_trades.load(Relaxed),
            ),
            (
                "marketmux_ingest_future_trades_total",
                "Finnhub trades dropped for a timestamp too far in the future.",
                feed.future_trades.load(Relaxed),
            ),
            (
                "marketmux_ingest_published_total",
                "Ticks Kafka acknowledged.",
                feed.published.load(Relaxed),
            ),
            (
                "marketmux_ingest_publish_failures_total",
                "Produce calls that failed and were retried.",
                feed.publish_failures.load(Relaxed),
            ),
        ];
        counters(out, &series);
        component_up(out, [(producer.name(), producer.check().is_ok())]);
    })
}
