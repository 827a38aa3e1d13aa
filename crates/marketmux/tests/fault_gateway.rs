//! Fault: one of two gateway nodes dies (SIGKILL) with 2,000 clients on them.
//!
//! Two gateway processes on a Redis of the test's own; the load-test's
//! clients in reconnect mode, spread over both, ticks posted to the first.
//! A few seconds in, the second node is killed: its clients see their
//! sockets break, come back to the first node with jittered backoff,
//! resubscribe from their positions (`since`), and end with every tick
//! exactly once.

mod fault_common;
mod kafka_common;
mod scrape;

use std::time::Duration;

use clap::Parser as _;
use fault_common::roles;
use marketmux_test_support::{eventually, OwnRedis, TempDir};

/// Clients, symbols, and each client's subscriptions.
const CLIENTS: &str = "2000";
const SYMBOLS: &str = "20";
const SUBS: &str = "2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_the_other() {
    let dir = TempDir::new("fault-gateway");
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let limits = ["--max-connections-per-ip", "10000"];
    let a = roles::gateway("gateway A", dir.path(), &redis.url(), "", &limits).await;
    let mut b = roles::gateway("gateway B", dir.path(), &redis.url(), "", &limits).await;
    let urls = format!("ws://{}/ws,ws://{}/ws", a.addr, b.addr);
    let cfg = load_test::Cli::try_parse_from([
        "load-test",
        "-c",
        CLIENTS,
        "--symbols",
        SYMBOLS,
        "--subs-per-client",
        SUBS,
        "--publish-rate",
        "100",
        "--duration",
        "12s",
        "--drain",
        "5s",
        "--url",
        &urls,
        "--reconnect",
        "--quiet",
    ])
    .expect("load-test flags")
    .into_config()
    .expect("a valid load-test scenario");
    let run = tokio::spawn(load_test::run(cfg));
    // Kill B once every client is connected and ticks are flowing.
    eventually(
        "about half the clients connected to gateway B",
        Duration::from_secs(60),
        || b.proc.fds().unwrap_or(0) >= 1_000,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_fds = b.proc.fds().unwrap_or(0);
    b.proc.kill();
    let report = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the run stops by itself")
        .expect("the run does not panic")
        .expect("the run completes");
    let d = &report.deliveries;
    let r = report
        .recovery
        .as_ref()
        .expect("reconnect mode reports recovery");
    println!(
        "fault=gateway clients={CLIENTS} killed_node_fds={b_fds} published={} expected={} delivered={} recovered={} \
         missing={} duplicated={} conflated={} closed_by_server={} reconnects={} resumed={} refused={} new_epochs={} \
         seam_gaps={} failed_connects={}",
        report.publish.ticks,
        d.expected,
        d.received,
        d.recovered,
        d.missing,
        d.duplicated,
        d.conflated,
        report.closed_by_server,
        report.reconnects,
        r.resumed,
        r.refused,
        r.new_epochs,
        r.seam_gaps,
        report.connections.failed,
    );
    assert_eq!(
        report.publish.errors, 0,
        "every publish accepted by the surviving node"
    );
    assert!(
        report.closed_by_server >= 900,
        "the killed node's clients (about half) lost their sockets: {}",
        report.closed_by_server
    );
    assert_eq!(
        report.reconnects, report.closed_by_server,
        "and every one came back"
    );
    assert!(r.resumed > 0 && r.recovered == r.resumed, "{r:?}");
    assert_eq!(
        (r.refused, r.new_epochs, r.seam_gaps, r.unnumbered),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(
        (d.missing, d.duplicated, d.conflated),
        (0, 0, 0),
        "every tick exactly once: {d:?}"
    );
    assert_eq!(d.received, d.expected, "{d:?}");
    assert!(
        d.recovered > 0,
        "ticks published while they were away were replayed"
    );
    drop(a);
}
