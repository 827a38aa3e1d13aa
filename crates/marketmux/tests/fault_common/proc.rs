//! Child processes of a fault test: the `marketmux` binary's roles, tansu,
//! PostgreSQL. Each writes to a log file of its own (its tail is shown when
//! it does not come up; the files stay when the test fails), can be
//! signalled or killed with SIGKILL, and is killed when dropped or when the
//! test process dies.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process with its log file.
pub struct Proc {
    /// What it is, in messages ("bridge A").
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr to `dir/NAME.log`
    /// (appended: a restarted process keeps one log).
    pub fn spawn(
        name: &str,
        program: &str,
        args: &[String],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> Self {
        let log = dir.join(format!("{}.log", name.replace(' ', "-")));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        let mut command = Command::new(program);
        die_with_parent(&mut command);
        let child = command
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Starts a prepared `command` whose output already goes to `log`.
    pub fn from_command(name: &str, command: &mut Command, log: PathBuf) -> Self {
        die_with_parent(command);
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Sends `signal` (a `libc::SIG*`) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(c.id() as i32, signal)
            };
        }
    }

    /// Its process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no shutdown path runs, whatever was in flight is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Open file descriptors, from /proc (None once it exited).
    pub fn fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(|d| d.count())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child gets SIGKILL when the test process dies, even when killed
/// itself (no `Drop` runs then): no role outlives an interrupted test.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The `marketmux` binary of this build.
pub fn marketmux_bin() -> &'static str {
    env!("CARGO_BIN_EXE_marketmux")
}

/// Starts a `marketmux` role as a child process (`RUST_LOG=info`).
pub fn marketmux(name: &str, args: &[String], dir: &Path) -> Proc {
    Proc::spawn(name, marketmux_bin(), args, &[("RUST_LOG", "info")], dir)
}

/// Waits until `url` answers 200.
///
/// # Panics
/// After `within`, with `proc`'s log tail.
pub async fn wait_ok(url: &str, within: Duration, proc: &Proc) {
    let deadline = Instant::now() + within;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer 200 on {url} within {within:?}; its log:\n{}",
            proc.name,
            proc.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
