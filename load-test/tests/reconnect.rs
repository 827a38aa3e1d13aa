//! `--reconnect`: clients closed by a draining node (1012) come back, with
//! jittered backoff, to the node that replaces it on the same address; and
//! across two gateway nodes on one Redis, clients resume every stream from
//! their positions.

#[path = "../../crates/marketmux/tests/dev_common/mod.rs"]
mod dev_common;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use dev_common::start_dev;
use load_test::Cli;
use marketmux::cli::{Cli as MarketmuxCli, Role};
use marketmux_test_support::{exposition, wait_for, wait_for_value, OwnRedis, TempDir};

/// One series of a node's `/metrics` (-1 while it does not answer).
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await
    };
    match text.await {
        Ok(text) => exposition::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .get(series)
            .copied()
            .unwrap_or(0.0),
        Err(_) => -1.0,
    }
}

/// A dev node on `listen` whose drain takes half a second.
async fn dev_node(listen: &str, data: &TempDir) -> marketmux::node::Node {
    start_dev(data.path(), &["--listen", listen, "--drain-secs", "0.5"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_back_after_a_drain() {
    let data = TempDir::new("load-test-reconnect");
    let first = dev_node("127.0.0.1:0", &data).await;
    let addr = first.http_addr();
    let url = format!("ws://{addr}/ws");
    let cfg = Cli::try_parse_from([
        "load-test",
        "-c",
        "20",
        "--symbols",
        "2",
        "--duration",
        "6s",
        "--url",
        &url,
        "--reconnect",
        "--quiet",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let run = tokio::spawn(load_test::run(cfg));

    wait_for_value(
        "20 sockets open on the first node",
        20.0,
        Duration::from_secs(30),
        || metric(addr, "marketmux_connections_open"),
    )
    .await;
    first.stop().await.unwrap(); // every socket gets 1012
    let second = dev_node(&addr.to_string(), &data).await;
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .unwrap()
        .unwrap();
    println!("{report}");
    assert_eq!(
        report.connections.opened, 40,
        "20 sockets, each opened twice"
    );
    assert_eq!(report.connections.failed, 0);
    assert_eq!(report.closed_by_server, 20, "the drain closed every socket");
    assert_eq!(report.reconnects, 20, "and every client came back");
    second.stop().await.unwrap();
}

async fn gateway_node(redis_url: &str) -> marketmux::node::Node {
    let cli = MarketmuxCli::parse_from([
        "marketmux",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        redis_url,
        "--drain-secs",
        "0.3",
    ]);
    let Some(Role::Gateway(args)) = cli.role else {
        panic!("gateway flags did not parse")
    };
    marketmux::roles::gateway::start(args).await.unwrap()
}

/// Clients split over two gateway nodes on one Redis reconnect every second
/// to the other node; one node goes away mid-run. Every tick posted to the
/// first node reaches every subscriber exactly once: what a client missed
/// while reconnecting is replayed from its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_resumes_across_two_gateway_nodes() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let a = gateway_node(&redis.url()).await;
    let b = gateway_node(&redis.url()).await;
    let urls = format!("ws://{}/ws,ws://{}/ws", a.http_addr(), b.http_addr());
    let cfg = Cli::try_parse_from([
        "load-test",
        "-c",
        "40",
        "--symbols",
        "4",
        "--subs-per-client",
        "2",
        "--publish-rate",
        "400",
        "--duration",
        "5s",
        "--url",
        &urls,
        "--reconnect-every",
        "1s",
        "--quiet",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let run = tokio::spawn(load_test::run(cfg));
    // Mid-run: once B's first clients have left for A (--reconnect-every)
    // and A's have come over in their place.
    let b_addr = b.http_addr();
    wait_for(
        "40 sockets opened on B",
        Duration::from_secs(30),
        || async move {
            (metric(b_addr, "marketmux_connections_opened_total").await >= 40.0).then_some(())
        },
    )
    .await;
    b.stop().await.unwrap(); // its clients get 1012 and move to the first node

    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .unwrap()
        .unwrap();
    println!("{report}");
    let d = &report.deliveries;
    let r = report
        .recovery
        .as_ref()
        .expect("reconnect mode reports recovery");
    assert_eq!(
        r.unnumbered, 0,
        "every subscribed reply names each stream's epoch"
    );
    assert_eq!(report.connections.failed, 0);
    assert_eq!(d.expected, 2000 * 20, "4 symbols, 20 readers each");
    assert_eq!(d.received, d.expected, "{d:?}");
    assert_eq!((d.missing, d.duplicated, d.conflated), (0, 0, 0));
    assert!(
        r.forced_reconnects >= 40 && report.closed_by_server > 0,
        "{r:?}"
    );
    assert!(r.resumed > 0 && r.recovered == r.resumed, "{r:?}");
    assert_eq!((r.refused, r.new_epochs, r.seam_gaps), (0, 0, 0));
    assert!(
        d.recovered > 0,
        "ticks published during reconnects were replayed"
    );
    a.stop().await.unwrap();
}
