//! A `gateway` node over Redis, started in process on a free loopback port,
//! shared by the Redis gateway tests, and the Redis they run on: its address,
//! a command connection, and the cleanup of a test's keys.

use clap::Parser as _;
use marketmux::cli::{Cli, Role};
use marketmux::node::Node;

#[path = "../redis_common/mod.rs"]
mod redis_common;
pub use redis_common::{admin, cleanup, redis_url};

/// Starts a gateway on `url` under key `prefix`, with `extra` flags.
pub async fn start_gateway(url: &str, prefix: &str, extra: &[&str]) -> Node {
    let mut argv = vec![
        "marketmux",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        url,
        "--redis-prefix",
        prefix,
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::parse_from(argv);
    let Some(Role::Gateway(args)) = cli.role else {
        panic!("not a gateway: {:?}", cli.role)
    };
    marketmux::roles::gateway::start(args)
        .await
        .expect("gateway starts")
}
