//! `/v1/triggers`: intake (validate everything, store in one transaction, answer 202), read and
//! cancel.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_core::catalog::ConfiguredTarget;
use cigw_core::git_ref::RefProblem;
use cigw_core::params::{self, MASK, MAX_PARAMETERS, MAX_VALUE_CHARS};
use cigw_core::{GitRef, Parameters};
use cigw_store::{CreateOutcome, IdempotencyKey, NewRun, NewTrigger, StoreError, TriggerRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::api::views::RunView;
use crate::api::{ApiJson, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, Links};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, FieldProblem, MAX_DETAILS};
use crate::state::AppState;

/// Most targets one trigger may fan out to.
pub const MAX_TARGETS: usize = 50;
/// Most problems named in the `message` of a 422 (all kept ones are in `details`).
const MESSAGE_PROBLEMS: usize = 3;
/// Most labels on one trigger.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 1024;

/// A request's parameter map as read: at most [`MAX_PARAMETERS`] entries are kept, further ones
/// are skipped unread and only counted, so memory never grows with the map.
#[derive(Debug, Default)]
pub struct ParamMap {
    entries: BTreeMap<String, Value>,
    skipped: usize,
}

impl ParamMap {
    /// How many entries the request gave.
    pub fn len(&self) -> usize {
        self.entries.len() + self.skipped
    }

    /// Whether it gave none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept entries (all of them when [`ParamMap::len`] is at most [`MAX_PARAMETERS`]).
    pub fn entries(&self) -> &BTreeMap<String, Value> {
        &self.entries
    }
}

impl<'de> Deserialize<'de> for ParamMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = ParamMap;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of parameter names to values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ParamMap, A::Error> {
                use serde::de::IgnoredAny;
                let mut out = ParamMap::default();
                loop {
                    if out.entries.len() < MAX_PARAMETERS {
                        let Some(name) = map.next_key::<String>()? else { break };
                        let value = map.next_value()?;
                        out.entries.insert(name, value);
                    } else {
                        let Some(IgnoredAny) = map.next_key::<IgnoredAny>()? else { break };
                        map.next_value::<IgnoredAny>()?;
                        out.skipped += 1;
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Bounded)
    }
}

/// A trigger request: build these targets at this ref with these parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Target names (1 to 50, no duplicates).
    #[schema(min_items = 1, max_items = 50)]
    pub targets: Vec<String>,
    /// What to build: `branch` or `tag` (neither → each target's default branch), optionally `sha`.
    #[serde(rename = "ref", default)]
    #[schema(value_type = Option<RefRequest>)]
    pub git_ref: Option<GitRef>,
    /// Parameters for every target, checked against each target's declarations: at most 100,
    /// names at most 128 characters, string values at most 512 characters.
    #[serde(default)]
    #[schema(value_type = HashMap<String, ParameterInput>)]
    pub parameters: ParamMap,
    /// Per-target ref and parameters (keys: requested targets); override parameters are merged
    /// over the top-level ones (at most 100 after merging).
    #[serde(default)]
    pub overrides: BTreeMap<String, TargetOverride>,
    /// Free-form string labels: at most 64, keys 1 to 128 characters, values at most 1024.
    #[serde(default)]
    #[schema(value_type = HashMap<String, String>)]
    pub labels: BTreeMap<String, String>,
}

/// What one target builds differently from the rest of the request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    /// Replaces the request's ref for this target.
    #[serde(rename = "ref", default)]
    #[schema(value_type = Option<RefRequest>)]
    pub git_ref: Option<GitRef>,
    /// Merged over the request's parameters for this target (same limits).
    #[serde(default)]
    #[schema(value_type = HashMap<String, ParameterInput>)]
    pub parameters: ParamMap,
}

