//! [`OwnRedis`]: a `redis-server` of a test's own, for tests that must kill
//! Redis or make it forget its scripts without disturbing the tests that
//! share the machine's Redis.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

/// A `redis-server` child process on a free loopback port, killed when dropped.
pub struct OwnRedis {
    child: Option<Child>,
    port: u16,
    /// A directory of its own (cluster nodes), removed when dropped.
    dir: Option<std::path::PathBuf>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port, without persistence.
    ///
    /// # Panics
    /// When `redis-server` cannot be run (with what to install).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts `redis-server` on `port` (again after [`OwnRedis::kill`], to
    /// model a restart).
    ///
    /// # Panics
    /// When `redis-server` cannot be run (with what to install).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a Redis Cluster node (`--cluster-enabled yes`) on a free port,
    /// with its cluster state in a directory of its own; no slot is
    /// assigned (enough for `CLUSTER KEYSLOT`, or to join a cluster).
    ///
    /// # Panics
    /// When `redis-server` cannot be run, or no temporary directory made.
    pub fn start_cluster_node() -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("marketmux-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster node's state");
        let path = dir.to_string_lossy().into_owned();
        let mut node = Self::start_with(port, &["--cluster-enabled", "yes", "--dir", &path]);
        node.dir = Some(dir);
        node
    }

    /// Starts `redis-server` on `port` with more arguments.
    ///
    /// # Panics
    /// When `redis-server` cannot be run (with what to install).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (Debian/Ubuntu: apt-get install redis-server)")
            });
        Self {
            child: Some(child),
            port,
            dir: None,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until it accepts connections.
    ///
    /// # Panics
    /// After 5 s without a listener.
    pub async fn wait_up(&self) {
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not listen on port {}", self.port);
    }

    /// Freezes the server (`SIGSTOP`): its sockets stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server frozen by [`OwnRedis::pause`] (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let sent = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
            assert!(
                sent.is_ok_and(|s| s.success()),
                "kill {signal} redis-server"
            );
        }
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A loopback TCP port nobody listens on right now.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// A Redis Cluster of its own: three masters (no replicas) on free loopback
/// ports, joined with `redis-cli --cluster create`; killed when dropped.
pub struct OwnRedisCluster {
    nodes: Vec<OwnRedis>,
}

impl OwnRedisCluster {
    /// Starts three cluster nodes, creates the cluster and waits until every
    /// node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server`/`redis-cli` cannot be run or the cluster does not
    /// form within 10 s.
    pub async fn start() -> Self {
        let nodes: Vec<OwnRedis> = (0..3).map(|_| OwnRedis::start_cluster_node()).collect();
        for n in &nodes {
            n.wait_up().await;
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            created.is_ok_and(|s| s.success()),
            "redis-cli --cluster create {addrs:?}"
        );
        for _ in 0..200 {
            let ok = nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                return Self { nodes };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the cluster {addrs:?} did not become ok within 10 s");
    }

    /// `redis-cluster://127.0.0.1:PORT` of the first node (the others are
    /// discovered from it).
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port())
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(OwnRedis::port).collect()
    }
}
