//! `/v1/hooks`: the configured hooks, their remembered deliveries, a dry run of a payload
//! (`POST /v1/hooks/{name}/test`) and the replay of a kept delivery against the current rules.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_core::hook::{Hook, Scheme};
use cigw_store::HookDeliveryRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiJson;
use crate::auth::{AuthState, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::hooks::rules::{self, Decision};
use crate::hooks::{deliveries, hook_principal, submission, verify};
use crate::intake::{Intake, TriggerAccepted, intake, validate};
use crate::state::AppState;

/// One configured hook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookView {
    /// Name: deliveries go to `POST /hooks/{name}`.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// `github`, `gitlab`, `standard-webhooks`, `hmac-sha256`, `bearer` or `none`.
    pub scheme: String,
    /// The rules' names, in order (the first match wins).
    pub rules: Vec<String>,
    /// Every target a rule may trigger.
    pub targets: Vec<String>,
    /// The header the delivery id is read from.
    pub delivery_header: Option<String>,
    /// How many deliveries keep their headers and body for replay.
    pub keep_deliveries: usize,
    /// Deliveries remembered now (within `retention.deliveries`).
    pub deliveries: u64,
    /// Of those, how many started a trigger.
    pub triggered: u64,
    /// When the latest arrived.
    pub last_received_at: Option<DateTime<Utc>>,
}

/// The configured hooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookList {
    /// By name.
    pub hooks: Vec<HookView>,
}

/// List the configured hooks with their recent delivery counts.
#[utoipa::path(get, path = "/v1/hooks", tag = "hooks", security(("bearer" = [])),
    responses((status = 200, body = HookList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_hooks(State(state): State<AppState>, principal: Principal) -> Result<Json<HookList>, ApiError> {
    principal.require_read()?;
    let stats = state.store.hook_delivery_stats(state.now()).await?;
    let hooks = state
        .settings
        .hooks
        .values()
        .map(|h| {
            let s = stats.iter().find(|s| s.hook == h.name);
            HookView {
                name: h.name.clone(),
                description: h.description.clone(),
                scheme: h.scheme.as_str().to_string(),
                rules: h.rules.iter().map(|r| r.name.clone()).collect(),
                targets: h.targets(),
                delivery_header: h.delivery_header.clone(),
                keep_deliveries: h.keep_deliveries,
                deliveries: s.map_or(0, |s| s.deliveries),
                triggered: s.map_or(0, |s| s.triggered),
                last_received_at: s.and_then(|s| s.last_received_at),
            }
        })
        .collect();
    Ok(Json(HookList { hooks }))
}

/// One remembered delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookDeliveryView {
    /// The delivery id (the sender's, or `cigw-…` when it gave none).
    pub delivery_id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// `triggered`, `not_matched`, `template_error` or `rejected`.
    pub outcome: String,
    /// The rule that matched.
    pub rule: Option<String>,
    /// The status it was answered with.
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    /// The trigger it started.
    pub trigger_id: Option<String>,
    /// Whether its headers and body are still kept (it can be replayed).
    pub replayable: bool,
}

impl From<&HookDeliveryRecord> for HookDeliveryView {
    fn from(d: &HookDeliveryRecord) -> Self {
        Self {
            delivery_id: d.delivery_id.clone(),
            received_at: d.received_at,
            outcome: d.outcome.clone(),
            rule: d.rule.clone(),
            status: d.status,
            trigger_id: d.trigger_id.clone(),
            replayable: d.kept,
        }
    }
}

/// A hook's remembered deliveries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookDeliveryList {
    /// Newest first.
    pub deliveries: Vec<HookDeliveryView>,
}

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HookDeliveriesQuery {
    /// At most this many (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn hook_named<'a>(state: &'a AppState, name: &str) -> Result<&'a Hook, ApiError> {
    state.settings.hooks.get(name).ok_or_else(|| ApiError::not_found(format!("no hook `{name}` is configured")))
}

/// List a hook's remembered deliveries (scope `admin`).
#[utoipa::path(get, path = "/v1/hooks/{name}/deliveries", tag = "hooks", security(("bearer" = [])),
    params(("name" = String, Path, description = "Hook name"), HookDeliveriesQuery),
    responses((status = 200, body = HookDeliveryList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(query): Query<HookDeliveriesQuery>,
) -> Result<Json<HookDeliveryList>, ApiError> {
    principal.require_admin()?;
    let hook = hook_named(&state, &name)?;
    let limit = query.limit.unwrap_or(50);
    let listed = state.store.list_hook_deliveries(&hook.name, state.now(), limit).await?;
    Ok(Json(HookDeliveryList { deliveries: listed.iter().map(HookDeliveryView::from).collect() }))
}

/// A dry run: headers and body of a delivery as the sender would send them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookTestRequest {
    /// Request headers (any case), e.g. `{"X-GitHub-Event": "push"}`.
    #[serde(default)]
    #[schema(value_type = HashMap<String, String>)]
    pub headers: BTreeMap<String, String>,
    /// The payload, as JSON.
    #[schema(value_type = Object)]
    pub body: Value,
    /// Check the signature (or, for `bearer`, the token) in `headers` too.
    #[serde(default)]
    pub verify: bool,
    /// The exact bytes that were signed, when checking a signature; without it the signature
    /// is checked over `body` written compactly (`{"a":1}`), which matches senders that sign
    /// compact JSON only.
    #[serde(default)]
    pub raw_body: Option<String>,
}