/// What to build, as a request gives it: `branch` or `tag` (not both; neither → the target's
/// default branch), optionally a commit `sha`. Branch and tag names follow git's
/// `check-ref-format` rules (no `..`, `@{`, `//`, no part starting with `.` or ending with
/// `.lock`, not starting with `-` or `/`, not ending with `/` or `.`), are at most 255 bytes and
/// hold no whitespace, control or invisible formatting characters (bidi overrides, zero-width).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the request for OpenAPI; the handler reads it as a `GitRef`
pub(crate) struct RefRequest {
    /// Branch name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF~^:?*\[\\]+$"
    )]
    branch: Option<String>,
    /// Tag name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF~^:?*\[\\]+$"
    )]
    tag: Option<String>,
    /// Commit sha: 7 to 40 hexadecimal digits.
    #[schema(pattern = "^[0-9a-fA-F]{7,40}$")]
    sha: Option<String>,
}

/// A requested parameter value: a string (at most 512 characters), a number or a boolean,
/// checked and coerced against the parameter's declared type.
#[derive(Debug)]
pub struct ParameterInput;

impl PartialSchema for ParameterInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_VALUE_CHARS)))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some("A string (at most 512 characters), a number or a boolean, coerced to the declared type"))
            .into()
    }
}

impl ToSchema for ParameterInput {}

/// Links of a run in a trigger answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummaryLinks {
    /// The run.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its events.
    pub events: String,
}

/// A run created by a trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub provider: String,
    /// State (`pending` right after intake).
    #[schema(value_type = cigw_core::RunState)]
    pub state: String,
    /// Related resources.
    pub links: RunSummaryLinks,
}

/// The answer to an accepted trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerAccepted {
    /// Trigger id.
    pub trigger_id: String,
    /// One run per target.
    pub runs: Vec<RunSummary>,
}

/// A stored trigger with its runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerView {
    /// Trigger id.
    pub id: String,
    /// Where it came from: `api`, `ui`, `hook:<name>`, `chain:<name>`, ….
    pub source: String,
    /// Who or what asked for it.
    pub requested_by: String,
    /// The request as received, secret parameter values masked.
    #[schema(value_type = Object)]
    pub request: Value,
    /// Labels.
    #[schema(value_type = Object)]
    pub labels: Value,
    /// Intake time.
    pub created_at: DateTime<Utc>,
    /// Its runs, oldest first (reruns included).
    pub runs: Vec<RunView>,
}

impl TriggerView {
    fn new(trigger: &TriggerRecord, links: &Links) -> Self {
        Self {
            id: trigger.id.clone(),
            source: trigger.source.clone(),
            requested_by: trigger.requested_by.clone(),
            request: trigger.request.clone(),
            labels: trigger.labels.clone(),
            created_at: trigger.created_at,
            runs: trigger.runs.iter().map(|r| RunView::new(r, links)).collect(),
        }
    }
}

/// Why a request cannot be accepted, before the codes are folded into one answer. Keeps the
/// first [`MAX_DETAILS`] problems and counts the rest, so its size never follows the request's.
#[derive(Default)]
struct Problems {
    items: Vec<FieldProblem>,
    omitted: usize,
    codes: BTreeSet<&'static str>,
}

impl Problems {
    fn push(&mut self, code: &'static str, field: impl Into<String>, message: impl Into<String>) {
        self.codes.insert(code);
        if self.items.len() < MAX_DETAILS {
            self.items.push(FieldProblem::new(field, message));
        } else {
            self.omitted += 1;
        }
    }

    /// One 422 for every problem: `unknown_target` when a target is unknown, the shared code
    /// when all problems are of one kind, else `validation_failed`. The message names the first
    /// few problems and how many there are.
    fn into_error(self) -> Option<ApiError> {
        let code = match self.codes.len() {
            0 => return None,
            _ if self.codes.contains("unknown_target") => "unknown_target",
            1 => self.codes.first().copied().unwrap_or("validation_failed"),
            _ => "validation_failed",
        };
        let total = self.items.len() + self.omitted;
        let message = if total == 1 {
            format!("`{}`: {}", self.items[0].field, self.items[0].message)
        } else {
            let shown: Vec<String> =
                self.items.iter().take(MESSAGE_PROBLEMS).map(|p| format!("`{}`: {}", p.field, p.message)).collect();
            let rest = total - shown.len();
            let more = if rest > 0 { format!("; and {rest} more") } else { String::new() };
            format!("{total} problems: {}{more}", shown.join("; "))
        };
        Some(ApiError::unprocessable_with_omitted(code, message, self.items, self.omitted))
    }
}

