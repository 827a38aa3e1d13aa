//! A PostgreSQL server of the test's own (initdb into a temp dir, a free
//! port), which the test can shut down and start again without touching the
//! machine's PostgreSQL.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use marketmux_test_support::{eventually, free_port};

use super::proc::Proc;

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_else(|| {
        panic!("no /usr/lib/postgresql/*/bin/initdb: install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql)")
    })
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user (uid, gid).
#[allow(unsafe_code)] // getuid(2)
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!("running as root needs a `postgres` user for the test's own PostgreSQL")
            })
    };
    Some((id("-u"), id("-g")))
}

/// A PostgreSQL server on a free loopback port, user `postgres`, trust auth.
pub struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    server: Option<Proc>,
}

impl OwnPostgres {
    /// Creates a cluster in `dir/pgdata` and starts it.
    ///
    /// # Panics
    /// When initdb or the server fails (with its output).
    pub async fn start(dir: &Path) -> Self {
        let bin = bin_dir();
        let user = run_as();
        let data = dir.join("pgdata");
        if let Some((uid, gid)) = user {
            // The temp dir is root's: the server's user must own its data
            // directory and be able to reach it.
            let _ = Command::new("chmod").args(["o+rx"]).arg(dir).status();
            std::fs::create_dir_all(&data).expect("data directory");
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(&data)
                .status();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.current_dir(dir).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            bin,
            data,
            dir: dir.to_owned(),
            port: free_port(),
            user,
            server: None,
        };
        pg.start_server().await;
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn start_server(&mut self) {
        let port = self.port.to_string();
        let data = self.data.to_string_lossy().into_owned();
        let args = [
            "-D",
            &data,
            "-p",
            &port,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ];
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let program = self.bin.join("postgres");
        let program = program.to_string_lossy();
        let server = match self.user {
            Some((uid, gid)) => {
                let log = self.dir.join("postgres.log");
                let out = std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("postgres log");
                let _ = Command::new("chown")
                    .arg(format!("{uid}:{gid}"))
                    .arg(&log)
                    .status();
                Proc::from_command(
                    "postgres",
                    Command::new(program.as_ref())
                        .current_dir(&self.dir)
                        .args(&args)
                        .uid(uid)
                        .gid(gid)
                        .stdout(out.try_clone().expect("log handle"))
                        .stderr(out),
                    log,
                )
            }
            None => Proc::spawn("postgres", &program, &args, &[], &self.dir),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s; its log:\n{}",
                server.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.server = Some(server);
    }

    /// Fast shutdown (SIGINT): clients are disconnected, in-flight
    /// transactions roll back, the server exits; waits until it has.
    ///
    /// # Panics
    /// When the server is still running after 30 s.
    pub async fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.signal(libc::SIGINT);
            eventually(
                "PostgreSQL to exit after a fast shutdown",
                Duration::from_secs(30),
                || !server.running(),
            )
            .await;
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: the postmaster takes its backends with it.
            server.signal(libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
