//! `marketmux dev`: gateway, in-process bus and store, and the synthetic feed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marketmux_alerts::{open_store, AlertEngine, AlertSink, AlertStore, FiredAlert, StoreHealth};
use marketmux_bus::InProcessBus;
use marketmux_core::Tick;
use marketmux_gateway::candles::CandleHub;
use marketmux_gateway::GatewayState;
use mock_publisher::{Feed, FeedConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cli::DevArgs;
use crate::conventional::DATABASE_URL;
use crate::node::Node;

/// Starts the all-in-one node; it runs until its [`Node::shutdown`] is cancelled.
pub async fn start(args: DevArgs) -> anyhow::Result<Node> {
    run(args).instrument(super::role_span("dev")).await
}

async fn run(args: DevArgs) -> anyhow::Result<Node> {
    let mut config = args.limits.gateway_config()?;
    // `identify` stands in for authentication, so only while it is off.
    config.allow_identify = config.auth.jwt.is_none();
    if args.limits.allowed_hosts.is_none() {
        // A page elsewhere that rebinds its name to 127.0.0.1 names its own host.
        config.allowed_hosts = Some(Vec::new());
    }
    marketmux_gateway::server::raise_fd_limit();
    let bus = InProcessBus::with_streams(args.history.config(), args.history.candle_config());
    let saved_streams = restore_streams(&bus, &args)?;
    let hub = GatewayState::new_hub();
    let candles = CandleHub::new(args.history.candle_config().grace_ms);
    let (h, c) = (hub.clone(), candles.clone());
    // Whole batches: each client's writer wakes once per batch, not per tick.
    bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
        h.publish_batch(ticks);
        c.on_ticks(ticks);
    }));
    let shutdown = CancellationToken::new();
    let alert_store = open_alert_store(&args).await?;
    let alert_health = StoreHealth::watch(alert_store.clone(), STORE_PING, shutdown.clone());
    let state = GatewayState::with_candles(
        config,
        hub,
        candles,
        bus.clone(),
        bus.clone(),
        vec![bus.clone(), alert_health],
    );
    let alerts = start_alerts(
        alert_store,
        state.clone(),
        args.max_alerts_per_user,
        shutdown.clone(),
    )
    .await?;
    bus.add_batch_handler(alerts.tick_handler());

    if args.feed_rate > 0.0 {
        let feed = Feed::new(FeedConfig {
            rate_per_symbol: args.feed_rate,
            symbols: args.feed_symbols,
        });
        let bus = bus.clone();
        let stop = shutdown.clone();
        // Not in the role's span: the feed fans its ticks out to the sockets
        // on this task, a span entered per batch would be work per tick.
        tokio::spawn(feed.run(move |batch| {
            bus.publish_now(&batch);
            !stop.is_cancelled()
        }));
    }

    let listener = marketmux_gateway::server::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        url = %format_args!("http://{addr}/"),
        feed_rate = args.feed_rate,
        symbols = args.feed_symbols,
        "MarketMux dev node ready"
    );
    let alert_routes = marketmux_gateway::auth::protect_user_routes(&state, alerts.routes());
    let prices = bus.clone();
    let admin = super::gateway::admin_listener(&args.limits, &state, &shutdown)?;
    let routes = match admin {
        Some(_) => marketmux_gateway::server::public_router(state.clone()),
        None => marketmux_gateway::router(state.clone()),
    };
    let router = marketmux_gateway::web::SymbolDirectory::new(move || prices.prices().symbols())
        .serve_on(routes.merge(alert_routes));
    let serving = marketmux_gateway::serve(listener, state, router, shutdown.clone());
    let task = tokio::spawn(async move {
        let served = serving.await;
        // Stopped: nothing publishes any more.
        match bus.save_streams(&saved_streams) {
            Ok(n) => {
                tracing::info!(streams = n, path = %saved_streams.display(), "Symbol streams saved")
            }
            Err(e) => {
                tracing::warn!(error = %e, "Symbol streams not saved; they start new epochs next time")
            }
        }
        served
    }.in_current_span());
    Ok(Node {
        addr: Some(addr),
        metrics_addr: admin,
        shutdown,
        task,
    })
}

/// Where the dev node keeps its symbols' streams across a clean restart.
const STREAMS_FILE: &str = "streams.json";

/// Puts back the streams saved by the last clean stop under `--data-dir`;
/// returns the file to save them to at the next.
fn restore_streams(bus: &InProcessBus, args: &DevArgs) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let path = args.data_dir.join(STREAMS_FILE);
    match bus.restore_streams(&path) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(streams = n, path = %path.display(), "Symbol streams restored: same epochs, sequences go on")
        }
        Err(e) => {
            tracing::warn!(error = %e, "Saved symbol streams unreadable; every symbol starts a new epoch")
        }
    }
    Ok(path)
}

/// How often `/ready` learns whether the alert store answers.
const STORE_PING: Duration = Duration::from_secs(2);

/// The dev node's alert store: the embedded one under `--data-dir`, or
/// PostgreSQL with `--database-url`/DATABASE_URL.
async fn open_alert_store(args: &DevArgs) -> anyhow::Result<Arc<dyn AlertStore>> {
    let url = DATABASE_URL.resolve(args.database_url.as_deref());
    open_store(url.as_deref(), &args.data_dir)
        .await
        .with_context(|| match &url {
            Some(_) => "alerts: opening PostgreSQL (--database-url)".to_string(),
            None => format!(
                "alerts: opening the embedded store in {}",
                args.data_dir.display()
            ),
        })
}

/// Price alerts of the dev node. Ticks reach the evaluator through its
/// inbox (never blocking the publisher; see `TickInbox` for the bound), and
/// fired alerts go to the user's sockets on this node. Each user may have
/// `max_per_user` active alerts.
async fn start_alerts(
    store: Arc<dyn AlertStore>,
    state: Arc<GatewayState>,
    max_per_user: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<AlertEngine> {
    let sink: AlertSink = Arc::new(move |fired: &FiredAlert| {
        let sockets = state.push_alert(fired.alert.user_id, &fired.to_json());
        tracing::debug!(alert_id = fired.alert.id, sockets, "Alert pushed");
    });
    AlertEngine::start(store, sink, None, max_per_user, shutdown)
        .await
        .context("alerts: loading the active alerts")
}
