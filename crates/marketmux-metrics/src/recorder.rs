//! The process-wide `metrics` recorder: what libraries record through the
//! `metrics` facade (component errors, late candle ticks) and every
//! `/metrics` answer appends after its own series.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static GLOBAL: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder whose series [`append_global`] renders.
/// Safe to call more than once; returns false if another recorder was
/// installed first (its series then never show on `/metrics`).
pub fn install_global_recorder() -> bool {
    if GLOBAL.get().is_some() {
        return true;
    }
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => GLOBAL.set(handle).is_ok(),
        Err(_) => false,
    }
}

/// Appends the series of the process-wide recorder, if one is installed.
pub fn append_global(out: &mut String) {
    if let Some(h) = GLOBAL.get() {
        out.push_str(&h.render());
    }
}
