//! Polling with a deadline: a test waits for what it expects instead of
//! sleeping a fixed time and hoping it happened.
//!
//! Each helper checks at once, then every [`STEP`], and panics after `within`
//! naming `what` (and, for [`wait_for_value`], the last value seen). They use
//! tokio's clock, so under `tokio::time::pause` the deadline is virtual too.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked again.
pub const STEP: Duration = Duration::from_millis(10);

/// Waits until `check()` holds; returns how long that took.
///
/// # Panics
/// When `check()` still fails after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(STEP).await;
    }
    start.elapsed()
}

/// Waits until the future `check()` makes yields `Some`, and returns its value.
///
/// # Panics
/// When it still yields `None` after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}

/// Waits until the future `read()` makes yields `want`.
///
/// # Panics
/// When it yields something else after `within`, naming the last value.
pub async fn wait_for_value<T, F, Fut>(what: &str, want: T, within: Duration, mut read: F)
where
    T: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let start = Instant::now();
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{what}: wanted {want:?}, still {got:?} after {within:?}"
        );
        tokio::time::sleep(STEP).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let took = eventually("third call", Duration::from_secs(1), || {
            calls.fetch_add(1, Relaxed) == 2
        })
        .await;
        assert_eq!(calls.load(Relaxed), 3);
        assert_eq!(took, STEP * 2);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 50ms waiting for: never")]
    async fn eventually_fails_at_the_deadline_naming_what() {
        eventually("never", Duration::from_millis(50), || false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_returns_the_value_found() {
        let calls = AtomicU32::new(0);
        let got = wait_for("a value", Duration::from_secs(1), || async {
            let n = calls.fetch_add(1, Relaxed);
            (n == 4).then_some(n * 10)
        })
        .await;
        assert_eq!(got, 40);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "count: wanted 3, still 1 after")]
    async fn wait_for_value_names_the_last_value_seen() {
        wait_for_value("count", 3, Duration::from_millis(30), || async { 1 }).await;
    }
}
