//! CircleCI's error answers: `{"message": …}` bodies, and the 429s and 5xxs the harness injects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::harness::{FaultResponses, with_retry_after};

/// An error answer: `status` with `{"message": text}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    text: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, text: &str) -> Self {
        Self { status, text: text.to_string() }
    }

    pub(crate) fn bad_request(text: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, text)
    }

    pub(crate) fn not_found(text: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        message(self.status, &self.text)
    }
}

/// `status` with `{"message": text}` (CircleCI answers some successes this way too).
pub(crate) fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({"message": text}))).into_response()
}

/// 429 `{"message": "Rate limit exceeded."}` or, every `plain_text_every`-th time, the plain
/// text `Rate limited.`; 5xx `{"message": …}`.
pub(crate) fn fault_responses(plain_text_every: usize) -> FaultResponses {
    let count = Arc::new(AtomicUsize::new(0));
    FaultResponses {
        rate_limited: Arc::new(move |retry_after| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let r = if plain_text_every > 0 && n.is_multiple_of(plain_text_every) {
                (StatusCode::TOO_MANY_REQUESTS, [(http::header::CONTENT_TYPE, "text/plain")], "Rate limited.")
                    .into_response()
            } else {
                message(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.")
            };
            with_retry_after(r, retry_after)
        }),
        server_error: Arc::new(|status| {
            let text = if status == StatusCode::SERVICE_UNAVAILABLE {
                "Service unavailable."
            } else {
                "Internal server error."
            };
            message(status, text)
        }),
    }
}
