//! The `/v1` HTTP API, one module per resource, plus the JSON extractor whose rejections become
//! [`ApiError`]s.

use axum::extract::{FromRef, FromRequest, OptionalFromRequest, Request};
use axum::http::HeaderName;
use axum::{Json, extract::rejection::JsonRejection};
use cigw_core::RunState;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

pub mod chains;
pub mod events;
pub mod health;
pub mod hooks;
pub mod notifications;
pub mod runs;
pub mod schedules;
pub mod targets;
pub mod tokens;
pub mod triggers;
pub mod views;
pub mod wait;

/// The request id header, set when absent and echoed in every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The request header carrying an idempotency key (`POST /v1/triggers`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The header a reconnecting `EventSource` sends with the id of the last event it received.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Tells a reverse proxy (nginx) whether to buffer a response; event streams say `no`.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A JSON request body. Malformed JSON → 400 `invalid_json`, a body of the wrong shape → 422
/// `invalid_body` naming the field, a missing or non-JSON content type → 415, a body over
/// `server.body_limit_bytes` → 413 `payload_too_large`.
///
/// As an `Option<ApiJson<T>>` a request without `Content-Type` (no body) gives `None`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

fn map_rejection(rejection: JsonRejection, state: &AppState) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit: state.settings.server.body_limit_bytes };
    }
    ApiError::from(rejection)
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(map_rejection(rejection, &AppState::from_ref(state))),
        }
    }
}

impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match <Json<T> as OptionalFromRequest<S>>::from_request(req, state).await {
            Ok(value) => Ok(value.map(|Json(v)| Self(v))),
            Err(rejection) => Err(map_rejection(rejection, &AppState::from_ref(state))),
        }
    }
}

/// The `limit` query parameter of paged lists: 1 to 1000, or a 400 saying so.
pub(crate) fn limit_param(value: &str) -> Result<u32, ApiError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| ApiError::bad_field("limit", format!("expected an integer from 1 to 1000, got `{value}`")))
}

/// The `state` query parameter of run and event filters: a run state by name, or a 400 listing
/// the names.
pub(crate) fn state_param(value: &str) -> Result<RunState, ApiError> {
    value.parse::<RunState>().map_err(|_| {
        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::bad_field("state", format!("expected one of {}, got `{value}`", names.join(", ")))
    })
}
