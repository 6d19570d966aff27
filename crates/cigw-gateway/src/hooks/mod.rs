//! Inbound hooks: `POST /hooks/{name}` turns a signed webhook (GitHub, GitLab, Standard
//! Webhooks, a configured HMAC, or a cigw bearer token) into a trigger through [`intake`].
//!
//! Order of checks, each refusing with a JSON `{code, message}` and storing nothing: the hook
//! exists (404), the body is JSON by its content type (415) and within the limit (413), the
//! delivery is verified on its raw bytes (401, or 403 for a bearer token without a trigger
//! scope), the body parses (400). Then a GitHub `ping` is answered (200); a delivery id that
//! already started a trigger is answered with its first answer (header
//! `cigw-delivery-repeated: true`); the rules decide: no match → 200 `{"matched": false, …}`,
//! a template error → 422, a match → intake → 202 with the trigger and the rule. Verified
//! deliveries are remembered with their outcome (see [`deliveries`]); one that starts a trigger
//! is stored in the trigger's transaction.
//!
//! [`intake`]: crate::intake

pub mod deliveries;
pub mod rules;
pub mod verify;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use cigw_core::hook::{Hook, Scheme};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::auth::{AuthState, Principal, Scope};
use crate::error::ApiError;
use crate::intake::request::TriggerRequest;
use crate::intake::{HookIntake, IntakeError, Submission, intake_hook};
use crate::state::AppState;
use deliveries::Arrival;
use rules::Decision;

/// Longest delivery id accepted from a sender.
pub const MAX_DELIVERY_ID: usize = 200;

/// Receive one delivery for hook `name`.
pub async fn receive(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(name): Path<String>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(hook) = state.settings.hooks.get(&name) else {
        crate::metrics::record_hook_request("(unknown)", "unknown_hook");
        let known: Vec<&str> = state.settings.hooks.keys().map(String::as_str).collect();
        let message = match known.is_empty() {
            true => format!("no hook `{name}` is configured (there are none)"),
            false => format!("no hook `{name}` is configured (configured hooks: {})", known.join(", ")),
        };
        return ApiError::Status { status: StatusCode::NOT_FOUND, code: "unknown_hook", message }.into_response();
    };
    let (outcome, response) = handle(&state, &auth, hook, &parts, body).await;
    crate::metrics::record_hook_request(&hook.name, outcome);
    response
}

/// An answer and the outcome label it is counted under.
type Answer = (&'static str, Response);

fn refuse(outcome: &'static str, error: ApiError) -> Answer {
    (outcome, error.into_response())
}

async fn handle(
    state: &AppState,
    auth: &AuthState,
    hook: &Hook,
    parts: &Parts,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !(media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))) {
        let shown = if content_type.is_empty() { "none".to_string() } else { format!("`{content_type}`") };
        return refuse(
            "unsupported_media_type",
            ApiError::UnsupportedMediaType {
                message: format!(
                    "hook deliveries must be JSON (`Content-Type: application/json`), got {shown}; \
                     in GitHub's webhook settings choose \"application/json\" as the content type"
                ),
            },
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse("too_large", ApiError::PayloadTooLarge { limit: state.settings.server.body_limit_bytes });
        }
        Err(rejection) => {
            return refuse("bad_request", ApiError::bad_request("unreadable_body", rejection.body_text()));
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let now = state.now();

    // Verification, on the raw bytes.
    let bearer = match hook.scheme {
        Scheme::Bearer => match bearer_principal(state, auth, parts).await {
            Ok(principal) => Some(principal),
            Err(e) => {
                let outcome = if e.status() == StatusCode::FORBIDDEN { "forbidden" } else { "unauthorized" };
                return refuse(outcome, e);
            }
        },
        _ => {
            if let Err(e) = verify::verify(hook, &headers, &body, now) {
                tracing::info!(hook = %hook.name, error = %e, "hook delivery refused");
                return refuse("unauthorized", ApiError::Unauthenticated { message: verify::explain(hook, &e) });
            }
            None
        }
    };

    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse("bad_request", ApiError::bad_request("invalid_json", "the body is not UTF-8 JSON"));
    };
    let payload: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return refuse("bad_request", ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")));
        }
    };

    let (delivery_id, from_sender) = match delivery_id(hook, &headers) {
        Ok(found) => found,
        Err(e) => return refuse("bad_request", e),
    };
    let decision = rules::decide(hook, &headers, &payload, &delivery_id);
    if matches!(decision, Decision::Ping) {
        let zen = payload.get("zen").cloned().unwrap_or(Value::Null);
        return ("ping", (StatusCode::OK, Json(json!({"pong": true, "hook": hook.name, "zen": zen}))).into_response());
    }
    if from_sender {
        match state.store.get_hook_delivery(&hook.name, &delivery_id, now).await {
            Ok(Some(seen)) if seen.trigger_id.is_some() => return ("duplicate", deliveries::repeat(&seen)),
            Ok(_) => {}
            Err(e) => return refuse("error", e.into()),
        }
    }
    let arrival = Arrival {
        hook,
        delivery_id: &delivery_id,
        received_at: now,
        remember: state.settings.retention.deliveries,
        headers: &headers,
        body: text,
    };
    if let (Some(principal), Decision::Matched { request, .. }) = (&bearer, &decision) {
        let targets: Vec<&str> =
            request["targets"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if let Some(target) = targets.iter().find(|t| !principal.may_trigger(t)) {
            return refuse("forbidden", ApiError::MissingScope { scope: format!("trigger:{target}") });
        }
    }
    let token_name = bearer.as_ref().map(|p| p.name.clone());
    settle(state, &arrival, decision, token_name).await
}

