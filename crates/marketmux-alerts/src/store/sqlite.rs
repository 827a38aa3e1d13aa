//! [`SqliteAlertStore`]: the embedded store of `marketmux dev`, one SQLite
//! file (`alerts.sqlite3`) under the data directory, kept across restarts.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::row::{alert_columns, to_alerts, AlertRow};
use super::{AlertStore, StoreError};
use crate::model::{Alert, NewAlert};
use crate::page::{AlertPage, ListQuery};

/// The database file inside the data directory.
pub const FILE_NAME: &str = "alerts.sqlite3";
/// How long a writer waits for SQLite's single write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Alerts in an SQLite file. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct SqliteAlertStore {
    pool: SqlitePool,
}

impl SqliteAlertStore {
    /// Opens (creating if needed) `data_dir/alerts.sqlite3` and runs the
    /// migrations in `migrations/sqlite`.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        super::register_metrics();
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(FILE_NAME))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }

    /// Closes the pool (waits for connections to finish), e.g. before reopening.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl AlertStore for SqliteAlertStore {
    async fn create(&self, new: &NewAlert, max_active: u32) -> Result<Alert, StoreError> {
        // IMMEDIATE takes SQLite's single write lock first: the count below
        // and the insert are one step against every other writer.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO users (id) VALUES (?1) ON CONFLICT (id) DO NOTHING")
            .bind(new.user_id)
            .execute(&mut *tx)
            .await?;
        let row: Option<AlertRow> = sqlx::query_as(concat!(
            "INSERT INTO alerts (user_id, symbol, condition, target_price, active, created_at) \
             SELECT ?1, ?2, ?3, ?4, TRUE, ?5 \
             WHERE (SELECT count(*) FROM alerts WHERE user_id = ?1 AND active) < ?6 RETURNING ",
            alert_columns!()
        ))
        .bind(new.user_id)
        .bind(new.symbol.as_str())
        .bind(new.condition.as_str())
        .bind(new.target_price)
        .bind(Utc::now())
        .bind(i64::from(max_active))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::TooManyAlerts {
                user_id: new.user_id,
                limit: max_active,
            });
        };
        tx.commit().await?;
        row.try_into()
    }

    async fn list(&self, user_id: i64, query: &ListQuery) -> Result<AlertPage, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE user_id = ?1 AND (active OR NOT ?2) AND id > ?3 \
             ORDER BY id LIMIT ?4"
        ))
        .bind(user_id)
        .bind(query.active_only)
        .bind(query.after())
        .bind(query.fetch_rows())
        .fetch_all(&self.pool)
        .await?;
        Ok(AlertPage::from_rows(to_alerts(rows)?, query))
    }

    async fn get(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        let row: Option<AlertRow> = sqlx::query_as(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Alert::try_from).transpose()
    }

    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM alerts WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn load_active(&self) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE active"
        ))
        .fetch_all(&self.pool)
        .await?;
        to_alerts(rows)
    }

    async fn fire(&self, id: i64, price: f64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE alerts SET active = FALSE, triggered_at = ?2, triggered_price = ?3 \
             WHERE id = ?1 AND active",
        )
        .bind(id)
        .bind(at)
        .bind(price)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
