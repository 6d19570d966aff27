//! Codeship's error answers: `{"errors": […]}` bodies, the bodiless `403 Rate Limit Exceeded`,
//! and the answers the harness injects.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::harness::FaultResponses;

/// An error answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `status` with `{"errors": [message]}`.
    Errors { status: StatusCode, message: String },
    /// `403 Rate Limit Exceeded` with no body and no `Retry-After`.
    RateLimited,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: &str) -> Self {
        Self::Errors { status, message: message.to_string() }
    }

    pub(crate) fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Errors { status, message } => (status, axum::Json(json!({ "errors": [message] }))).into_response(),
            Self::RateLimited => {
                let mut response = StatusCode::FORBIDDEN.into_response();
                response.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Rate Limit Exceeded"));
                response
            }
        }
    }
}

/// Injected rate limits look like Codeship's own; server errors carry `{"errors": […]}`.
pub(crate) fn fault_responses() -> FaultResponses {
    FaultResponses {
        rate_limited: Arc::new(|_retry_after| ApiError::RateLimited.into_response()),
        server_error: Arc::new(|status| ApiError::new(status, "Internal Server Error").into_response()),
    }
}
