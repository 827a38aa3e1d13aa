//! [`AlertService`]: what the REST handlers call, served either in process
//! ([`LocalAlertService`]: store + evaluator) or over gRPC
//! ([`crate::grpc::GrpcAlertClient`]).

use std::sync::Arc;

use async_trait::async_trait;

use crate::evaluator::Evaluator;
use crate::model::{Alert, InvalidAlert, NewAlert};
use crate::store::{AlertStore, StoreError};

/// Why an alert API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (400 / INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] InvalidAlert),
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
        }
    }
}

/// The alert API as the handlers see it.
#[async_trait]
pub trait AlertService: Send + Sync {
    /// Stores a new active alert and starts watching it.
    async fn create(&self, new: NewAlert) -> Result<Alert, ServiceError>;
    /// Alerts of `user_id`, newest first.
    async fn list(&self, user_id: i64, active_only: bool) -> Result<Vec<Alert>, ServiceError>;
    /// Deletes alert `id` (of `user_id`, when given); false when there was none.
    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, ServiceError>;
}

/// The alert API in process: writes go to the store, then to the evaluator's
/// index so it stays in step.
pub struct LocalAlertService {
    store: Arc<dyn AlertStore>,
    evaluator: Option<Arc<Evaluator>>,
}

impl LocalAlertService {
    /// Serves `store`, keeping `evaluator` (if any) in step.
    pub fn new(store: Arc<dyn AlertStore>, evaluator: Option<Arc<Evaluator>>) -> Arc<Self> {
        Arc::new(Self { store, evaluator })
    }
}

#[async_trait]
impl AlertService for LocalAlertService {
    async fn create(&self, new: NewAlert) -> Result<Alert, ServiceError> {
        let alert = self.store.create(&new).await?;
        if let Some(ev) = &self.evaluator {
            ev.track(alert.clone());
        }
        Ok(alert)
    }

    async fn list(&self, user_id: i64, active_only: bool) -> Result<Vec<Alert>, ServiceError> {
        Ok(self.store.list(user_id, active_only).await?)
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
