//! Codefresh's error answers: the `{status, code, name, message, context}` envelope, the exact
//! 401 body, and the 429s and 5xxs the harness injects.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

use crate::harness::{FaultResponses, with_retry_after};

/// The 401 body Codefresh answers, byte for byte (codefresh-io/cli#306).
pub(crate) const UNAUTHORIZED_BODY: &str =
    r#"{"status":401,"code":"2401","name":"UNAUTHORIZED_ERROR","message":"Unauthorized","context":{}}"#;

/// An error answer. Codes other than 401's and 500's are not documented; the simulator's are
/// placeholders.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 401 with [`UNAUTHORIZED_BODY`].
    Unauthorized,
    /// `status` with the envelope.
    Envelope { status: StatusCode, code: &'static str, name: &'static str, message: String },
}

impl ApiError {
    pub(crate) fn bad_request(message: &str) -> Self {
        Self::Envelope {
            status: StatusCode::BAD_REQUEST,
            code: "1400",
            name: "BAD_REQUEST_ERROR",
            message: message.to_string(),
        }
    }

    /// A 404 named for what is missing (`PIPELINE_NOT_FOUND_ERROR`, …).
    pub(crate) fn not_found(name: &'static str, message: &str) -> Self {
        Self::Envelope { status: StatusCode::NOT_FOUND, code: "1404", name, message: message.to_string() }
    }

    /// A key that authenticates but lacks scopes or is restricted.
    pub(crate) fn forbidden() -> Self {
        Self::Envelope {
            status: StatusCode::FORBIDDEN,
            code: "2403",
            name: "FORBIDDEN_ERROR",
            message: "You do not have permissions to perform this action".to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                UNAUTHORIZED_BODY,
            )
                .into_response(),
            Self::Envelope { status, code, name, message } => {
                let body =
                    json!({"status": status.as_u16(), "code": code, "name": name, "message": message, "context": {}});
                (status, axum::Json(body)).into_response()
            }
        }
    }
}

/// 429 `{"message": "Too Many Requests"}`; 5xx in the envelope with code 1001.
pub(crate) fn fault_responses() -> FaultResponses {
    FaultResponses {
        rate_limited: Arc::new(|retry_after| {
            let r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"message": "Too Many Requests"})));
            with_retry_after(r.into_response(), retry_after)
        }),
        server_error: Arc::new(|status| {
            let body = json!({"status": status.as_u16(), "code": "1001", "name": "INTERNAL_SERVER_ERROR",
                "message": "Internal server error", "context": {}});
            (status, axum::Json(body)).into_response()
        }),
    }
}
