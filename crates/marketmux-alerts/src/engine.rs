//! [`AlertEngine`]: store, evaluator, inbox and API wired together, as a role
//! runs them (dev: fed by the in-process bus; alerts role: fed by its input).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use marketmux_bus::TickBatchHandler;
use marketmux_core::Tick;
use tokio_util::sync::CancellationToken;

use crate::evaluator::{AlertSink, Evaluator};
use crate::inbox::TickInbox;
use crate::service::{AlertService, LocalAlertService};
use crate::store::{AlertStore, StoreError};
use tracing::Instrument as _;

/// A running alert engine: its evaluation task ends at the shutdown token.
pub struct AlertEngine {
    /// The store behind the API and the fires.
    pub store: Arc<dyn AlertStore>,
    /// The index and the fire logic.
    pub evaluator: Arc<Evaluator>,
    /// Where ticks wait for the evaluation task.
    pub inbox: Arc<TickInbox>,
    /// The API (store + evaluator kept in step).
    pub service: Arc<dyn AlertService>,
}

impl AlertEngine {
    /// Loads the active alerts from `store` and spawns the evaluation task,
    /// and, when the store has a change feed (PostgreSQL), the task that
    /// applies other instances' creates and deletes at once.
    /// `reload_every` also re-reads the store's active alerts periodically,
    /// as a safety net. Each user may have `max_per_user` active alerts.
    pub async fn start(
        store: Arc<dyn AlertStore>,
        sink: AlertSink,
        reload_every: Option<Duration>,
        max_per_user: u32,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let evaluator = Evaluator::new(store.clone(), sink);
        let loaded = evaluator.reload().await?;
        tracing::info!(active = loaded, "Alert index loaded");
        crate::follow::spawn(store.clone(), evaluator.clone(), shutdown.clone());
        let inbox = Arc::new(TickInbox::new());
        tokio::spawn(
            evaluator
                .clone()
                .run(inbox.clone(), reload_every, shutdown)
                .in_current_span(),
        );
        let service: Arc<dyn AlertService> =
            LocalAlertService::with_cap(store.clone(), Some(evaluator.clone()), max_per_user);
        Ok(Self {
            store,
            evaluator,
            inbox,
            service,
        })
    }

    /// A bus handler that queues each tick for evaluation (never blocks; see
    /// [`TickInbox`] for the bound).
    pub fn tick_handler(&self) -> TickBatchHandler {
        let inbox = self.inbox.clone();
        Arc::new(move |ticks: &[Tick]| {
            for t in ticks {
                inbox.push(t);
            }
        })
    }

    /// The REST routes over this engine's API.
    pub fn routes(&self) -> Router {
        crate::rest::routes(self.service.clone())
    }
}
