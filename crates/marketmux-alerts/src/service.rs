//! [`AlertService`]: what the REST handlers call, served either in process
//! ([`LocalAlertService`]: store + evaluator) or over gRPC
//! ([`crate::grpc::GrpcAlertClient`]).

use std::sync::Arc;

use async_trait::async_trait;

use crate::evaluator::Evaluator;
use crate::model::{Alert, InvalidAlert, NewAlert};
use crate::page::{AlertPage, InvalidPage, ListQuery};
use crate::store::{AlertStore, StoreError};

/// Active alerts a user may have when the role is given no
/// `--max-alerts-per-user`.
pub const DEFAULT_MAX_ALERTS_PER_USER: u32 = 100;

/// Why an alert API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (400 / INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] InvalidAlert),
    /// A list request's `limit` or `after_id` is out of range (400 / INVALID_ARGUMENT).
    #[error(transparent)]
    InvalidPage(#[from] InvalidPage),
    /// The user is at the per-user cap of active alerts (409 `too_many_alerts` /
    /// RESOURCE_EXHAUSTED); the message says so for the client.
    #[error("{0}")]
    TooManyAlerts(String),
    /// The store or the remote alert service cannot be reached (503 / UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500 / INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            StoreError::Internal(m) => ServiceError::Internal(m),
            e @ StoreError::TooManyAlerts { .. } => ServiceError::TooManyAlerts(e.to_string()),
        }
    }
}

/// The alert API as the handlers see it.
#[async_trait]
pub trait AlertService: Send + Sync {
    /// Stores a new active alert and starts watching it; refused past the
    /// per-user cap.
    async fn create(&self, new: NewAlert) -> Result<Alert, ServiceError>;
    /// One page of `user_id`'s alerts, in ascending id order.
    async fn list(&self, user_id: i64, query: ListQuery) -> Result<AlertPage, ServiceError>;
    /// Deletes alert `id` (of `user_id`, when given); false when there was none.
    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, ServiceError>;
}

/// The alert API in process: writes go to the store, then to the evaluator's
/// index so it stays in step.
pub struct LocalAlertService {
    store: Arc<dyn AlertStore>,
    evaluator: Option<Arc<Evaluator>>,
    /// Active alerts one user may have (`--max-alerts-per-user`).
    max_per_user: u32,
}

impl LocalAlertService {
    /// Serves `store` with the default per-user cap, keeping `evaluator`
    /// (if any) in step.
    pub fn new(store: Arc<dyn AlertStore>, evaluator: Option<Arc<Evaluator>>) -> Arc<Self> {
        Self::with_cap(store, evaluator, DEFAULT_MAX_ALERTS_PER_USER)
    }

    /// As [`LocalAlertService::new`], allowing each user `max_per_user`
    /// active alerts.
    pub fn with_cap(
        store: Arc<dyn AlertStore>,
        evaluator: Option<Arc<Evaluator>>,
        max_per_user: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            evaluator,
            max_per_user,
        })
    }
}

#[async_trait]
impl AlertService for LocalAlertService {
    async fn create(&self, new: NewAlert) -> Result<Alert, ServiceError> {
        let alert = self.store.create(&new, self.max_per_user).await?;
        if let Some(ev) = &self.evaluator {
            ev.track(alert.clone());
        }
        Ok(alert)
    }

    async fn list(&self, user_id: i64, query: ListQuery) -> Result<AlertPage, ServiceError> {
        Ok(self.store.list(user_id, &query).await?)
    }

    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, ServiceError> {
        let deleted = self.store.delete(id, user_id).await?;
        if deleted {
            if let Some(ev) = &self.evaluator {
                ev.forget(id);
            }
        }
        Ok(deleted)
    }
}
