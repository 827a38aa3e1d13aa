//! `marketmux <role>`: one binary, one role per process (or all of them in `dev`).

use clap::Parser;
use marketmux::cli::{Cli, Role};
use marketmux::{roles, telemetry};

fn main() -> anyhow::Result<()> {
    // A missing .env is fine; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("marketmux: ignoring .env: {e}");
        }
    }
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.role.unwrap_or_default() {
            Role::Dev(args) => roles::dev::start(args).await?.run_until_signal().await,
            Role::Gateway(args) => roles::gateway::start(args).await?.run_until_signal().await,
            Role::Bridge(args) => roles::bridge::start(args).await?.run_until_signal().await,
            Role::Ingest(args) => roles::ingest::start(args).await?.run_until_signal().await,
            Role::Alerts(args) => roles::alerts::start(args).await?.run_until_signal().await,
        }
    })
}
