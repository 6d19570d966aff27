//! Remembered deliveries: what is kept of a delivery (headers minus the secret-bearing ones, the
//! body, the outcome and the answer) and how a remembered answer is given again.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_core::hook::Hook;
use cigw_store::{HookDeliveryRecord, NewHookDelivery};
use serde_json::{Map, Value};

use crate::hooks::verify::{GITHUB_SIGNATURE, GITLAB_TOKEN};

/// The header a repeated delivery's answer carries (`true`).
pub const REPEATED: &str = "cigw-delivery-repeated";

/// Headers never kept: they carry a secret, or a signature made with one.
const SECRET_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    GITLAB_TOKEN,
    GITHUB_SIGNATURE,
    "x-hub-signature",
    cigw_core::signature::standard_webhooks::SIGNATURE_HEADER,
];

/// Whether `name` (lower-case) carries a secret for `hook`.
pub fn is_secret_header(hook: &Hook, name: &str) -> bool {
    SECRET_HEADERS.contains(&name) || hook.hmac.as_ref().is_some_and(|o| o.signature_header == name)
}

/// The headers kept with a delivery: lower-cased names, secret-bearing ones left out.
pub fn kept_headers(hook: &Hook, headers: &[(String, String)]) -> Value {
    let kept: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| !is_secret_header(hook, k))
        .map(|(k, v)| (k, Value::String(v.clone())))
        .collect();
    Value::Object(kept)
}

/// A delivery's headers as pairs, from a kept JSON object.
pub fn header_pairs(headers: &Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// What a delivery's record starts as; `outcome`, `status` and `response` are filled in.
pub struct Arrival<'a> {
    /// The hook.
    pub hook: &'a Hook,
    /// The delivery id.
    pub delivery_id: &'a str,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// How long its id is remembered.
    pub remember: std::time::Duration,
    /// Its headers.
    pub headers: &'a [(String, String)],
    /// Its body (JSON text).
    pub body: &'a str,
}

impl Arrival<'_> {
    /// The record to store for this arrival.
    pub fn record(&self, outcome: &str, rule: Option<&str>, status: StatusCode, response: Value) -> NewHookDelivery {
        NewHookDelivery {
            hook: self.hook.name.clone(),
            delivery_id: self.delivery_id.to_string(),
            received_at: self.received_at,
            expires_at: self.received_at + cigw_core::time::span(self.remember),
            headers: kept_headers(self.hook, self.headers),
            body: self.body.to_string(),
            outcome: outcome.to_string(),
            rule: rule.map(str::to_string),
            status: status.as_u16(),
            response,
            keep: u32::try_from(self.hook.keep_deliveries).unwrap_or(u32::MAX),
        }
    }
}

/// The first answer of a remembered delivery, marked as a repeat.
pub fn repeat(record: &HookDeliveryRecord) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(record.response.clone())).into_response();
    response.headers_mut().insert(REPEATED, HeaderValue::from_static("true"));
    response
}
