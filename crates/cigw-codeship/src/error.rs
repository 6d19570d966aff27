//! Every Codeship error answer mapped into `cigw_core::Error`, in one place.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error};

use crate::models::{AuthErrorBody, ErrorsBody};

/// The messages of an error body: `{"errors": […]}`, `/auth`'s `{"error": …}`, or plain text.
pub fn error_messages(body: &[u8]) -> Vec<String> {
    if let Ok(b) = serde_json::from_slice::<ErrorsBody>(body) {
        return b.errors;
    }
    if let Ok(b) = serde_json::from_slice::<AuthErrorBody>(body) {
        return vec![b.error];
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { Vec::new() } else { vec![text.chars().take(300).collect()] }
}

/// How long until the provider's per-minute window resets: the start of the next minute.
pub fn until_next_minute(now: DateTime<Utc>) -> Duration {
    let into_minute = Duration::from_secs(u64::from(now.second())) + Duration::from_nanos(u64::from(now.nanosecond()));
    let wait = Duration::from_secs(60).saturating_sub(into_minute);
    wait.max(Duration::from_secs(1))
}

fn is_rate_limit_text(s: &str) -> bool {
    s.to_ascii_lowercase().contains("rate limit")
}

/// Map an error answer. `kind` decides what a 5xx means: for a call that starts a build the body
/// was sent and may have been processed (`MaybeSent`); for an idempotent call it is `Unavailable`.
///
/// A 403 is both Codeship's rate-limit answer (reason phrase `Rate Limit Exceeded`, no body) and
/// every endpoint's permission error (an `errors` body): the body and reason tell them apart.
pub fn parse_error(answer: &Answer, kind: CallKind, now: DateTime<Utc>) -> Error {
    let status = answer.status;
    let reason = answer.reason.as_deref();
    let messages = error_messages(&answer.body);
    let message = if messages.is_empty() {
        reason.or(status.canonical_reason()).unwrap_or("no message").to_string()
    } else {
        messages.join("; ")
    };
    let retry_after = || {
        let now_sys = SystemTime::UNIX_EPOCH + Duration::from_millis(now.timestamp_millis().max(0) as u64);
        answer.retry_after(now_sys).unwrap_or_else(|| until_next_minute(now))
    };
    match status.as_u16() {
        400 | 422 => Error::InvalidRequest { message },
        401 => Error::Unauthenticated { message },
        403 => {
            let rate_limited = reason.is_some_and(is_rate_limit_text)
                || messages.is_empty()
                || messages.iter().any(|m| is_rate_limit_text(m));
            if rate_limited {
                Error::RateLimited { retry_after: Some(retry_after()) }
            } else {
                Error::PermissionDenied { message }
            }
        }
        404 => Error::NotFound { message },
        409 => Error::Conflict { message },
        429 => Error::RateLimited { retry_after: Some(retry_after()) },
        500..=599 => {
            let text = format!("Codeship answered HTTP {}: {message}", status.as_u16());
            match kind {
                CallKind::StartsBuild => Error::maybe_sent(text),
                CallKind::Idempotent => Error::Unavailable { message: text },
            }
        }
        _ => Error::other(format!("unexpected answer from Codeship: HTTP {}: {message}", status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use crate::client::PROVIDER;

    use super::*;

    fn at(secs: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-01-15T10:20:{secs:02}.000Z")).unwrap().with_timezone(&Utc)
    }

    fn parse(status: u16, reason: Option<&str>, body: &str, kind: CallKind) -> Error {
        let mut answer =
            Answer::new(PROVIDER, StatusCode::from_u16(status).unwrap(), HeaderMap::new(), body.as_bytes().to_vec());
        answer.reason = reason.map(str::to_string);
        parse_error(&answer, kind, at(45))
    }

    fn fixture(name: &str, fill: &str) -> String {
        let path = format!("{}/tests/resources/codeship-go/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap().replace("%s", fill)
    }

    #[test]
    fn bad_request_with_errors_is_invalid() {
        let e = parse(400, None, &fixture("errors.json", "ref is required"), CallKind::StartsBuild);
        assert!(matches!(&e, Error::InvalidRequest { message } if message == "ref is required"), "{e:?}");
    }

    #[test]
    fn several_errors_are_joined() {
        let e = parse(400, None, r#"{"errors":["a is wrong","b is missing"]}"#, CallKind::Idempotent);
        assert!(matches!(&e, Error::InvalidRequest { message } if message == "a is wrong; b is missing"), "{e:?}");
    }

    #[test]
    fn not_found_with_errors() {
        let e = parse(404, None, &fixture("not_found.json", "build"), CallKind::Idempotent);
        assert!(matches!(&e, Error::NotFound { message } if message == "build not found"), "{e:?}");
    }

    #[test]
    fn unauthorized_errors_array() {
        let e = parse(401, None, r#"{"errors":["Unauthorized"]}"#, CallKind::Idempotent);
        assert!(matches!(&e, Error::Unauthenticated { message } if message == "Unauthorized"), "{e:?}");
    }

    #[test]
    fn unauthorized_singular_error_of_auth() {
        let body = std::fs::read_to_string(format!(
            "{}/tests/resources/codeship-go/auth/unauthorized.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let e = parse(401, None, &body, CallKind::Idempotent);
        assert!(matches!(&e, Error::Unauthenticated { message } if message == "Unauthorized"), "{e:?}");
    }

    #[test]
    fn forbidden_without_body_is_rate_limited_until_the_next_minute() {
        let e = parse(403, None, "", CallKind::StartsBuild);
        assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(15)), "{e:?}");
    }

    #[test]
    fn forbidden_with_rate_limit_reason_is_rate_limited() {
        let e = parse(403, Some("Rate Limit Exceeded"), "Rate Limit Exceeded", CallKind::Idempotent);
        assert!(matches!(e, Error::RateLimited { retry_after: Some(_) }), "{e:?}");
    }

    #[test]
    fn forbidden_with_errors_body_is_permission_denied() {
        let e =
            parse(403, None, r#"{"errors":["You are not authorized to access this resource"]}"#, CallKind::StartsBuild);
        assert!(
            matches!(&e, Error::PermissionDenied { message } if message == "You are not authorized to access this resource"),
            "{e:?}"
        );
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let answer = Answer::new(PROVIDER, StatusCode::TOO_MANY_REQUESTS, headers, Vec::new());
        let e = parse_error(&answer, CallKind::Idempotent, at(0));
        assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)), "{e:?}");
        let e = parse(429, None, "", CallKind::Idempotent);
        assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(15)), "{e:?}");
    }

    #[test]
    fn server_error_on_a_trigger_may_have_been_sent() {
        let e = parse(500, None, "", CallKind::StartsBuild);
        assert!(matches!(e, Error::MaybeSent { .. }), "{e:?}");
        assert!(!e.is_retryable(CallKind::StartsBuild));
    }

    #[test]
    fn server_error_on_a_read_is_unavailable() {
        let e = parse(503, None, r#"{"errors":["maintenance"]}"#, CallKind::Idempotent);
        assert!(matches!(&e, Error::Unavailable { message } if message.contains("maintenance")), "{e:?}");
        assert!(e.is_retryable(CallKind::Idempotent));
    }

    #[test]
    fn conflict_and_unprocessable() {
        assert!(matches!(parse(409, None, r#"{"errors":["busy"]}"#, CallKind::Idempotent), Error::Conflict { .. }));
        assert!(matches!(parse(422, None, r#"{"errors":["x"]}"#, CallKind::Idempotent), Error::InvalidRequest { .. }));
    }

    #[test]
    fn anything_else_is_other_with_the_status() {
        let e = parse(418, None, "teapot", CallKind::Idempotent);
        assert!(
            matches!(&e, Error::Other { message } if message.contains("418") && message.contains("teapot")),
            "{e:?}"
        );
    }

    #[test]
    fn next_minute_is_at_least_a_second() {
        assert_eq!(until_next_minute(at(0)), Duration::from_secs(60));
        assert_eq!(until_next_minute(at(59)), Duration::from_secs(1));
        let almost = at(59) + chrono::Duration::milliseconds(999);
        assert_eq!(until_next_minute(almost), Duration::from_secs(1));
    }
}
