//! [`Node`]: a started role, with its address and a handle to stop it.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running role: where it listens and how to stop it.
pub struct Node {
    /// The HTTP/WebSocket address (gRPC for `alerts`), if the role listens.
    pub addr: Option<SocketAddr>,
    /// Where `/metrics` is served apart from `addr`: `--metrics-listen` of a
    /// role without a gateway, `--admin-listen` of `dev` and `gateway`.
    pub metrics_addr: Option<SocketAddr>,
    /// Cancel to start the graceful shutdown.
    pub shutdown: CancellationToken,
    /// Ends when the role has stopped.
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// The listen address; panics only in tests that started a non-listening role.
    pub fn http_addr(&self) -> SocketAddr {
        self.addr.expect("this role does not listen")
    }

    /// The `--metrics-listen` address; panics only in tests that set none.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .expect("this role has no --metrics-listen")
    }

    /// Stops the node and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Waits for SIGINT/SIGTERM, then stops the node.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let signal = crate::shutdown::on_signal();
        let Node {
            shutdown, mut task, ..
        } = self;
        tokio::select! {
            _ = signal.cancelled() => {
                shutdown.cancel();
                task.await?
            }
            r = &mut task => r?,
        }
    }
}
