//! Logging (human-readable on a terminal, JSON for machines; level from
//! RUST_LOG) and the process-wide metrics recorder behind `/metrics`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global log subscriber and metrics recorder.
pub fn init(format: LogFormat) {
    if !marketmux_metrics::install_global_recorder() {
        eprintln!(
            "marketmux: another metrics recorder is installed; /metrics shows gateway series only"
        );
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: not in files, pipes or with NO_COLOR.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