/// Act on a verified delivery's decision (not a ping) and remember it.
async fn settle(state: &AppState, arrival: &Arrival<'_>, decision: Decision, token: Option<String>) -> Answer {
    let hook = arrival.hook;
    let (outcome, rule, status, body) = match decision {
        Decision::Ping => unreachable!("answered before"),
        Decision::NotMatched { misses } => {
            let body = rules::not_matched_json(&hook.name, arrival.delivery_id, &misses);
            ("not_matched", None, StatusCode::OK, body)
        }
        Decision::TemplateError { error, .. } => {
            let e = rules::template_error(&hook.name, &error);
            let body = serde_json::to_value(e.body()).unwrap_or_default();
            ("template_error", Some(error.rule.clone()), e.status(), body)
        }
        Decision::Matched { rule, mut request, .. } => {
            if let Some(token) = token {
                request["labels"]["hook_token"] = Value::String(token);
            }
            return trigger(state, arrival, &rule, request).await;
        }
    };
    match state.store.record_hook_delivery(arrival.record(outcome, rule.as_deref(), status, body.clone())).await {
        Ok(None) => (outcome, (status, Json(body)).into_response()),
        Ok(Some(seen)) => ("duplicate", deliveries::repeat(&seen)),
        Err(e) => refuse("error", e.into()),
    }
}

/// The principal of the hook's requests: `hook:<name>` with the trigger scope.
pub fn hook_principal(hook: &Hook) -> Principal {
    let who = format!("hook:{}", hook.name);
    Principal::new(who.clone(), who, Scope::parse("trigger").into_iter().collect())
}

/// Hand a matched delivery's request to intake, with the delivery tied to the trigger.
async fn trigger(state: &AppState, arrival: &Arrival<'_>, rule: &str, request: Value) -> Answer {
    let hook = arrival.hook;
    let base = json!({"matched": true, "hook": hook.name, "delivery_id": arrival.delivery_id, "rule": rule});
    let submission = match submission(hook, &request) {
        Ok(s) => s,
        Err(e) => return rejected(state, arrival, rule, e).await,
    };
    let delivery = arrival.record("triggered", Some(rule), StatusCode::ACCEPTED, base);
    match intake_hook(state, submission, &hook_principal(hook), delivery).await {
        Ok(HookIntake::Created(body)) => {
            crate::metrics::record_intake("hook", "accepted");
            tracing::info!(hook = %hook.name, delivery_id = arrival.delivery_id, rule, trigger_id = ?body["trigger_id"], "hook delivery triggered");
            ("triggered", (StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Ok(HookIntake::AlreadyHandled(seen)) => ("duplicate", deliveries::repeat(&seen)),
        Err(IntakeError::Store(e)) => refuse("error", e.into()),
        Err(IntakeError::Internal(e)) => refuse("error", ApiError::internal(e)),
        Err(e) => rejected(state, arrival, rule, e).await,
    }
}

/// Intake refused the request a rule made (a bad rendered parameter, …): remember and answer.
async fn rejected(state: &AppState, arrival: &Arrival<'_>, rule: &str, error: IntakeError) -> Answer {
    crate::metrics::record_intake("hook", "rejected");
    let e = ApiError::from(error);
    let (status, body) = (e.status(), serde_json::to_value(e.body()).unwrap_or_default());
    match state.store.record_hook_delivery(arrival.record("rejected", Some(rule), status, body.clone())).await {
        Ok(None) => ("rejected", (status, Json(body)).into_response()),
        Ok(Some(seen)) => ("duplicate", deliveries::repeat(&seen)),
        Err(e) => refuse("error", e.into()),
    }
}

/// The intake submission of a rule's request.
pub fn submission(hook: &Hook, request: &Value) -> Result<Submission, IntakeError> {
    let parsed: TriggerRequest = serde_json::from_value(request.clone()).map_err(|e| IntakeError::Invalid {
        code: "invalid_body",
        message: format!("the request rule mapping made is not a trigger request: {e}"),
        problems: vec![],
        omitted: 0,
    })?;
    let raw: Box<RawValue> =
        serde_json::value::to_raw_value(request).map_err(|e| IntakeError::Internal(e.to_string()))?;
    Ok(Submission { source: format!("hook:{}", hook.name), request: parsed, body: raw })
}

/// The delivery id: the sender's (from the hook's delivery header), else a new one; `true` when
/// it is the sender's (then it deduplicates).
pub fn delivery_id(hook: &Hook, headers: &[(String, String)]) -> Result<(String, bool), ApiError> {
    let given = hook.delivery_header.as_deref().and_then(|h| verify::header(headers, h)).map(str::trim);
    match given {
        Some(id) if !id.is_empty() => {
            if id.len() > MAX_DELIVERY_ID || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(ApiError::bad_field(
                    hook.delivery_header.clone().unwrap_or_default(),
                    format!("a delivery id is 1 to {MAX_DELIVERY_ID} printable ASCII characters without spaces"),
                ));
            }
            Ok((id.to_string(), true))
        }
        _ => Ok((format!("cigw-{}", uuid::Uuid::now_v7()), false)),
    }
}

/// The bearer scheme: a live cigw token in `Authorization` with some trigger scope.
async fn bearer_principal(state: &AppState, auth: &AuthState, parts: &Parts) -> Result<Principal, ApiError> {
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::Unauthenticated {
            message: "this hook takes a cigw token: send `Authorization: Bearer cigw_…`".into(),
        });
    }
    let principal = auth.authenticate(state, parts).await?;
    principal.require_any_trigger()?;
    Ok(principal)
}
