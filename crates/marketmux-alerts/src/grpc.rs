//! The alert API over gRPC (`proto/alert.proto`): [`AlertGrpcServer`] serves
//! any [`AlertService`] (the `alerts` role serves its store + evaluator), and
//! [`GrpcAlertClient`] implements [`AlertService`] on top of a remote one, so
//! a gateway started with `--alerts-url` serves the REST routes through it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use marketmux_core::Symbol;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::model::{Alert, NewAlert};
use crate::page::{AlertPage, ListQuery};
use crate::service::{AlertService, ServiceError};

/// Generated protobuf types and service stubs.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("marketmux.alerts.v1");
}

use pb::alert_api_client::AlertApiClient;
use pb::alert_api_server::{AlertApi, AlertApiServer};

/// How long the client waits to connect, and for any one call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl From<Alert> for pb::Alert {
    fn from(a: Alert) -> Self {
        pb::Alert {
            id: a.id,
            user_id: a.user_id,
            symbol: a.symbol.as_str().to_string(),
            condition: a.condition.as_str().to_string(),
            target_price: a.target_price,
            active: a.active,
            created_at_us: a.created_at.timestamp_micros(),
            triggered_at_us: a.triggered_at.map(|t| t.timestamp_micros()),
            triggered_price: a.triggered_price,
        }
    }
}

impl TryFrom<pb::Alert> for Alert {
    type Error = ServiceError;
    fn try_from(a: pb::Alert) -> Result<Self, ServiceError> {
        let bad =
            |m: String| ServiceError::Internal(format!("alert service sent a bad alert: {m}"));
        Ok(Alert {
            id: a.id,
            user_id: a.user_id,
            symbol: Symbol::new(&a.symbol).map_err(|e| bad(e.to_string()))?,
            condition: a.condition.parse().map_err(|e| bad(format!("{e}")))?,
            target_price: a.target_price,
            active: a.active,
            created_at: DateTime::from_timestamp_micros(a.created_at_us).unwrap_or_default(),
            triggered_at: a.triggered_at_us.and_then(DateTime::from_timestamp_micros),
            triggered_price: a.triggered_price,
        })
    }
}

fn to_status(e: ServiceError) -> Status {
    match e {
        ServiceError::Invalid(inv) => Status::invalid_argument(inv.to_string()),
        ServiceError::InvalidPage(e) => Status::invalid_argument(e.to_string()),
        ServiceError::TooManyAlerts(m) => Status::resource_exhausted(m),
        ServiceError::Unavailable(m) => Status::unavailable(m),
        ServiceError::Internal(m) => Status::internal(m),
    }
}

fn from_status(s: Status) -> ServiceError {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            ServiceError::Unavailable(format!("alert service: {}", s.message()))
        }
        Code::ResourceExhausted => ServiceError::TooManyAlerts(s.message().to_string()),
        _ => ServiceError::Internal(format!("alert service: {:?}: {}", s.code(), s.message())),
    }
}

/// Serves an [`AlertService`] over gRPC.
pub struct AlertGrpcServer {
    api: Arc<dyn AlertService>,
}

impl AlertGrpcServer {
    /// The tonic service over `api`.
    pub fn service(api: Arc<dyn AlertService>) -> AlertApiServer<Self> {
        AlertApiServer::new(Self { api })
    }
}

#[tonic::async_trait]
impl AlertApi for AlertGrpcServer {
    async fn create_alert(
        &self,
        request: Request<pb::CreateAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let r = request.into_inner();
        let new = NewAlert::parse(r.user_id, &r.symbol, r.target_price, &r.condition)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let alert = self.api.create(new).await.map_err(to_status)?;
        Ok(Response::new(alert.into()))
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let r = request.into_inner();
        let query = ListQuery::new(r.active_only, r.after_id, Some(r.limit))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let page = self.api.list(r.user_id, query).await.map_err(to_status)?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: page.alerts.into_iter().map(Into::into).collect(),
            next_after_id: page.next_after_id,
        }))
    }

    async fn delete_alert(
        &self,
        request: Request<pb::DeleteAlertRequest>,
    ) -> Result<Response<pb::DeleteAlertResponse>, Status> {
        let r = request.into_inner();
        if self.api.delete(r.id, r.user_id).await.map_err(to_status)? {
            Ok(Response::new(pb::DeleteAlertResponse {}))
        } else {
            Err(Status::not_found(format!("no alert {}", r.id)))
        }
    }
}

/// Serves `api` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    api: Arc<dyn AlertService>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(AlertGrpcServer::service(api))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.cancelled_owned(),
        )
        .await
}

/// The REST alert routes served through the alerts role at `url`: what a
/// gateway started with `--alerts-url` merges into its router.
pub fn remote_rest_routes(url: &str) -> Result<axum::Router, ServiceError> {
    Ok(crate::rest::routes(Arc::new(
        GrpcAlertClient::connect_lazy(url)?,
    )))
}

/// [`AlertService`] backed by a remote alerts role.
#[derive(Clone)]
pub struct GrpcAlertClient {
    client: AlertApiClient<Channel>,
}

impl GrpcAlertClient {
    /// A client for `url` (e.g. `http://alerts:50051`); connects on first use
    /// and reconnects after failures, so a gateway starts even while the
    /// alerts role is down (calls then answer "unavailable").
    pub fn connect_lazy(url: &str) -> Result<Self, ServiceError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| ServiceError::Internal(format!("bad alerts url {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        Ok(Self {
            client: AlertApiClient::new(endpoint.connect_lazy()),
        })
    }
}

#[async_trait]
impl AlertService for GrpcAlertClient {
    async fn create(&self, new: NewAlert) -> Result<Alert, ServiceError> {
        let req = pb::CreateAlertRequest {
            user_id: new.user_id,
            symbol: new.symbol.as_str().to_string(),
            target_price: new.target_price,
            condition: new.condition.as_str().to_string(),
        };
        let a = self
            .client
            .clone()
            .create_alert(req)
            .await
            .map_err(from_status)?;
        a.into_inner().try_into()
    }

    async fn list(&self, user_id: i64, query: ListQuery) -> Result<AlertPage, ServiceError> {
        let r = self
            .client
            .clone()
            .list_alerts(pb::ListAlertsRequest {
                user_id,
                active_only: query.active_only,
                limit: query.limit,
                after_id: query.after_id,
            })
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(AlertPage {
            alerts: r
                .alerts
                .into_iter()
                .map(Alert::try_from)
                .collect::<Result<_, _>>()?,
            next_after_id: r.next_after_id,
        })
    }

    async fn delete(&self, id: i64, user_id: Option<i64>) -> Result<bool, ServiceError> {
        match self
            .client
            .clone()
            .delete_alert(pb::DeleteAlertRequest { id, user_id })
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(from_status(s)),
        }
    }
}
