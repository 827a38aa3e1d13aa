//! `/ready` sees the alert store go down and come back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use marketmux_alerts::StoreHealth;
use marketmux_bus::Readiness;
use marketmux_test_support::eventually;
use tokio_util::sync::CancellationToken;

async fn wait_for(h: &StoreHealth, up: bool) {
    let what = format!("store health up={up}");
    eventually(&what, Duration::from_secs(2), || h.check().is_ok() == up).await;
}

#[tokio::test]
async fn health_follows_the_store() {
    let dir = TempDir::new();
    let sw = SwitchableStore::new(Arc::new(sqlite_store(&dir).await));
    let stop = CancellationToken::new();
    let h = StoreHealth::watch(sw.clone(), Duration::from_millis(20), stop.clone());
    wait_for(&h, true).await;
    sw.set_down(true);
    wait_for(&h, false).await;
    assert!(h.check().unwrap_err().contains("alert store"));
    assert_eq!(h.name(), "alert_store");
    sw.set_down(false);
    wait_for(&h, true).await;
    stop.cancel();
}
