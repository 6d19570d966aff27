//! The one API error type and its one `IntoResponse`: every failure of the HTTP API becomes a
//! status and a JSON body `{code, message, details?}`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cigw_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Most problems listed in `details` of one error; the rest are only counted
/// (`details_omitted`), so an error never grows with the request that caused it.
pub const MAX_DETAILS: usize = 20;
/// Longest `field` of a listed problem, in bytes (longer ones are cut, ending with `…`).
pub const MAX_FIELD_BYTES: usize = 160;
/// Longest `message` of a listed problem, in bytes.
pub const MAX_DETAIL_MESSAGE_BYTES: usize = 300;
/// Longest top-level `message` of an error, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// Where the problem is: `targets[1]`, `ref`, `overrides.web.parameters.env`, `Idempotency-Key`, ….
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`; both texts are capped ([`MAX_FIELD_BYTES`],
    /// [`MAX_DETAIL_MESSAGE_BYTES`]) because both may echo the request.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: truncate(field.into(), MAX_FIELD_BYTES),
            message: truncate(message.into(), MAX_DETAIL_MESSAGE_BYTES),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unknown_target`, `missing_scope`, …).
    pub code: String,
    /// A human explanation.
    pub message: String,
    /// The problems found, per field: at most 20.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub details: Vec<FieldProblem>,
    /// How many further problems were found but not listed in `details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub details_omitted: Option<usize>,
}

/// Everything the API answers with other than success.
///
/// Client errors say what was wrong; server errors (5xx) carry no internal detail in their body,
/// the cause is logged once when the response is built.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad query or header value).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Per-field problems.
        details: Vec<FieldProblem>,
    },
    /// 401: no usable token. Answered with `WWW-Authenticate: Bearer`.
    #[error("{message}")]
    Unauthenticated {
        /// Why the token was not accepted.
        message: String,
    },
    /// 403: the token lacks a scope.
    #[error("this token lacks the scope `{scope}`")]
    MissingScope {
        /// The scope that would allow the request.
        scope: String,
    },
    /// 403: the request is not allowed for another reason (e.g. its browser origin).
    #[error("{message}")]
    Forbidden {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 404: no such object.
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
    /// 409: the request conflicts with the object's state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 413: the body is larger than `server.body_limit_bytes`.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// 415: the body is not JSON.
    #[error("{message}")]
    UnsupportedMediaType {
        /// What was expected.
        message: String,
    },
    /// 422: the request is well-formed but cannot be accepted.
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable code.
        code: &'static str,
        /// Summary.
        message: String,
        /// The problems found (at most [`MAX_DETAILS`] are sent).
        details: Vec<FieldProblem>,
        /// Further problems found but not kept.
        omitted: usize,
    },
    /// 429: a rate limit (the token's, or the provider's) was hit.
    #[error("{message}")]
    RateLimited {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
        /// When to try again (sent as `Retry-After`, rounded up to whole seconds).
        retry_after: Option<Duration>,
    },
    /// 502: the provider failed a call the API made synchronously (approve, deny).
    #[error("{message}")]
    Provider {
        /// The provider's message.
        message: String,
    },
    /// 503: a dependency (the database) is unavailable; retrying later may work.
    #[error("service unavailable: {cause}")]
    Unavailable {
        /// The cause, logged, never sent.
        cause: String,
    },
    /// 500: anything unexpected.
    #[error("internal error: {cause}")]
    Internal {
        /// The cause, logged, never sent.
        cause: String,
    },
    /// Any other status without further detail (used for errors produced by middleware).
    #[error("{message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
}

impl ApiError {
    /// A 400 with a single message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into(), details: Vec::new() }
    }

    /// A 400 for one bad field.
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let problem = FieldProblem::new(field, message);
        Self::BadRequest {
            code: "invalid_request",
            message: format!("`{}`: {}", problem.field, problem.message),
            details: vec![problem],
        }
    }

    /// A 422 listing every problem.
    pub fn unprocessable(code: &'static str, message: impl Into<String>, details: Vec<FieldProblem>) -> Self {
        Self::Unprocessable { code, message: message.into(), details, omitted: 0 }
    }

    /// A 422 listing some problems, `omitted` more having been found.
    pub fn unprocessable_with_omitted(
        code: &'static str,
        message: impl Into<String>,
        details: Vec<FieldProblem>,
        omitted: usize,
    ) -> Self {
        Self::Unprocessable { code, message: message.into(), details, omitted }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound { message: message.into() }
    }

    /// A 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    /// A 500 whose cause is logged and not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal { cause: cause.to_string() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::MissingScope { .. } | Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Provider { .. } => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Status { status, .. } => *status,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::RateLimited { code, .. }
            | Self::Status { code, .. } => code,
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::MissingScope { .. } => "missing_scope",
            Self::NotFound { .. } => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Provider { .. } => "provider_error",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal { .. } => "internal",
        }
    }

    /// The body sent to the client: server errors get a generic message; the message and the
    /// details are capped ([`MAX_MESSAGE_BYTES`], [`MAX_DETAILS`]), the rest counted.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            Self::Unavailable { .. } => "a dependency of the gateway is unavailable; try again later".to_string(),
            Self::Internal { .. } => "internal error; the gateway logged the cause".to_string(),
            other => truncate(other.to_string(), MAX_MESSAGE_BYTES),
        };
        let (details, omitted): (&[FieldProblem], usize) = match self {
            Self::BadRequest { details, .. } => (details, 0),
            Self::Unprocessable { details, omitted, .. } => (details, *omitted),
            _ => (&[], 0),
        };
        let omitted = omitted + details.len().saturating_sub(MAX_DETAILS);
        let details = details.iter().take(MAX_DETAILS).cloned().collect();
        ErrorBody { code: self.code().to_string(), message, details, details_omitted: (omitted > 0).then_some(omitted) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal { cause } => tracing::error!(error = %cause, "request failed"),
            Self::Unavailable { cause } => tracing::error!(error = %cause, "request failed: dependency unavailable"),
            Self::Provider { message } => tracing::warn!(error = %message, "provider call failed"),
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited { retry_after: Some(wait), .. } => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => Self::not_found(format!("{what} not found")),
            StoreError::Conflict { what } => Self::conflict("conflict", what),
            StoreError::Invalid { field, message } => Self::bad_field(field, message),
            e @ StoreError::Unavailable { .. } => Self::Unavailable { cause: e.to_string() },
            other => Self::internal(other),
        }
    }
}

