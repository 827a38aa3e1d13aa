//! A `dev` node started in process, shared by the tests of the `dev` role:
//! on a free loopback port, without the synthetic feed and without a drain
//! delay, unless the test's own flags say otherwise.

use std::path::Path;

use clap::Parser as _;
use marketmux::cli::{Cli, Role};
use marketmux::node::Node;

/// What a test node runs with unless `extra` gives the flag itself (clap
/// refuses a flag given twice).
const DEFAULTS: [(&str, &str); 3] = [
    ("--listen", "127.0.0.1:0"),
    ("--feed-rate", "0"),
    ("--drain-secs", "0"),
];

/// Starts `marketmux dev` with its store and streams in `data_dir`, and
/// `extra` flags.
pub async fn start_dev(data_dir: &Path, extra: &[&str]) -> Node {
    let data_dir = data_dir.to_str().expect("a UTF-8 data dir");
    let mut argv = vec!["marketmux", "dev", "--data-dir", data_dir];
    for (flag, value) in DEFAULTS {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    let cli = Cli::parse_from(argv);
    let Some(Role::Dev(args)) = cli.role else {
        panic!("not the dev role: {:?}", cli.role)
    };
    marketmux::roles::dev::start(args)
        .await
        .expect("dev node starts")
}
