//! One delivery attempt: the signed POST and what its answer means for the outbox row.
//!
//! Headers: Standard Webhooks (`webhook-id` = the CDEvent id, `webhook-timestamp`,
//! `webhook-signature` with one `v1,` entry per configured secret, space-separated) and the
//! CloudEvents HTTP binding in binary mode, which is how CDEvents travel over HTTP: the body is
//! the CDEvent itself with `content-type: application/json`, and `ce-specversion`, `ce-id`,
//! `ce-source`, `ce-type`, `ce-time` carry its context (`application/cloudevents+json` would
//! announce a CloudEvents envelope, which the body is not).
//!
//! Answers: 2xx delivered; 410 Gone dead-lettered at once (the receiver says the endpoint is gone
//! for good; the notification stays configured and other rows keep trying, so an operator
//! decides); anything else (3xx, 4xx, 5xx, timeouts, refused connections) is retried with
//! exponential backoff and jitter, `Retry-After` honoured up to an hour, until `max_attempts`.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use cigw_core::notification::Notification;
use cigw_core::signature::standard_webhooks;
use cigw_store::{OutboxOutcome, OutboxRecord};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};

/// The longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The HTTP client of one notification: its timeouts, no redirects (a signed delivery goes where
/// it was configured to, or fails and is retried).
pub fn client(notification: &Notification) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(notification.delivery.connect_timeout)
        .timeout(notification.delivery.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The Standard Webhooks signature header for `body`: one `v1,` entry per key, first key first.
pub fn signature(notification: &Notification, id: &str, timestamp: i64, body: &[u8]) -> String {
    notification.keys.each().map(|key| standard_webhooks::sign(key, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// The message id of a row: its CDEvent id (stable across attempts, so receivers dedupe).
pub fn message_id(row: &OutboxRecord) -> String {
    row.payload
        .pointer("/context/id")
        .and_then(|v| v.as_str())
        .map(String::from)
        .unwrap_or_else(|| format!("cigw-outbox-{}", row.id))
}

/// The headers of one attempt at `now`.
pub fn headers(notification: &Notification, row: &OutboxRecord, body: &[u8], now: DateTime<Utc>) -> HeaderMap {
    let id = message_id(row);
    let timestamp = now.timestamp();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(CONTENT_TYPE.as_str(), "application/json");
    put(USER_AGENT.as_str(), concat!("cigw/", env!("CARGO_PKG_VERSION")));
    put(standard_webhooks::ID_HEADER, &id);
    put(standard_webhooks::TIMESTAMP_HEADER, &timestamp.to_string());
    put(standard_webhooks::SIGNATURE_HEADER, &signature(notification, &id, timestamp, body));
    put("ce-specversion", "1.0");
    put("ce-id", &id);
    let context = |key: &str| row.payload.pointer(&format!("/context/{key}")).and_then(|v| v.as_str());
    if let Some(source) = context("source") {
        put("ce-source", source);
    }
    if let Some(kind) = context("type") {
        put("ce-type", kind);
    }
    if let Some(time) = context("timestamp") {
        put("ce-time", time);
    }
    headers
}

/// The wait before attempt `attempts + 1`: `backoff_base` doubled per attempt made, capped at
/// `backoff_cap`, then a random part of up to half of it taken off (so retries of many
/// deliveries spread out).
pub fn backoff(notification: &Notification, attempts: u32) -> Duration {
    let d = &notification.delivery;
    let exp = attempts.saturating_sub(1).min(30);
    let full = d.backoff_base.saturating_mul(1u32 << exp).min(d.backoff_cap);
    let jitter = rand::rng().random_range(0.0..=0.5);
    full.mul_f64(1.0 - jitter)
}

/// What an HTTP answer (or its absence) means for the row after its `attempts`-th attempt.
pub fn outcome(
    notification: &Notification,
    attempts: u32,
    answer: Result<(u16, Option<Duration>), String>,
    now: DateTime<Utc>,
) -> OutboxOutcome {
    let (status, error, retry_after) = match answer {
        Ok((status, _)) if (200..300).contains(&status) => return OutboxOutcome::Delivered { status },
        Ok((410, _)) => {
            return OutboxOutcome::Dead {
                status: Some(410),
                error: "the receiver answered 410 Gone: dead-lettered without retrying".into(),
            };
        }
        Ok((status, retry_after)) => (Some(status), format!("the receiver answered HTTP {status}"), retry_after),
        Err(error) => (None, error, None),
    };
    if attempts >= notification.delivery.max_attempts {
        return OutboxOutcome::Dead { status, error: format!("{error}; gave up after {attempts} attempts") };
    }
    let wait = retry_after.map(|r| r.min(MAX_RETRY_AFTER)).unwrap_or_else(|| backoff(notification, attempts));
    OutboxOutcome::Retry { at: now + cigw_core::time::span(wait), status, error }
}

/// POST `row` to the notification's receiver once; the status and any `Retry-After`, or why no
/// answer came. Errors never contain the URL (it may hold a token) or a key.
pub async fn attempt(
    client: &reqwest::Client,
    notification: &Notification,
    row: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<(u16, Option<Duration>), String> {
    let body = serde_json::to_vec(&row.payload).map_err(|e| format!("encoding the event failed: {e}"))?;
    let headers = headers(notification, row, &body, now);
    match client.post(&notification.url).headers(headers).body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| cigw_core::retry::parse_retry_after(v, SystemTime::now()));
            // Read (a bounded part of) the body so the connection can be reused.
            let _ = tokio::time::timeout(Duration::from_secs(1), response.bytes()).await;
            Ok((status, retry_after))
        }
        Err(e) => Err(describe(&e, notification)),
    }
}

/// A transport error in words, without the URL.
fn describe(e: &reqwest::Error, notification: &Notification) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(notification.delivery.timeout));
    }
    let mut text = if e.is_connect() { "could not connect".to_string() } else { "the request failed".to_string() };
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(s) = source {
        let part = s.to_string();
        if part != last && !part.contains(&notification.url) {
            text.push_str(": ");
            text.push_str(&part);
        }
        last = part;
        source = s.source();
    }
    text.chars().take(300).collect()
}
