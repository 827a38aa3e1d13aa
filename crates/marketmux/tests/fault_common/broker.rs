//! A tansu broker of the test's own behind a TCP proxy that the test can cut.
//!
//! The broker advertises the proxy's address, so every client connection
//! (producers, consumers, group coordinator) goes through it. An outage
//! resets every connection and refuses new ones; its end accepts again on
//! the same port. To the clients that is a broker that died and came back;
//! tansu keeps its topics, records, producer state and committed offsets
//! across it, as a restarted broker with durable storage does. (tansu 0.6's
//! only durable engines are S3 and PostgreSQL, and it does not create its
//! PostgreSQL schema itself: a killed and restarted tansu on `memory://`
//! comes back empty, which no client can survive. A tansu frozen with
//! SIGSTOP for longer than a consumer session answers the producers'
//! retries with ProducerFenced and its consumer groups stop making progress
//! after SIGCONT: a fault of that broker, not modelled here.)

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use marketmux_test_support::{free_port, wait_for};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::proc::Proc;

/// The tansu binary: MARKETMUX_TEST_TANSU (set by scripts/test).
///
/// # Panics
/// When it is unset, with what to do.
pub fn tansu_bin() -> String {
    std::env::var("MARKETMUX_TEST_TANSU").unwrap_or_else(|_| {
        panic!(
            "MARKETMUX_TEST_TANSU is not set: run ./scripts/test, which installs tansu \
             (`cargo install tansu --features dynostore`) and sets it to the binary's path"
        )
    })
}

/// A loopback TCP proxy to one upstream address that can be cut and restored.
pub struct Proxy {
    port: u16,
    upstream: SocketAddr,
    /// Cancelled to cut: the accept loop and every connection end.
    open: Mutex<Option<CancellationToken>>,
}

impl Proxy {
    /// Listens on a free port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Arc<Self> {
        let proxy = Arc::new(Self {
            port: free_port(),
            upstream,
            open: Mutex::new(None),
        });
        proxy.restore().await;
        proxy
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resets every connection and closes the listening socket (new
    /// connections are refused).
    pub fn cut(&self) {
        if let Some(token) = self.open.lock().take() {
            token.cancel();
        }
    }

    /// Listens again on the same port.
    ///
    /// # Panics
    /// When the port cannot be bound again within 5 s.
    pub async fn restore(&self) {
        let port = self.port;
        let listener = wait_for(
            "the proxy's port to be free again",
            Duration::from_secs(5),
            || async move { TcpListener::bind(("127.0.0.1", port)).await.ok() },
        )
        .await;
        let token = CancellationToken::new();
        *self.open.lock() = Some(token.clone());
        let upstream = self.upstream;
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = token.cancelled() => return,
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = token.cancelled() => {
                            // Reset, not a clean close: as a dead broker looks.
                            // (A zero linger does not block the drop.)
                            #[allow(deprecated)]
                            let _ = client.set_linger(Some(Duration::ZERO));
                        }
                    }
                });
            }
        });
    }
}

/// A tansu broker (in-memory storage) with `market_ticks` created, reached
/// through a [`Proxy`].
pub struct Tansu {
    proc: Proc,
    proxy: Arc<Proxy>,
}

impl Tansu {
    /// Starts tansu, waits for it, creates `market_ticks` with `partitions`.
    ///
    /// # Panics
    /// When tansu does not start or the topic cannot be created.
    pub async fn start(dir: &Path, partitions: u32) -> Self {
        let bin = tansu_bin();
        let port = free_port();
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        let listen = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", proxy.port());
        let args: Vec<String> = [
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "memory://tansu/",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let proc = Proc::spawn("tansu", &bin, &args, &[], dir);
        let mut up = false;
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "tansu did not listen; its log:\n{}", proc.log_tail(40));
        let created = Command::new(&bin)
            .args(["topic", "create", "--broker", &listen])
            .args(["--partitions", &partitions.to_string(), "market_ticks"])
            .output()
            .expect("tansu topic create");
        assert!(
            created.status.success(),
            "tansu topic create failed: {}\n{}",
            String::from_utf8_lossy(&created.stderr),
            proc.log_tail(40)
        );
        Self { proc, proxy }
    }

    /// `--kafka-brokers` for the roles: the proxy.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port())
    }

    /// The broker goes away: every connection reset, new ones refused.
    pub fn stop(&self) {
        self.proxy.cut();
    }

    /// The broker is back, with everything it had stored.
    pub async fn resume(&self) {
        self.proxy.restore().await;
    }
}