/// Why one rule did not match.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleMiss {
    /// The rule.
    pub rule: String,
    /// Its first failing condition.
    pub reason: String,
}

/// The result of checking the signature in a dry run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignatureCheck {
    /// Whether the delivery would be accepted.
    pub valid: bool,
    /// Why not.
    pub message: Option<String>,
}

/// What a delivery would do (a dry run or the dry run of a replay): nothing was stored or sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookEvaluation {
    /// The hook.
    pub hook: String,
    /// The delivery id the trigger would record.
    pub delivery_id: String,
    /// `would_trigger`, `not_matched`, `ping`, `template_error` or `invalid_request` (intake
    /// would refuse the request the rule makes).
    pub outcome: String,
    /// Whether a rule matched.
    pub matched: bool,
    /// The rule that matched.
    pub rule: Option<String>,
    /// Why no rule matched.
    pub reason: Option<String>,
    /// Why each rule before the match (every rule without one) did not match.
    pub rules: Vec<RuleMiss>,
    /// The exact trigger request (`POST /v1/triggers` body) that would be made.
    #[schema(value_type = Option<Object>)]
    pub request: Option<Value>,
    /// The error the delivery would be answered with (template error or refused request).
    pub error: Option<ErrorBody>,
    /// The signature check, when asked for.
    pub signature: Option<SignatureCheck>,
}

fn evaluation(
    state: &AppState,
    hook: &Hook,
    delivery_id: &str,
    decision: Decision,
    signature: Option<SignatureCheck>,
) -> HookEvaluation {
    let mut out = HookEvaluation {
        hook: hook.name.clone(),
        delivery_id: delivery_id.to_string(),
        outcome: String::new(),
        matched: false,
        rule: None,
        reason: None,
        rules: vec![],
        request: None,
        error: None,
        signature,
    };
    let misses = |m: &[cigw_core::hook::Miss]| -> Vec<RuleMiss> {
        m.iter().map(|m| RuleMiss { rule: m.rule.clone(), reason: m.reason.clone() }).collect()
    };
    match decision {
        Decision::Ping => out.outcome = "ping".into(),
        Decision::NotMatched { misses: m } => {
            out.outcome = "not_matched".into();
            out.reason = Some(rules::reason(&m));
            out.rules = misses(&m);
        }
        Decision::TemplateError { misses: m, error, .. } => {
            out.outcome = "template_error".into();
            out.matched = true;
            out.rule = Some(error.rule.clone());
            out.rules = misses(&m);
            out.error = Some(rules::template_error(&hook.name, &error).body());
        }
        Decision::Matched { rule, misses: m, request } => {
            out.matched = true;
            out.rule = Some(rule);
            out.rules = misses(&m);
            let checked = submission(hook, &request).and_then(|s| validate(state, &hook_principal(hook), &s.request));
            match checked {
                Ok(()) => out.outcome = "would_trigger".into(),
                Err(e) => {
                    out.outcome = "invalid_request".into();
                    out.error = Some(ApiError::from(e).body());
                }
            }
            out.request = Some(request);
        }
    }
    out
}

/// Dry-run a payload through a hook's rules and mapping (scope `admin`): which rule matches,
/// why the others do not, and the exact trigger request; nothing is stored or sent.
#[utoipa::path(post, path = "/v1/hooks/{name}/test", tag = "hooks", security(("bearer" = [])),
    params(("name" = String, Path, description = "Hook name")),
    request_body = HookTestRequest,
    responses((status = 200, body = HookEvaluation), (status = 404, body = ErrorBody)))]
pub async fn test_hook(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<std::sync::Arc<AuthState>>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<HookTestRequest>,
) -> Result<Json<HookEvaluation>, ApiError> {
    principal.require_admin()?;
    let hook = hook_named(&state, &name)?;
    let headers: Vec<(String, String)> = request.headers.into_iter().collect();
    let signature = match request.verify {
        false => None,
        true => Some(check_signature(&state, &auth, hook, &headers, request.raw_body, &request.body).await?),
    };
    let delivery_id = hook
        .delivery_header
        .as_deref()
        .and_then(|h| verify::header(&headers, h))
        .map_or_else(|| rules::GENERATED_ID.to_string(), str::to_string);
    let decision = rules::decide(hook, &headers, &request.body, &delivery_id);
    Ok(Json(evaluation(&state, hook, &delivery_id, decision, signature)))
}

