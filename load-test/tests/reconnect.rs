//! `--reconnect`: clients closed by a draining node (1012) come back, with
//! jittered backoff, to the node that replaces it on the same address.

use std::time::Duration;

use clap::Parser as _;
use load_test::Cli;
use marketmux::cli::{Cli as MarketmuxCli, Role};

async fn dev_node(listen: &str, data: &str) -> marketmux::node::Node {
    let cli = MarketmuxCli::parse_from([
        "marketmux",
        "dev",
        "--listen",
        listen,
        "--feed-rate",
        "0",
        "--drain-secs",
        "0.5",
        "--data-dir",
        data,
    ]);
    let Some(Role::Dev(args)) = cli.role else {
        panic!("dev flags did not parse")
    };
    marketmux::roles::dev::start(args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_back_after_a_drain() {
    let data = std::env::temp_dir().join(format!("load-test-reconnect-{}", std::process::id()));
    let data = data.to_string_lossy().into_owned();
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

    tokio::time::sleep(Duration::from_secs(1)).await;
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
    let _ = std::fs::remove_dir_all(&data);
}
