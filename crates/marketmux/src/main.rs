//! `marketmux <role>`: one binary, one role per process (or all of them in `dev`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use clap::Parser;
use marketmux::cli::{Cli, Role};
use marketmux::{roles, telemetry};

/// jemalloc instead of the system allocator: after a load peak (thousands of
/// sockets' queues, a subscribe flood) glibc keeps freed memory in its
/// arenas, while jemalloc's background thread hands it back to the OS
/// (README, "Memory after load").
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: purge on a background thread;
/// unused dirty pages go back to the OS after about a second, with
/// `MADV_DONTNEED` (muzzy pages, `MADV_FREE`, would still count in RSS).
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[allow(non_upper_case_globals)]
#[allow(unsafe_code)] // export_name: jemalloc finds its settings by this symbol
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads as its `malloc_conf` (`const char *`).
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to an immutable static string.
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[allow(unsafe_code)]
unsafe impl Sync for MallocConf {}

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
