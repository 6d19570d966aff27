//! The one place where CircleCI's error answers become `cigw_core::Error`.

use std::time::SystemTime;

use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error};
use reqwest::StatusCode;

/// The longest provider text kept in an error message.
const MAX_MESSAGE: usize = 500;

/// CircleCI's error text: `{"message"}`, else `{"error"}` (policy and v3 endpoints), else the raw
/// body (the plain-text `Rate limited.`), else the status reason.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| ["message", "error"].iter().find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string)));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text = if text.is_empty() { status.canonical_reason().unwrap_or("no message").to_string() } else { text };
    if text.chars().count() > MAX_MESSAGE {
        let cut: String = text.chars().take(MAX_MESSAGE).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Map a non-success answer. `kind` matters for 5xx: after a build-starting POST the build may
/// exist, so it is `MaybeSent`; an idempotent call is `Unavailable` and retried.
pub fn parse_error(answer: &Answer, kind: CallKind) -> Error {
    let status = answer.status;
    let message = error_message(status, &answer.body);
    match status.as_u16() {
        400 | 422 => Error::InvalidRequest { message },
        401 => Error::Unauthenticated { message },
        403 => Error::PermissionDenied { message },
        // CircleCI answers 404 both for a missing project and for one the token cannot see.
        404 => Error::NotFound { message: format!("{message} (the object does not exist or the token cannot see it)") },
        409 => Error::Conflict { message },
        429 => Error::RateLimited { retry_after: answer.retry_after(SystemTime::now()) },
        500..=599 => match kind {
            CallKind::StartsBuild => Error::maybe_sent(format!("CircleCI answered {status}: {message}")),
            CallKind::Idempotent => Error::Unavailable { message: format!("{status}: {message}") },
        },
        _ => Error::other(format!("unexpected CircleCI answer {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    fn answer(status: StatusCode, headers: HeaderMap, body: &[u8]) -> Answer {
        Answer::new(crate::client::PROVIDER, status, headers, body.to_vec())
    }

    fn parse(status: u16, body: &str, kind: CallKind) -> Error {
        parse_error(&answer(StatusCode::from_u16(status).unwrap(), HeaderMap::new(), body.as_bytes()), kind)
    }

    #[test]
    fn bad_request_is_invalid() {
        let e = parse(400, r#"{"message":"Unexpected argument(s): deploy"}"#, CallKind::StartsBuild);
        assert!(matches!(e, Error::InvalidRequest { ref message } if message == "Unexpected argument(s): deploy"));
        assert_eq!(parse(422, r#"{"message":"bad"}"#, CallKind::Idempotent).code(), "invalid_request");
    }

    #[test]
    fn unauthorized_is_unauthenticated() {
        let e = parse(401, r#"{"message":"Invalid token provided."}"#, CallKind::Idempotent);
        assert!(matches!(e, Error::Unauthenticated { ref message } if message == "Invalid token provided."));
    }

    #[test]
    fn forbidden_is_permission_denied() {
        assert_eq!(parse(403, r#"{"message":"Forbidden"}"#, CallKind::Idempotent).code(), "permission_denied");
    }

    #[test]
    fn not_found_says_it_may_be_access() {
        let e = parse(404, r#"{"message":"Project not found"}"#, CallKind::StartsBuild);
        let Error::NotFound { message } = e else { panic!("{e:?}") };
        assert!(message.starts_with("Project not found"), "{message}");
        assert!(message.contains("cannot see it"), "{message}");
    }

    #[test]
    fn conflict_is_conflict() {
        assert_eq!(parse(409, r#"{"message":"busy"}"#, CallKind::Idempotent).code(), "conflict");
    }

    #[test]
    fn too_many_requests_reads_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        let e = parse_error(&answer(StatusCode::TOO_MANY_REQUESTS, headers, b"Rate limited."), CallKind::StartsBuild);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let e = parse(429, r#"{"message":"Rate limit exceeded."}"#, CallKind::Idempotent);
        assert!(matches!(e, Error::RateLimited { retry_after: None }));
    }

    #[test]
    fn server_errors_depend_on_the_call() {
        let e = parse(500, r#"{"message":"Internal server error."}"#, CallKind::StartsBuild);
        assert_eq!(e.code(), "maybe_sent");
        assert!(e.to_string().contains("Internal server error."), "{e}");
        let e = parse(503, r#"{"message":"Service unavailable."}"#, CallKind::Idempotent);
        assert!(matches!(e, Error::Unavailable { ref message } if message.contains("Service unavailable.")));
    }

    #[test]
    fn other_statuses_are_other() {
        assert_eq!(parse(418, "teapot", CallKind::Idempotent).code(), "other");
    }

    #[test]
    fn messages_come_from_message_then_error_then_text() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(error_message(s, br#"{"message":"m","error":"e"}"#), "m");
        assert_eq!(error_message(s, br#"{"error":"e"}"#), "e");
        assert_eq!(error_message(s, b"  Invalid request  "), "Invalid request");
        assert_eq!(error_message(s, b""), "Bad Request");
        assert_eq!(error_message(s, "x".repeat(600).as_bytes()).chars().count(), MAX_MESSAGE + 1);
    }
}
