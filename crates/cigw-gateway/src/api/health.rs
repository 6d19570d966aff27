//! `/healthz` (the process answers) and `/readyz` (the store answers).

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

/// Readiness: 200 when the store answers a round trip, else 503.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = HealthStatus), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    state.store.ping().await.map_err(|e| ApiError::Unavailable { cause: format!("store ping failed: {e}") })?;
    Ok(Json(HealthStatus { status: "ok" }))
}
