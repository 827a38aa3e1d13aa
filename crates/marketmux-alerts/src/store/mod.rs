//! [`AlertStore`]: where alerts live, and its two implementations.
//!
//! - [`postgres`]: [`PgAlertStore`], for deployments (`--database-url`).
//! - [`sqlite`]: [`SqliteAlertStore`], the embedded store of `marketmux dev`,
//!   one file under `--data-dir` that survives restarts.
//!
//! Both run their migrations when opened and pass the same test suite
//! (`tests/store_suite.rs`).

pub mod postgres;
mod row;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketmux_bus::metrics::{self, Component};

use crate::model::{Alert, NewAlert};

pub use postgres::PgAlertStore;
pub use sqlite::SqliteAlertStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (down, restarting, pool exhausted):
    /// worth retrying later; the API answers 503.
    #[error("alert store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database refused.
    #[error("alert store error: {0}")]
    Internal(String),
}

/// The failure kinds `/metrics` counts for the alert store
/// (`marketmux_errors_total{component="database"}`).
const STORE_FAILURES: &[&str] = &["unavailable", "query"];

/// Shows the store's error series at 0 (called when a store is opened).
fn register_metrics() {
    metrics::register(Component::Database, STORE_FAILURES);
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let error = Self::classify(e);
        let op = match &error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Internal(_) => "query",
        };
        metrics::error(Component::Database, op);
        error
    }
}

impl StoreError {
    fn classify(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // PostgreSQL classes 08 (connection exception) and 57 (operator
            // intervention: shutdown, admin termination) mean "not now".
            E::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// Persistent alerts. Every method is one short statement (or transaction).
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Stores `new` as an active alert, creating its user row if needed.
    async fn create(&self, new: &NewAlert) -> Result<Alert, StoreError>;
    /// Alerts of `user_id`, newest first; only active ones if `active_only`.
    async fn list(&self, user_id: i64, active_only: bool) -> Result<Vec<Alert>, StoreError>;
    /// Deletes alert `id` (only if it belongs to `user_id`, when given);
    /// false when there was none.
    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError>;
    /// Every active alert, to build an evaluator's index.
    async fn load_active(&self) -> Result<Vec<Alert>, StoreError>;
    /// Marks alert `id` fired at `price` and `at`, only if it is still active:
    /// true for exactly one caller, whatever the number of evaluators racing.
    async fn fire(&self, id: i64, price: f64, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens PostgreSQL when `database_url` is set, else the embedded store in
/// `data_dir`; runs the migrations either way.
pub async fn open_store(
    database_url: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn AlertStore>, StoreError> {
    match database_url {
        Some(url) => Ok(Arc::new(PgAlertStore::connect(url).await?)),
        None => Ok(Arc::new(SqliteAlertStore::open(data_dir).await?)),
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn database_failures_are_classified_and_counted() {
        let recorder = DebuggingRecorder::new();
        let errors = ::metrics::with_local_recorder(&recorder, || {
            register_metrics();
            [
                StoreError::from(sqlx::Error::PoolTimedOut),
                StoreError::from(sqlx::Error::RowNotFound),
            ]
        });
        assert!(matches!(errors[0], StoreError::Unavailable(_)));
        assert!(matches!(errors[1], StoreError::Internal(_)));
        let mut counted: Vec<(String, u64)> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(k, _, _, v)| {
                let op = k
                    .key()
                    .labels()
                    .find(|l| l.key() == "op")?
                    .value()
                    .to_owned();
                match v {
                    DebugValue::Counter(n) => Some((op, n)),
                    _ => None,
                }
            })
            .collect();
        counted.sort();
        assert_eq!(
            counted,
            [("query".to_owned(), 1), ("unavailable".to_owned(), 1)]
        );
    }
}