async fn check_signature(
    state: &AppState,
    auth: &AuthState,
    hook: &Hook,
    headers: &[(String, String)],
    raw_body: Option<String>,
    body: &Value,
) -> Result<SignatureCheck, ApiError> {
    if hook.scheme == Scheme::Bearer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
                map.insert(k, v);
            }
        }
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.headers = map;
        let checked = match auth.authenticate(state, &parts).await {
            Ok(p) => p.require_any_trigger(),
            Err(e) => Err(e),
        };
        return Ok(match checked {
            Ok(()) => SignatureCheck { valid: true, message: None },
            Err(e) if e.status().is_server_error() => return Err(e),
            Err(e) => SignatureCheck { valid: false, message: Some(e.to_string()) },
        });
    }
    let bytes = raw_body.unwrap_or_else(|| body.to_string());
    Ok(match verify::verify(hook, headers, bytes.as_bytes(), state.now()) {
        Ok(()) => SignatureCheck { valid: true, message: None },
        Err(e) => SignatureCheck { valid: false, message: Some(verify::explain(hook, &e)) },
    })
}

/// `?dry_run=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Evaluate only: store and send nothing.
    pub dry_run: Option<bool>,
}

/// A replayed delivery's trigger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookReplayed {
    /// The hook.
    pub hook: String,
    /// The delivery replayed.
    pub delivery_id: String,
    /// The rule that matched under the current rules.
    pub rule: String,
    /// The new trigger and its runs.
    #[serde(flatten)]
    pub accepted: TriggerAccepted,
}

/// Re-evaluate a kept delivery against the hook's current rules (scope `admin`) and, unless
/// `dry_run`, trigger what they ask for (a new trigger, also when the delivery started one
/// before). 200 with the evaluation when nothing is triggered, 202 with the trigger otherwise.
#[utoipa::path(post, path = "/v1/hooks/{name}/deliveries/{delivery_id}/replay", tag = "hooks",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Hook name"),
        ("delivery_id" = String, Path, description = "Delivery id"), ReplayQuery),
    responses(
        (status = 200, body = HookEvaluation, description = "Dry run, or nothing to trigger"),
        (status = 202, body = HookReplayed, description = "Triggered under the current rules"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The delivery's body is no longer kept"),
        (status = 422, body = ErrorBody, description = "A template failed, or intake refused the request")))]
pub async fn replay_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, delivery_id)): Path<(String, String)>,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let hook = hook_named(&state, &name)?;
    let record = state
        .store
        .get_hook_delivery(&hook.name, &delivery_id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("hook `{name}` has no remembered delivery `{delivery_id}`")))?;
    let (Some(headers), Some(body)) = (&record.headers, &record.body) else {
        return Err(ApiError::conflict(
            "delivery_not_kept",
            format!(
                "delivery `{delivery_id}` is remembered but its body is no longer kept (hook `{name}` keeps its \
                 newest {} deliveries)",
                hook.keep_deliveries
            ),
        ));
    };
    let headers = deliveries::header_pairs(headers);
    let payload: Value = serde_json::from_str(body).map_err(ApiError::internal)?;
    let decision = rules::decide(hook, &headers, &payload, &delivery_id);
    if query.dry_run.unwrap_or(false) {
        return Ok(Json(evaluation(&state, hook, &delivery_id, decision, None)).into_response());
    }
    let (rule, mut request) = match decision {
        Decision::Matched { rule, request, .. } => (rule, request),
        Decision::TemplateError { error, .. } => return Err(rules::template_error(&hook.name, &error)),
        other => return Ok(Json(evaluation(&state, hook, &delivery_id, other, None)).into_response()),
    };
    request["labels"]["hook_replayed_by"] = Value::String(principal.name.clone());
    let submission = submission(hook, &request)?;
    let accepted = match intake(&state, submission, &hook_principal(hook), None).await {
        Ok(Intake::Created(accepted)) => accepted,
        Ok(Intake::Replayed(_)) => return Err(ApiError::internal("a replay without a key was replayed")),
        Err(e) => return Err(e.into()),
    };
    crate::metrics::record_hook_request(&hook.name, "replayed");
    tracing::info!(hook = %hook.name, delivery_id, rule, trigger_id = accepted.trigger_id, by = principal.name, "hook delivery replayed");
    let body = HookReplayed { hook: hook.name.clone(), delivery_id, rule, accepted };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
