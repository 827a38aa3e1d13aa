//! Runs a tiny scenario against the dev role started in-process.

#[path = "../../crates/marketmux/tests/dev_common/mod.rs"]
mod dev_common;

use std::time::Duration;

use clap::Parser as _;
use dev_common::start_dev;
use load_test::Cli;
use marketmux_test_support::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_reaches_every_subscriber() {
    let data = TempDir::new("load-test-it");
    let node = start_dev(data.path(), &[]).await;
    let url = format!("ws://{}/ws", node.http_addr());

    let cfg = Cli::try_parse_from([
        "load-test",
        "-c",
        "20",
        "--symbols",
        "4",
        "--subs-per-client",
        "2",
        "--publish-rate",
        "200",
        "--duration",
        "2s",
        "--url",
        &url,
        "--quiet",
        "--server-pid",
        &std::process::id().to_string(),
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), load_test::run(cfg))
        .await
        .expect("the run stops by itself")
        .unwrap();
    println!("{report}");

    assert_eq!(report.connections.opened, 20);
    assert_eq!(report.connections.failed, 0);
    assert_eq!(report.publish.ticks, 400);
    // 4 symbols, 20 clients x 2 subs round-robin: 10 readers per symbol.
    assert_eq!(report.deliveries.expected, 400 * 10);
    assert_eq!(report.deliveries.received, report.deliveries.expected);
    assert_eq!(report.deliveries.conflated, 0);
    assert_eq!(report.deliveries.duplicated, 0);
    assert_eq!(report.deliveries.malformed, 0);
    assert_eq!(report.latency.samples, 4000);
    assert!(report.latency.p50_ms > 0.0);
    let server = report.server.expect("server figures");
    assert!(server.cpu_s > 0.0 && server.rss_peak_kib > 0);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_error() {
    // Bind then drop: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let cfg = Cli::try_parse_from(["load-test", "-c", "2", "--url", &url, "--quiet"])
        .unwrap()
        .into_config()
        .unwrap();
    let err = load_test::run(cfg).await.unwrap_err().to_string();
    assert!(err.contains("Is the server running?"), "{err}");
}

#[tokio::test]
async fn remote_targets_need_allow_remote() {
    let cfg = Cli::try_parse_from(["load-test", "--url", "ws://192.0.2.1:80/ws", "--quiet"])
        .unwrap()
        .into_config()
        .unwrap();
    let err = load_test::run(cfg).await.unwrap_err().to_string();
    assert!(err.contains("--allow-remote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_compressed_clients_get_the_newest_ticks_in_fewer_bytes() {
    let data = TempDir::new("load-test-cap");
    let node = start_dev(data.path(), &[]).await;
    let url = format!("ws://{}/ws", node.http_addr());
    let run = |extra: &'static [&'static str]| {
        let mut args = vec![
            "load-test",
            "-c",
            "10",
            "--symbols",
            "2",
            "--subs-per-client",
            "2",
            "--publish-rate",
            "200",
            "--duration",
            "2s",
            "--url",
            &url,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let cfg = Cli::try_parse_from(args).unwrap().into_config().unwrap();
        async move {
            tokio::time::timeout(Duration::from_secs(60), load_test::run(cfg))
                .await
                .expect("the run stops by itself")
                .unwrap()
        }
    };
    let plain = run(&[]).await;
    let capped = run(&["--max-rate", "5", "--compression"]).await;
    println!("{plain}\n{capped}");

    assert_eq!(plain.connections.compressed, 0);
    assert_eq!(capped.connections.compressed, 10, "every socket agreed");
    assert_eq!(plain.deliveries.received, plain.deliveries.expected);
    // 100 ticks/s of each symbol capped at 5/s: most are skipped, seen as
    // seq jumps, none lost; the last of each symbol arrives.
    let d = &capped.deliveries;
    assert_eq!(d.expected, plain.deliveries.expected);
    assert_eq!(d.received + d.conflated, d.expected, "{capped}");
    assert_eq!((d.missing, d.duplicated, d.malformed), (0, 0, 0));
    assert!(
        d.received * 5 < d.expected,
        "the cap thins the stream: {capped}"
    );
    let bytes = |r: &load_test::report::Report| r.deliveries.bytes_per_delivery.unwrap();
    assert!(bytes(&capped) > 0.0 && bytes(&plain) > 0.0);
    node.stop().await.unwrap();
}
