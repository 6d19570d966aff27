//! Codefresh error answers → `cigw_core::Error`, in one place.
//!
//! Codefresh answers errors with the envelope `{status, code, name, message, context}`
//! (e.g. `UNAUTHORIZED_ERROR`, `PIPELINE_NOT_FOUND_ERROR`); some services answer `{message}` or
//! `{message, error}`, and proxies may answer plain text.

use std::time::SystemTime;

use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error};
use reqwest::StatusCode;
use serde::Deserialize;

/// Longest piece of a non-JSON body quoted in an error message.
const MAX_QUOTED: usize = 200;

#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The provider's explanation from an error body.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let detail = match &env.error {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(v @ serde_json::Value::Object(_)) => Some(v.to_string()),
            _ => None,
        };
        let text = match (env.message.filter(|m| !m.is_empty()), detail) {
            (Some(m), Some(d)) => Some(format!("{m}: {d}")),
            (Some(m), None) => Some(m),
            (None, Some(d)) => Some(d),
            (None, None) => None,
        };
        match (text, env.name.filter(|n| !n.is_empty())) {
            (Some(t), Some(n)) => return format!("{t} ({n})"),
            (Some(t), None) => return t,
            (None, Some(n)) => return n,
            (None, None) => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {status}");
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    format!("HTTP {status}: {quoted}")
}

/// Map a non-2xx answer. `kind` matters only for 5xx: an answer to a call that starts a build
/// may come after the build started (`MaybeSent`, reconciled, never blindly retried); to an
/// idempotent call 502/503/504 are retried (`Unavailable`), other 5xx are not, as the official SDK does.
pub fn parse_error(answer: &Answer, kind: CallKind) -> Error {
    let status = answer.status;
    let message = error_message(status, &answer.body);
    match status.as_u16() {
        400 | 422 => Error::InvalidRequest { message },
        401 => Error::Unauthenticated {
            message: format!("{message}; check the account's api_key (sent as `Authorization: <key>`)"),
        },
        403 => Error::PermissionDenied {
            message: format!("{message}; the API key lacks a scope (Build, Pipeline) or is restricted"),
        },
        404 => Error::NotFound { message },
        409 => Error::Conflict { message },
        429 => Error::RateLimited { retry_after: answer.retry_after(SystemTime::now()) },
        500..=599 if kind == CallKind::StartsBuild => {
            Error::maybe_sent(format!("Codefresh answered {status} to a call that starts a build: {message}"))
        }
        502..=504 => Error::Unavailable { message },
        _ => Error::other(format!("Codefresh answered {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    fn answer(status: StatusCode, headers: HeaderMap, body: &[u8]) -> Answer {
        Answer::new(crate::client::PROVIDER, status, headers, body.to_vec())
    }

    const UNAUTHORIZED: &str = include_str!("../tests/resources/error_401.json");
    const INTERNAL: &str = include_str!("../tests/resources/error_500.json");

    fn parse(status: u16, body: &str, kind: CallKind) -> Error {
        parse_error(&answer(StatusCode::from_u16(status).unwrap(), HeaderMap::new(), body.as_bytes()), kind)
    }

    #[test]
    fn envelope_401_is_unauthenticated() {
        let e = parse(401, UNAUTHORIZED, CallKind::Idempotent);
        let Error::Unauthenticated { message } = e else { panic!("{e:?}") };
        assert!(message.starts_with("Unauthorized (UNAUTHORIZED_ERROR)"), "{message}");
    }

    #[test]
    fn forbidden_is_permission_denied() {
        let e = parse(403, r#"{"message":"You do not have permissions"}"#, CallKind::Idempotent);
        let Error::PermissionDenied { message } = e else { panic!("{e:?}") };
        assert!(message.contains("You do not have permissions"), "{message}");
        assert!(message.contains("scope"), "{message}");
    }

    #[test]
    fn pipeline_not_found_is_not_found() {
        let body = r#"{"status":404,"code":"1004","name":"PIPELINE_NOT_FOUND_ERROR","message":"Could not find pipeline demo/x","context":{}}"#;
        let e = parse(404, body, CallKind::StartsBuild);
        let Error::NotFound { message } = e else { panic!("{e:?}") };
        assert_eq!(message, "Could not find pipeline demo/x (PIPELINE_NOT_FOUND_ERROR)");
    }

    #[test]
    fn bad_request_is_invalid_request() {
        let e = parse(400, r#"{"message":"Bad branch","error":"branch is required"}"#, CallKind::StartsBuild);
        let Error::InvalidRequest { message } = e else { panic!("{e:?}") };
        assert_eq!(message, "Bad branch: branch is required");
        assert!(matches!(parse(422, "{}", CallKind::Idempotent), Error::InvalidRequest { .. }));
    }

    #[test]
    fn conflict_is_conflict() {
        assert!(matches!(parse(409, r#"{"message":"busy"}"#, CallKind::Idempotent), Error::Conflict { .. }));
    }

    #[test]
    fn too_many_requests_reads_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("4"));
        let e = parse_error(&answer(StatusCode::TOO_MANY_REQUESTS, headers, b""), CallKind::StartsBuild);
        assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(4)), "{e:?}");
        let e = parse(429, "Too Many Requests", CallKind::Idempotent);
        assert!(matches!(e, Error::RateLimited { retry_after: None }), "{e:?}");
    }

    #[test]
    fn gateway_errors_are_retryable_only_for_idempotent_calls() {
        for status in [502, 503, 504] {
            let e = parse(status, r#"{"message":"upstream"}"#, CallKind::Idempotent);
            assert!(matches!(e, Error::Unavailable { .. }), "{status}: {e:?}");
            assert!(e.is_retryable(CallKind::Idempotent));
            let e = parse(status, r#"{"message":"upstream"}"#, CallKind::StartsBuild);
            assert!(matches!(e, Error::MaybeSent { .. }), "{status}: {e:?}");
            assert!(!e.is_retryable(CallKind::StartsBuild));
        }
    }

    #[test]
    fn internal_error_envelope() {
        let e = parse(500, INTERNAL, CallKind::Idempotent);
        let Error::Other { message } = &e else { panic!("{e:?}") };
        assert!(message.contains("Internal server error (INTERNAL_SERVER_ERROR)"), "{message}");
        assert!(!e.is_retryable(CallKind::Idempotent), "the official SDK retries only 502/503/504");
        assert!(matches!(parse(500, INTERNAL, CallKind::StartsBuild), Error::MaybeSent { .. }));
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        let e = parse(418, "I'm a teapot", CallKind::Idempotent);
        assert_eq!(e.to_string(), "Codefresh answered 418 I'm a teapot: HTTP 418 I'm a teapot: I'm a teapot");
        assert_eq!(error_message(StatusCode::NOT_FOUND, b""), "HTTP 404 Not Found");
        let long = "x".repeat(500);
        assert!(error_message(StatusCode::BAD_GATEWAY, long.as_bytes()).ends_with('…'));
    }
}
