//! `load-test`: see `load-test --help` and benches/README.md.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use anyhow::Context as _;
use clap::Parser as _;
use load_test::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let json = cli.json;
    let cfg = cli.into_config()?;
    // Timers, sampling and reporting; the clients have their own threads
    // (load_test::pool) and the publisher its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = rt.block_on(load_test::run(cfg))?;
    // Clients are done; do not wait for stragglers.
    rt.shutdown_background();
    if json {
        eprint!("{report}");
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
