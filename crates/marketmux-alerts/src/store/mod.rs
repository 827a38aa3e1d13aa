//! [`AlertStore`]: where alerts live, and its two implementations.
//!
//! - [`postgres`]: [`PgAlertStore`], for deployments (`--database-url`).
//! - [`sqlite`]: [`SqliteAlertStore`], the embedded store of `marketmux dev`,
//!   one file under `--data-dir` that survives restarts.
//! - [`notify`]: the PostgreSQL change feed ([`StoreEvent`]s from
//!   `LISTEN/NOTIFY`), which keeps every instance's index in step.
//!
//! Both run their migrations when opened and pass the same test suite
//! (`tests/store_suite.rs`).

pub mod notify;
pub mod postgres;
mod row;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketmux_metrics::errors::{self, Component};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{Alert, NewAlert};
use crate::page::{AlertPage, ListQuery};

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
    /// The user already has `limit` active alerts (answered 409 /
    /// RESOURCE_EXHAUSTED); nothing was stored.
    #[error("user {user_id} already has {limit} active alerts, the most allowed; delete one or wait for one to fire")]
    TooManyAlerts {
        /// The user.
        user_id: i64,
        /// Active alerts one user may have.
        limit: u32,
    },
}

/// A change to the stored alerts, announced by the store when it commits,
/// whichever instance made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    /// Alert `id` was created or changed: read it again.
    Changed(i64),
    /// Alert `id` was deleted or fired: stop watching it.
    Removed(i64),
    /// Announcements may have been missed (the feed connected or
    /// reconnected): read every active alert again.
    Resync,
}

/// The failure kinds `/metrics` counts for the alert store
/// (`marketmux_errors_total{component="database"}`).
const STORE_FAILURES: &[&str] = &["unavailable", "query"];

/// Shows the store's error series at 0 (called when a store is opened).
fn register_metrics() {
    errors::register(Component::Database, STORE_FAILURES);
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let error = Self::classify(e);
        let op = match &error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Internal(_) | StoreError::TooManyAlerts { .. } => "query",
        };
        errors::error(Component::Database, op);
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
    /// Stores `new` as an active alert, creating its user row if needed,
    /// unless its user already has `max_active` active alerts
    /// ([`StoreError::TooManyAlerts`]). The count and the insert are one
    /// step per user: concurrent creates, on any number of instances, never
    /// take a user past `max_active`.
    async fn create(&self, new: &NewAlert, max_active: u32) -> Result<Alert, StoreError>;
    /// One page of `user_id`'s alerts, in ascending id order.
    async fn list(&self, user_id: i64, query: &ListQuery) -> Result<AlertPage, StoreError>;
    /// Alert `id`, if it exists.
    async fn get(&self, id: i64) -> Result<Option<Alert>, StoreError>;
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
    /// Changes committed through any instance, as they happen, starting with
    /// a [`StoreEvent::Resync`]; the feed ends at `shutdown`. `None` when the
    /// store has no such feed: the embedded store serves one process, whose
    /// API keeps its evaluator in step directly.
    fn watch(&self, shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        let _ = shutdown;
        None
    }
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