impl From<cigw_core::Error> for ApiError {
    fn from(e: cigw_core::Error) -> Self {
        use cigw_core::Error as E;
        match e {
            E::RateLimited { retry_after } => Self::RateLimited {
                code: "provider_rate_limited",
                message: "the provider's rate limit was hit; try again later".into(),
                retry_after,
            },
            E::NotFound { message } => Self::not_found(format!("the provider does not know this run: {message}")),
            E::Conflict { message } => Self::conflict("provider_conflict", format!("the provider refused: {message}")),
            E::InvalidRequest { message } => {
                Self::unprocessable("provider_invalid_request", format!("the provider refused: {message}"), Vec::new())
            }
            E::Unsupported { operation } => Self::unprocessable(
                "unsupported",
                format!("this target's provider does not support `{operation}`"),
                Vec::new(),
            ),
            other => Self::Provider { message: other.to_string() },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::Status {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: rejection.body_text(),
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType {
                message: "expected a JSON body with `Content-Type: application/json`".into(),
            },
            StatusCode::UNPROCESSABLE_ENTITY => Self::unprocessable("invalid_body", rejection.body_text(), Vec::new()),
            status if status.is_client_error() => Self::bad_request("invalid_json", rejection.body_text()),
            _ => Self::internal(rejection.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::internal("connection string sqlite://secret/path failed");
        let body = e.body();
        assert_eq!(body.code, "internal");
        assert!(!body.message.contains("secret"), "{}", body.message);
        let e = ApiError::Unavailable { cause: "pool timed out at host db.internal".into() };
        assert!(!e.body().message.contains("db.internal"));
    }

    #[test]
    fn error_bodies_are_capped_and_count_what_they_leave_out() {
        let huge = "é".repeat(100_000);
        let details: Vec<FieldProblem> =
            (0..MAX_DETAILS + 5).map(|i| FieldProblem::new(format!("f{i}.{huge}"), huge.clone())).collect();
        assert!(
            details.iter().all(|d| d.field.len() <= MAX_FIELD_BYTES && d.message.len() <= MAX_DETAIL_MESSAGE_BYTES)
        );
        assert!(details[0].field.starts_with("f0.é") && details[0].field.ends_with('…'));
        let body = ApiError::unprocessable_with_omitted("x", huge.clone(), details, 7).body();
        assert_eq!(body.details.len(), MAX_DETAILS);
        assert_eq!(body.details_omitted, Some(5 + 7));
        assert!(body.message.len() <= MAX_MESSAGE_BYTES);
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.len() < 16 * 1024, "{}", json.len());
        let small = ApiError::unprocessable("x", "m", vec![FieldProblem::new("a", "b")]).body();
        assert!(!serde_json::to_string(&small).unwrap().contains("details_omitted"));
        assert_eq!(truncate("abc".into(), 3), "abc");
        assert_eq!(truncate("abcdef".into(), 5), "ab…");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let e = ApiError::RateLimited {
            code: "rate_limited",
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1200)),
        };
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn unauthenticated_asks_for_a_bearer_token() {
        let response = ApiError::Unauthenticated { message: "missing".into() }.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(ApiError::from(StoreError::run_not_found("r1")).status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(StoreError::Conflict { what: "x".into() }).status(), StatusCode::CONFLICT);
        let invalid = ApiError::from(StoreError::Invalid { field: "cursor", message: "not a cursor".into() });
        assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
        assert_eq!(invalid.body().details, vec![FieldProblem::new("cursor", "not a cursor")]);
        assert_eq!(
            ApiError::from(StoreError::Corrupt { message: "m".into() }).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn provider_errors_map_to_matching_statuses() {
        let cases = [
            (cigw_core::Error::Conflict { message: "x".into() }, StatusCode::CONFLICT),
            (cigw_core::Error::Unsupported { operation: "approve" }, StatusCode::UNPROCESSABLE_ENTITY),
            (cigw_core::Error::RateLimited { retry_after: None }, StatusCode::TOO_MANY_REQUESTS),
            (cigw_core::Error::Unavailable { message: "503".into() }, StatusCode::BAD_GATEWAY),
            (cigw_core::Error::Unauthenticated { message: "bad".into() }, StatusCode::BAD_GATEWAY),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status(), status);
        }
    }
}
