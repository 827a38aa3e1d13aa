//! REST handlers: `POST /alerts`, `GET /alerts`, `DELETE /alerts/{id}`, as an
//! axum [`Router`] the binary merges into the gateway's. Errors are
//! `{"error":{"code","message"}}` (the gateway's shape).
//!
//! - `POST /alerts` past the per-user cap answers 409 `too_many_alerts`.
//! - `GET /alerts` is paged: `limit` (default 100, at most 1,000) and
//!   `after_id`; the answer is `{"alerts":[...],"next_after_id":N}`, in
//!   ascending id order, `next_after_id` absent on the last page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use http::StatusCode;
use marketmux_core::auth::AuthenticatedUser;
use serde::Deserialize;

use crate::model::NewAlert;
use crate::page::ListQuery;
use crate::service::{AlertService, ServiceError};

/// Largest accepted `POST /alerts` body.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

type Api = Arc<dyn AlertService>;

/// The alert routes over `api`.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/alerts", get(list).post(create))
        .route("/alerts/{id}", delete(remove))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// A JSON error answer.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RestError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for RestError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(inv) => Self::bad_request(inv.code(), inv.to_string()),
            ServiceError::InvalidPage(e) => Self::bad_request("invalid_query", e.to_string()),
            ServiceError::TooManyAlerts(message) => Self {
                status: StatusCode::CONFLICT,
                code: "too_many_alerts",
                message,
            },
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "Alert store unavailable");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the alert store is unavailable; retry shortly".into(),
                }
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "Alert request failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "internal",
                    message: "internal error".into(),
                }
            }
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Optional when the request is authenticated (the token's user is used).
    user_id: Option<i64>,
    symbol: String,
    target_price: f64,
    condition: String,
}

/// The user a request acts for. With authentication on (the gateway attached an
/// [`AuthenticatedUser`]), a `user_id` the client sent must be the token's, or
/// is taken from it; off, the client's `user_id` is used.
fn acting_user(
    token: Option<Extension<AuthenticatedUser>>,
    given: Option<i64>,
) -> Result<Option<i64>, RestError> {
    match (token, given) {
        (Some(Extension(AuthenticatedUser(me))), Some(id)) if id != me => Err(RestError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!("user_id {id} is not the authenticated user"),
        }),
        (Some(Extension(AuthenticatedUser(me))), _) => Ok(Some(me)),
        (None, given) => Ok(given),
    }
}

async fn create(
    State(api): State<Api>,
    token: Option<Extension<AuthenticatedUser>>,
    body: Bytes,
) -> Result<Response, RestError> {
    let b: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        RestError::bad_request(
            "invalid_json",
            format!("expected {{\"user_id\",\"symbol\",\"target_price\",\"condition\"}}: {e}"),
        )
    })?;
    let uid = acting_user(token, b.user_id)?
        .ok_or_else(|| RestError::bad_request("invalid_user_id", "user_id is required"))?;
    let new = NewAlert::parse(uid, &b.symbol, b.target_price, &b.condition)
        .map_err(ServiceError::from)?;
    let alert = api.create(new).await?;
    Ok((StatusCode::CREATED, Json(alert)).into_response())
}

/// Parses an optional boolean query parameter.
fn flag(q: &HashMap<String, String>, name: &'static str) -> Result<bool, RestError> {
    match q.get(name).map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(RestError::bad_request(
            "invalid_query",
            format!("{name} must be true or false, got {other:?}"),
        )),
    }
}

fn user_id(q: &HashMap<String, String>, required: bool) -> Result<Option<i64>, RestError> {
    match q.get("user_id") {
        None if required => Err(RestError::bad_request(
            "invalid_user_id",
            "user_id is required",
        )),
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Some(id)),
            _ => Err(RestError::bad_request(
                "invalid_user_id",
                format!("user_id must be a positive integer, got {v:?}"),
            )),
        },
    }
}

async fn list(
    State(api): State<Api>,
    token: Option<Extension<AuthenticatedUser>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    let required = token.is_none();
    let uid = acting_user(token, user_id(&q, required)?)?.unwrap_or_default();
    let query = ListQuery::parse(
        flag(&q, "active_only")?,
        q.get("after_id").map(String::as_str),
        q.get("limit").map(String::as_str),
    )
    .map_err(ServiceError::from)?;
    let page = api.list(uid, query).await?;
    Ok(Json(page).into_response())
}

async fn remove(
    State(api): State<Api>,
    token: Option<Extension<AuthenticatedUser>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    let id: i64 = id.parse().map_err(|_| {
        RestError::bad_request(
            "invalid_id",
            format!("alert id must be an integer, got {id:?}"),
        )
    })?;
    // Authenticated: only the user's own alerts can be deleted (others: 404).
    let uid = acting_user(token, user_id(&q, false)?)?;
    if api.delete(id, uid).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(RestError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no alert {id}"),
        })
    }
}