/// Parse and check the `Idempotency-Key` header: 1 to 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let bad = || ApiError::BadRequest {
        code: "invalid_idempotency_key",
        message: "`Idempotency-Key` must be 1 to 255 printable ASCII characters".into(),
        details: vec![FieldProblem::new("Idempotency-Key", "expected 1 to 255 printable ASCII characters")],
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// A digest of the body as parsed JSON (object keys sorted), so equal bodies match whatever
/// their key order and the stored fingerprint holds no parameter value, secret or not.
fn fingerprint(body: &Value) -> Value {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(body, &mut text);
    serde_json::json!({ "sha256": hex::encode(Sha256::digest(text.as_bytes())) })
}

/// The body to store with the trigger: secret parameter values replaced by `***`.
fn masked_request(body: &Value, secret_in: impl Fn(Option<&str>, &str) -> bool) -> Value {
    let mut masked = body.clone();
    if let Some(Value::Object(params)) = masked.get_mut("parameters") {
        for (name, value) in params.iter_mut() {
            if secret_in(None, name) {
                *value = MASK.into();
            }
        }
    }
    if let Some(Value::Object(overrides)) = masked.get_mut("overrides") {
        for (target, o) in overrides.iter_mut() {
            if let Some(Value::Object(params)) = o.get_mut("parameters") {
                for (name, value) in params.iter_mut() {
                    if secret_in(Some(target), name) {
                        *value = MASK.into();
                    }
                }
            }
        }
    }
    masked
}

/// One validated run to create.
struct Planned<'a> {
    target: &'a ConfiguredTarget,
    git_ref: GitRef,
    parameters: Parameters,
}

