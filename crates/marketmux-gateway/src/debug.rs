//! `GET /debug/pprof/profile?seconds=N[&format=flamegraph]`: a CPU profile of
//! the running node, as pprof protobuf (for `go tool pprof`, speedscope) or as
//! a flamegraph SVG.
//!
//! Bounded: 1–60 seconds, one profile at a time (409 otherwise); the heap the
//! report took is handed back to the system afterwards.
//!
//! Who reaches `/debug/*` ([`admin_only`]): with `--admin-token`, whoever
//! presents it (401 otherwise), on any listener; without it, only a loopback
//! listener or the admin listener (`--admin-listen`) answers, any other 403.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use pprof::protos::Message as _;
use serde::Deserialize;

use crate::auth::require_bearer;
use crate::error::ApiError;
use crate::server::ListenerInfo;
use crate::state::GatewayState;

/// Longest profile one request may ask for.
pub const MAX_PROFILE_SECONDS: u64 = 60;
/// Samples per second.
const FREQUENCY: i32 = 99;

static PROFILING: AtomicBool = AtomicBool::new(false);

/// Query of the profile endpoint.
#[derive(Debug, Deserialize)]
pub struct ProfileQuery {
    seconds: Option<u64>,
    format: Option<String>,
}

/// Releases the one-profile-at-a-time flag however the request ends.
struct ProfilingSlot;

impl ProfilingSlot {
    fn take() -> Option<Self> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ProfilingSlot)
    }
}

/// Whether a CPU profile is being taken now (another one would get 409).
pub fn profile_running() -> bool {
    PROFILING.load(Ordering::Acquire)
}

impl Drop for ProfilingSlot {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// Middleware of the admin routes: see the module doc.
pub async fn admin_only(
    State(state): State<Arc<GatewayState>>,
    req: Request,
    next: Next,
) -> Response {
    let listener = req
        .extensions()
        .get::<ListenerInfo>()
        .copied()
        .unwrap_or_default();
    let allowed = match state.config.admin_token.as_deref() {
        Some(token) => require_bearer(
            req.headers(),
            Some(token),
            "this endpoint needs the admin token",
        ),
        None if listener.admin || listener.loopback => Ok(()),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_only",
            "debug endpoints answer on a loopback listener or on --admin-listen; \
             set --admin-token to reach them here",
        )),
    };
    match allowed {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Hands a profile's memory back to the system: the symbol tables read to
/// name its frames (~140 MB for a debug build, kept for the process's life
/// otherwise; the next profile reads them again) and the heap its report
/// freed (glibc keeps it otherwise).
fn return_freed_memory() {
    backtrace::clear_symbol_cache();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The profile handler.
pub async fn profile(Query(q): Query<ProfileQuery>) -> Result<Response, ApiError> {
    let answer = run_profile(q).await;
    return_freed_memory();
    answer
}

async fn run_profile(q: ProfileQuery) -> Result<Response, ApiError> {
    let seconds = q.seconds.unwrap_or(10);
    if seconds == 0 || seconds > MAX_PROFILE_SECONDS {
        return Err(ApiError::bad_request(
            "invalid_seconds",
            format!("seconds must be between 1 and {MAX_PROFILE_SECONDS}"),
        ));
    }
    let flamegraph = match q.format.as_deref() {
        None | Some("pprof") | Some("protobuf") => false,
        Some("flamegraph") | Some("svg") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("unknown format {other:?}; use pprof or flamegraph"),
            ))
        }
    };
    let _slot = ProfilingSlot::take().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "profile_running",
            "a profile is already running; retry later",
        )
    })?;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "profiler", e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let report = guard
        .report()
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "profiler", e.to_string()))?;
    drop(guard);
    if flamegraph {
        let mut svg = Vec::new();
        if report.data.is_empty() {
            // Nothing was sampled (an idle node): still answer a valid picture.
            svg.extend_from_slice(
                br#"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">No samples: the node was idle.</text></svg>"#,
            );
        } else {
            report.flamegraph(&mut svg).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "profiler", e.to_string())
            })?;
        }
        Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
    } else {
        let profile = report.pprof().map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "profiler", e.to_string())
        })?;
        let body = profile.encode_to_vec();
        Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile.pb\"",
                ),
            ],
            body,
        )
            .into_response())
    }
}
