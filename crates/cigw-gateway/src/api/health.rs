//! `/healthz` (the process answers) and `/readyz` (the store answers and takes writes).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A health answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`.
    pub status: &'static str,
}

/// Liveness: always 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthStatus)))]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// The store row `/readyz` writes: the time of the last readiness check.
pub const READY_PROBE_ROW: &str = "readyz";
/// How long `/readyz` waits for the store before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readiness: 200 when the store answers and commits a write within 5 s, else 503.
///
/// The write (the time of this check, in one row) fails on a full disk or a read-only database.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = HealthStatus), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    let check = async {
        state.store.ping().await.map_err(|e| format!("store ping failed: {e}"))?;
        let stamp = state.now().timestamp_millis();
        state.store.save_cursor(READY_PROBE_ROW, stamp).await.map_err(|e| format!("store write failed: {e}"))
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(Json(HealthStatus { status: "ok" })),
        Ok(Err(cause)) => Err(ApiError::Unavailable { cause }),
        Err(_) => Err(ApiError::Unavailable { cause: format!("the store did not answer within {READY_TIMEOUT:?}") }),
    }
}
