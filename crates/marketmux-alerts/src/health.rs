//! [`StoreHealth`]: whether the alert store answers, for `/ready`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::Readiness;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::AlertStore;
use tracing::Instrument as _;

/// The alert store's last known state, refreshed by a background ping.
pub struct StoreHealth {
    up: AtomicBool,
    last_error: Mutex<String>,
}

impl StoreHealth {
    /// Pings `store` every `every` until `shutdown`; starts as "up" (the
    /// store was just opened, migrations included).
    pub fn watch(
        store: Arc<dyn AlertStore>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let health = Arc::new(Self {
            up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
        });
        let h = health.clone();
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = shutdown.cancelled() => return,
                    }
                    let result =
                        tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await;
                    let err = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("ping timed out".to_string()),
                    };
                    let was_up = h.up.swap(err.is_none(), Relaxed);
                    match err {
                        Some(e) => {
                            if was_up {
                                tracing::warn!(error = %e, "Alert store down");
                            }
                            *h.last_error.lock() = e;
                        }
                        None if !was_up => tracing::info!("Alert store back"),
                        None => {}
                    }
                }
            }
            .in_current_span(),
        );
        health
    }
}

impl Readiness for StoreHealth {
    fn check(&self) -> Result<(), String> {
        if self.up.load(Relaxed) {
            Ok(())
        } else {
            Err(format!("alert store: {}", self.last_error.lock()))
        }
    }

    fn name(&self) -> &'static str {
        "alert_store"
    }
}
