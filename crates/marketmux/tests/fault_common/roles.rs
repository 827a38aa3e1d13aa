//! The `marketmux` roles as child processes on free loopback ports, started
//! and waited for (`/ready` or `/health` answering 200).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use marketmux_test_support::free_port;

use super::proc::{marketmux, wait_ok, Proc};

/// How long a role may take to come up on a loaded 2-core machine.
const START_WITHIN: Duration = Duration::from_secs(60);

/// A started role: its process and the address it serves on.
pub struct Role {
    /// The child process.
    pub proc: Proc,
    /// HTTP (gateway) or gRPC (alerts) address; the metrics one for a bridge.
    pub addr: SocketAddr,
    /// `/metrics` (a gateway serves it on `addr`).
    pub metrics: SocketAddr,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A gateway on Redis `redis` under `prefix`; `extra` flags appended (e.g.
/// `--kafka-brokers`). Waits for `/ready`.
pub async fn gateway(name: &str, dir: &Path, redis: &str, prefix: &str, extra: &[&str]) -> Role {
    let addr = loopback(free_port());
    let mut args: Vec<String> = [
        "gateway",
        "--listen",
        &addr.to_string(),
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--drain-secs",
        "0.2",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let proc = marketmux(name, &args, dir);
    wait_ok(&format!("http://{addr}/ready"), START_WITHIN, &proc).await;
    Role {
        proc,
        addr,
        metrics: addr,
    }
}

/// A bridge in consumer group `group`, reading from the topic's start.
pub async fn bridge(
    name: &str,
    dir: &Path,
    brokers: &str,
    redis: &str,
    prefix: &str,
    group: &str,
) -> Role {
    let metrics = loopback(free_port());
    let args: Vec<String> = [
        "bridge",
        "--kafka-brokers",
        brokers,
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--group",
        group,
        "--start-from",
        "earliest",
        "--metrics-listen",
        &metrics.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let proc = marketmux(name, &args, dir);
    wait_ok(&format!("http://{metrics}/health"), START_WITHIN, &proc).await;
    Role {
        proc,
        addr: metrics,
        metrics,
    }
}

/// An alerts instance in consumer group `group` on database `db`, pushing
/// fired alerts on Redis under `prefix`, reading from the topic's start.
pub async fn alerts(
    name: &str,
    dir: &Path,
    brokers: &str,
    db: &str,
    redis: &str,
    prefix: &str,
    group: &str,
) -> Role {
    let grpc = loopback(free_port());
    let metrics = loopback(free_port());
    let args: Vec<String> = [
        "alerts",
        "--kafka-brokers",
        brokers,
        "--database-url",
        db,
        "--grpc-listen",
        &grpc.to_string(),
        "--group",
        group,
        "--start-from",
        "earliest",
        "--reload-secs",
        "2",
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--metrics-listen",
        &metrics.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let proc = marketmux(name, &args, dir);
    wait_ok(&format!("http://{metrics}/health"), START_WITHIN, &proc).await;
    Role {
        proc,
        addr: grpc,
        metrics,
    }
}
