//! Test helpers: a fresh PostgreSQL database per test, a temporary data
//! directory, a store wrapper that can be switched "down", and a sink that
//! records fired alerts.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketmux_alerts::{
    Alert, AlertPage, AlertSink, AlertStore, FiredAlert, ListQuery, NewAlert, PgAlertStore,
    SqliteAlertStore, StoreError, StoreEvent,
};
use parking_lot::Mutex;
use sqlx::Connection as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The server every PostgreSQL test uses (override with MARKETMUX_TEST_PG).
pub fn pg_admin_url() -> String {
    std::env::var("MARKETMUX_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test and dropped (with its connections) when
/// this guard drops, even if the test panicked.
pub struct PgTestDb {
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub async fn new() -> Self {
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "these tests need PostgreSQL at {admin} (user postgres, trust auth): \
                 install and start it (e.g. `apt-get install postgresql && service postgresql start`) \
                 or point MARKETMUX_TEST_PG at one. Error: {e}"
            )
        });
        let name = format!("marketmux_test_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    pub async fn store(&self) -> PgAlertStore {
        PgAlertStore::connect(&self.url)
            .await
            .expect("open PostgreSQL store")
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin_url();
        // A thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "marketmux_alerts_test_{:016x}",
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn sqlite_store(dir: &TempDir) -> SqliteAlertStore {
    SqliteAlertStore::open(&dir.0)
        .await
        .expect("open SQLite store")
}

/// Wraps a store; while `down` is set every call fails as "unavailable".
pub struct SwitchableStore {
    pub inner: Arc<dyn AlertStore>,
    pub down: AtomicBool,
}

impl SwitchableStore {
    pub fn new(inner: Arc<dyn AlertStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(false),
        })
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AlertStore for SwitchableStore {
    async fn create(&self, new: &NewAlert, max_active: u32) -> Result<Alert, StoreError> {
        self.check()?;
        self.inner.create(new, max_active).await
    }
    async fn list(&self, user_id: i64, query: &ListQuery) -> Result<AlertPage, StoreError> {
        self.check()?;
        self.inner.list(user_id, query).await
    }
    async fn get(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        self.check()?;
        self.inner.get(id).await
    }
    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(id, user_id).await
    }
    async fn load_active(&self) -> Result<Vec<Alert>, StoreError> {
        self.check()?;
        self.inner.load_active().await
    }
    async fn fire(&self, id: i64, price: f64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.fire(id, price, at).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    fn watch(&self, shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        self.inner.watch(shutdown)
    }
}

/// Shortcuts for tests: create without a cap, list every page.
#[async_trait]
pub trait StoreExt {
    /// Creates `new` with no per-user cap.
    async fn add(&self, new: &NewAlert) -> Result<Alert, StoreError>;
    /// Every alert of `user_id`, walking all pages.
    async fn list_all(&self, user_id: i64, active_only: bool) -> Result<Vec<Alert>, StoreError>;
}

#[async_trait]
impl<T: AlertStore + ?Sized> StoreExt for T {
    async fn add(&self, new: &NewAlert) -> Result<Alert, StoreError> {
        self.create(new, u32::MAX).await
    }
    async fn list_all(&self, user_id: i64, active_only: bool) -> Result<Vec<Alert>, StoreError> {
        let mut all = Vec::new();
        let mut after_id = None;
        loop {
            let query = ListQuery::new(active_only, after_id, Some(7)).expect("valid page");
            let page = self.list(user_id, &query).await?;
            all.extend(page.alerts);
            match page.next_after_id {
                Some(next) => after_id = Some(next),
                None => return Ok(all),
            }
        }
    }
}

/// Records every fired alert.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<FiredAlert>>>);

impl Recorder {
    pub fn sink(&self) -> AlertSink {
        let v = self.0.clone();
        Arc::new(move |f: &FiredAlert| v.lock().push(f.clone()))
    }
    pub fn ids(&self) -> Vec<i64> {
        self.0.lock().iter().map(|f| f.alert.id).collect()
    }
}

pub fn new_alert(user: i64, sym: &str, cond: &str, target: f64) -> NewAlert {
    NewAlert::parse(user, sym, target, cond).expect("valid alert")
}