fn check_request<'a>(
    state: &'a AppState,
    principal: &Principal,
    req: &TriggerRequest,
) -> Result<Vec<Planned<'a>>, ApiError> {
    let mut problems = Problems::default();
    if req.targets.is_empty() {
        problems.push("invalid_targets", "targets", "give at least one target");
    }
    if req.targets.len() > MAX_TARGETS {
        // Nothing else is looked at: the work (and the answer) must not grow with the list.
        problems.push(
            "invalid_targets",
            "targets",
            format!("at most {MAX_TARGETS} targets per trigger, got {}", req.targets.len()),
        );
        return Err(problems.into_error().unwrap_or_else(|| ApiError::internal("no problem recorded")));
    }
    let mut seen = BTreeSet::new();
    for (i, name) in req.targets.iter().enumerate() {
        if !seen.insert(name.as_str()) {
            problems.push("invalid_targets", format!("targets[{i}]"), format!("target `{name}` is listed twice"));
        }
    }
    // The scope is checked before anything else about the targets: a token learns nothing about
    // targets it may not trigger.
    let missing: Vec<String> =
        seen.iter().filter(|t| !principal.may_trigger(t)).map(|t| format!("trigger:{t}")).collect();
    match missing.len() {
        0 => {}
        1 => return Err(ApiError::MissingScope { scope: missing[0].clone() }),
        _ => {
            return Err(ApiError::Forbidden {
                code: "missing_scope",
                message: format!(
                    "this token lacks the scopes {}",
                    missing.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    for name in req.overrides.keys().filter(|k| !seen.contains(k.as_str())) {
        problems.push("invalid_overrides", format!("overrides.{name}"), "not one of the requested targets");
    }
    if req.labels.len() > MAX_LABELS {
        problems.push("invalid_labels", "labels", format!("at most {MAX_LABELS} labels, got {}", req.labels.len()));
    }
    for (key, value) in &req.labels {
        if key.is_empty() || key.chars().count() > MAX_LABEL_KEY {
            problems.push(
                "invalid_labels",
                format!("labels.{key}"),
                format!("keys must be 1 to {MAX_LABEL_KEY} characters"),
            );
        }
        if value.chars().count() > MAX_LABEL_VALUE {
            problems.push(
                "invalid_labels",
                format!("labels.{key}"),
                format!("values must be at most {MAX_LABEL_VALUE} characters"),
            );
        }
    }
    let top_ref = req.git_ref.clone().unwrap_or_default();
    let top_ref_ok = match top_ref.check() {
        Ok(()) => true,
        Err(problem) => {
            problems.push("invalid_ref", ref_field("ref", &problem), problem.message);
            false
        }
    };
    // An oversized parameter map is refused as a whole, once, before any target looks at it.
    let mut params_ok = true;
    if req.parameters.len() > MAX_PARAMETERS {
        problems.push("invalid_parameters", "parameters", params::too_many_message(req.parameters.len()));
        params_ok = false;
    }
    for (name, o) in req.overrides.iter().filter(|(_, o)| o.parameters.len() > MAX_PARAMETERS) {
        problems.push(
            "invalid_parameters",
            format!("overrides.{name}.parameters"),
            params::too_many_message(o.parameters.len()),
        );
        params_ok = false;
    }

    let mut planned = Vec::new();
    let mut unique = BTreeSet::new();
    for (i, name) in req.targets.iter().enumerate() {
        if !unique.insert(name.as_str()) {
            continue;
        }
        let Some(target) = state.target(name) else {
            let known: Vec<&str> =
                state.catalog.targets.keys().map(String::as_str).filter(|t| principal.may_trigger(t)).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            problems.push(
                "unknown_target",
                format!("targets[{i}]"),
                format!("unknown target `{name}` (known targets: {known})"),
            );
            continue;
        };
        let over = req.overrides.get(name);
        let (git_ref, ref_field) = match over.and_then(|o| o.git_ref.clone()) {
            Some(r) => {
                let field = format!("overrides.{name}.ref");
                if let Err(problem) = r.check() {
                    problems.push("invalid_ref", ref_field(&field, &problem), problem.message);
                    continue;
                }
                (r, field)
            }
            None if top_ref_ok => (top_ref.clone(), "ref".to_string()),
            None => continue,
        };
        let git_ref = git_ref.or_default_branch(&target.spec.default_branch);
        if let Err(message) = target.target.check_ref(&git_ref) {
            problems.push("unsupported_ref", ref_field, format!("target `{name}`: {message}"));
        }
        if !params_ok {
            continue;
        }
        let mut requested = req.parameters.entries().clone();
        if let Some(o) = over {
            requested.extend(o.parameters.entries().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        match params::validate(&target.spec.parameters, &requested) {
            Ok(parameters) => planned.push(Planned { target, git_ref, parameters }),
            Err(errors) if errors.too_many.is_some() => {
                let count = errors.too_many.unwrap_or_default();
                problems.push(
                    "invalid_parameters",
                    format!("overrides.{name}.parameters"),
                    format!("target `{name}`: {} (request and override merged)", params::too_many_message(count)),
                );
            }
            Err(errors) => {
                for p in errors.problems {
                    let field = if over.is_some_and(|o| o.parameters.entries().contains_key(&p.name)) {
                        format!("overrides.{name}.parameters.{}", p.name)
                    } else {
                        format!("parameters.{}", p.name)
                    };
                    problems.push("invalid_parameters", field, format!("target `{name}`: {}", p.message));
                }
            }
        }
    }
    match problems.into_error() {
        Some(e) => Err(e),
        None => Ok(planned),
    }
}

/// The field of a ref problem under `prefix` (`ref`, `overrides.<target>.ref`): `ref.branch`, ….
fn ref_field(prefix: &str, problem: &RefProblem) -> String {
    match problem.field {
        Some(f) => format!("{prefix}.{f}"),
        None => prefix.to_string(),
    }
}

/// Trigger targets: validate everything, store the trigger and one pending run per target in one
/// transaction, wake the dispatcher and answer 202.
#[utoipa::path(post, path = "/v1/triggers", tag = "triggers", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1 to 255 printable characters; a repeat with an equal body replays the first answer")),
    request_body = TriggerRequest,
    responses(
        (status = 202, body = TriggerAccepted, description = "Stored; the runs will be dispatched",
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, body = ErrorBody, description = "Malformed JSON or Idempotency-Key"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "A scope is missing"),
        (status = 409, body = ErrorBody, description = "The Idempotency-Key was used with another body"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Unknown target, unsupported ref, bad parameters, …"),
        (status = 429, body = ErrorBody)))]
pub async fn create_trigger(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<ApiJson<Box<RawValue>>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require_any_trigger()?;
    let key = idempotency_key(&headers)?;
    // The body is checked as JSON, kept as text and read straight into the request, whose
    // parameter maps keep at most `MAX_PARAMETERS` entries: memory follows the limits, not
    // the body. The whole body is parsed as a value only once the request is valid.
    let ApiJson(raw) = body?;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let req: TriggerRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        let problem = FieldProblem::new(field, e.inner().to_string());
        ApiError::unprocessable("invalid_body", format!("`{}`: {}", problem.field, problem.message), vec![problem])
    })?;
    let planned = check_request(&state, &principal, &req)?;
    let body: Value = serde_json::from_str(raw.get()).map_err(ApiError::internal)?;
    drop(raw);

    let now = state.now();
    let links = Links::new(&state);
    let trigger_id = uuid::Uuid::now_v7().to_string();
    let runs: Vec<NewRun> = planned
        .into_iter()
        .map(|p| NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            target: p.target.spec.name.clone(),
            provider: p.target.spec.provider,
            account: p.target.spec.account.clone(),
            git_ref: p.git_ref,
            parameters: p.parameters,
            chain_parent: None,
            rerun_of: None,
            rerun_failed_only: false,
            dispatch_at: now + cigw_core::time::span(state.settings.timings.dispatch_delay),
        })
        .collect();
    let accepted = TriggerAccepted {
        trigger_id: trigger_id.clone(),
        runs: runs
            .iter()
            .map(|r| RunSummary {
                id: r.id.clone(),
                target: r.target.clone(),
                provider: r.provider.to_string(),
                state: cigw_core::RunState::Pending.to_string(),
                links: RunSummaryLinks { self_: links.run(&r.id), events: links.run_events(&r.id) },
            })
            .collect(),
    };
    let accepted_json = serde_json::to_value(&accepted).map_err(ApiError::internal)?;
    let is_secret = |target: &str, name: &str| {
        state.target(target).is_some_and(|t| t.spec.parameters.iter().any(|p| p.name == name && p.secret))
    };
    let request = masked_request(&body, |target, name| match target {
        Some(t) => is_secret(t, name),
        None => req.targets.iter().any(|t| is_secret(t, name)),
    });
    let idempotency = match key {
        Some(key) => Some(IdempotencyKey {
            scope: principal.token_id.clone(),
            key,
            fingerprint: fingerprint(&body),
            response: accepted_json,
            expires_at: now
                + chrono::Duration::from_std(state.settings.retention.idempotency_keys)
                    .unwrap_or(chrono::Duration::days(1)),
        }),
        None => None,
    };
    let outcome = state
        .store
        .create_trigger(NewTrigger {
            id: trigger_id,
            source: "api".into(),
            requested_by: principal.name.clone(),
            request,
            labels: serde_json::to_value(&req.labels).map_err(ApiError::internal)?,
            created_at: now,
            runs,
            idempotency,
            chain_firing: None,
        })
        .await?;
    match outcome {
        CreateOutcome::Created(_) => {
            state.wake_engine();
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        CreateOutcome::Replayed { response, .. } => {
            let mut resp = (StatusCode::ACCEPTED, Json(response)).into_response();
            resp.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(resp)
        }
        CreateOutcome::KeyConflict { trigger_id } => Err(ApiError::conflict(
            "idempotency_key_reused",
            format!("this Idempotency-Key was already used for trigger {trigger_id} with a different body"),
        )),
        CreateOutcome::ChainAlreadyFired { trigger_id } => {
            Err(ApiError::internal(format!("API intake got a chain outcome for trigger {trigger_id}")))
        }
    }
}

/// Middleware of `POST /v1/triggers`: counts each request by its answer as `api` intake.
pub async fn count_api_intake(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    crate::metrics::record_intake("api", intake_outcome(&response));
    response
}

fn intake_outcome(response: &Response) -> &'static str {
    let status = response.status();
    match status {
        _ if status.is_success() && response.headers().contains_key(IDEMPOTENT_REPLAYED) => "replayed",
        _ if status.is_success() => "accepted",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ if status.is_client_error() => "rejected",
        _ => "error",
    }
}

/// Read a trigger with its runs.
#[utoipa::path(get, path = "/v1/triggers/{id}", tag = "triggers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 200, body = TriggerView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_trigger(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TriggerView>, ApiError> {
    principal.require_read()?;
    let trigger = state.store.get_trigger(&id).await?;
    Ok(Json(TriggerView::new(&trigger, &Links::new(&state))))
}

/// Cancel every run of a trigger that has not finished.
#[utoipa::path(post, path = "/v1/triggers/{id}/cancel", tag = "triggers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 202, body = TriggerView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Every run has finished")))]
pub async fn cancel_trigger(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    principal.require_cancel()?;
    let trigger = state.store.get_trigger(&id).await?;
    let open: Vec<&str> = trigger.runs.iter().filter(|r| !r.state.is_terminal()).map(|r| r.id.as_str()).collect();
    if open.is_empty() {
        return Err(ApiError::conflict("trigger_finished", format!("every run of trigger {id} has already finished")));
    }
    let now = state.now();
    for run_id in open {
        match state.store.request_cancel(run_id, now).await {
            // The run ended between the read and the cancel: nothing left to cancel.
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    state.wake_engine();
    let trigger = state.store.get_trigger(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(TriggerView::new(&trigger, &Links::new(&state)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_key_order_only() {
        let a = serde_json::json!({"targets": ["a"], "parameters": {"x": 1, "y": "s"}});
        let b = serde_json::json!({"parameters": {"y": "s", "x": 1}, "targets": ["a"]});
        let c = serde_json::json!({"parameters": {"y": "s", "x": 2}, "targets": ["a"]});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert!(!fingerprint(&a).to_string().contains("\"s\""));
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc-123 x"));
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("abc-123 x"));
        for bad in [String::new(), "k".repeat(256), "tab\there".into()] {
            h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&bad).unwrap());
            assert_eq!(idempotency_key(&h).unwrap_err().code(), "invalid_idempotency_key", "{bad:?}");
        }
    }

    #[test]
    fn parameter_maps_keep_at_most_the_cap_and_count_the_rest() {
        let text = format!(
            "{{{}}}",
            (0..95_000).map(|i| format!("\"{i:x}\":[{i},{{\"deep\":\"x\"}}]")).collect::<Vec<_>>().join(",")
        );
        let map: ParamMap = serde_json::from_str(&text).unwrap();
        assert_eq!(map.len(), 95_000);
        assert_eq!(map.entries().len(), MAX_PARAMETERS);
        let small: ParamMap = serde_json::from_str(r#"{"a": 1, "b": "x"}"#).unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(small.entries()["b"], "x");
        assert!(serde_json::from_str::<ParamMap>("[1]").is_err());
    }

    #[test]
    fn secrets_are_masked_in_the_stored_request() {
        let body = serde_json::json!({
            "targets": ["a"],
            "parameters": {"token": "s3cret", "env": "qa"},
            "overrides": {"a": {"parameters": {"token": "other"}}}
        });
        let masked = masked_request(&body, |_, name| name == "token");
        assert_eq!(masked["parameters"]["token"], "***");
        assert_eq!(masked["parameters"]["env"], "qa");
        assert_eq!(masked["overrides"]["a"]["parameters"]["token"], "***");
    }
}
