//! [`PgAlertStore`]: alerts in PostgreSQL (tables `users` and `alerts`).
//!
//! A trigger announces every insert, fire and delete of an alert on the
//! channel [`super::notify::CHANNEL`] when it commits; [`AlertStore::watch`]
//! turns those into [`StoreEvent`]s.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::row::{alert_columns, to_alerts, AlertRow};
use super::{AlertStore, StoreError, StoreEvent};
use crate::model::{Alert, NewAlert};
use crate::page::{AlertPage, ListQuery};

/// How long a call waits for a pooled connection before answering "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per process.
const MAX_CONNECTIONS: u32 = 8;

/// Alerts in PostgreSQL. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PgAlertStore {
    pool: PgPool,
}

impl PgAlertStore {
    /// Connects to `url` and runs the migrations in `migrations/postgres`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        super::register_metrics();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool; runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Other components may keep their own migrations in the same database.
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl AlertStore for PgAlertStore {
    async fn create(&self, new: &NewAlert, max_active: u32) -> Result<Alert, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(new.user_id)
            .execute(&mut *tx)
            .await?;
        // One create per user at a time, on every instance: the count below
        // runs after the lock is held, so it sees every alert committed
        // by the creates before this one.
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(new.user_id)
            .execute(&mut *tx)
            .await?;
        let row: Option<AlertRow> = sqlx::query_as(concat!(
            "INSERT INTO alerts (user_id, symbol, condition, target_price, active, created_at) \
             SELECT $1, $2, $3, $4, TRUE, $5 \
             WHERE (SELECT count(*) FROM alerts WHERE user_id = $1 AND active) < $6 RETURNING ",
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
            " FROM alerts WHERE user_id = $1 AND (active OR NOT $2) AND id > $3 \
             ORDER BY id LIMIT $4"
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
            " FROM alerts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Alert::try_from).transpose()
    }

    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM alerts WHERE id = $1 AND ($2::BIGINT IS NULL OR user_id = $2)",
        )
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
            "UPDATE alerts SET active = FALSE, triggered_at = $2, triggered_price = $3 \
             WHERE id = $1 AND active",
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

    fn watch(&self, shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        Some(super::notify::spawn_feed(self.pool.clone(), shutdown))
    }
}
