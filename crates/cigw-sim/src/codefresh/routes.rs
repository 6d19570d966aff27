//! The HTTP surface of the Codefresh simulator.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::model::{FINAL, SimBuild, object_id};
use super::{Shared, SimPipeline, State as SimState};

/// The annotation carrying the gateway run id.
const RUN_ID_ANNOTATION: &str = "cigw_run_id";

type SharedState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/user", get(user))
        .route("/pipelines/run/{name}", post(run))
        .route("/pipelines/{name}", get(get_pipeline))
        .route("/builds/rebuild/{id}", get(rebuild))
        .route("/builds/{id}", get(get_build).post(build_by_service))
        .route("/progress/{id}", get(get_progress).delete(terminate))
        .route("/workflow", get(list))
        .route("/workflow/{id}/pending-approval/{decision}", get(approve))
        .route("/annotations", get(annotations))
        .route_layer(middleware::from_extractor_with_state::<Caller, _>(shared.clone()))
        .with_state(shared);
    Router::new().nest("/api", api).fallback(|| async { route_not_found() })
}

fn route_not_found() -> ApiError {
    ApiError::not_found("NOT_FOUND_ERROR", "Route not found")
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

/// A pipeline by name or id, or Codefresh's 404.
fn find_pipeline<'a>(state: &'a SimState, name_or_id: &str) -> Result<&'a SimPipeline, ApiError> {
    state
        .pipelines
        .iter()
        .find(|p| p.name == name_or_id || p.id == name_or_id)
        .ok_or_else(|| pipeline_not_found(name_or_id))
}

fn pipeline_not_found(name: &str) -> ApiError {
    ApiError::not_found("PIPELINE_NOT_FOUND_ERROR", &format!("Could not find pipeline {name}"))
}

/// Where build `id` is in `state.builds`, or Codefresh's 404.
fn build_index(state: &SimState, id: &str) -> Result<usize, ApiError> {
    state
        .builds
        .position_of(id)
        .ok_or_else(|| ApiError::not_found("BUILD_NOT_FOUND_ERROR", &format!("Could not find build {id}")))
}

/// Where the build of progress `id` is in `state.builds`, or Codefresh's 404.
fn progress_index(state: &SimState, id: &str) -> Result<usize, ApiError> {
    state
        .builds
        .iter()
        .position(|b| b.progress == id)
        .ok_or_else(|| ApiError::not_found("PROGRESS_NOT_FOUND_ERROR", &format!("Could not find progress {id}")))
}

fn build_id_answer(id: &str) -> Response {
    let mut r = json_text(StatusCode::OK, Value::String(id.to_string()).to_string());
    if let Ok(v) = HeaderValue::from_str(&format!("/api/builds/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Variables as an array of `{key, value[, encrypted]}` or as an object map.
fn variables(body: &serde_json::Map<String, Value>) -> Vec<Value> {
    match body.get("variables") {
        Some(Value::Array(items)) => items.iter().filter(|v| v.get("key").is_some()).cloned().collect(),
        Some(Value::Object(map)) => {
            map.iter().map(|(k, v)| json!({"key": k, "value": text(v).unwrap_or_default()})).collect()
        }
        _ => Vec::new(),
    }
}

/// Annotations as an object map or an array of `{key, value}`.
fn annotations_of(body: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    match body.get("annotations") {
        Some(Value::Object(map)) => map.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect(),
        Some(Value::Array(items)) => {
            items.iter().filter_map(|a| Some((a.get("key")?.as_str()?.to_string(), text(a.get("value")?)?))).collect()
        }
        _ => BTreeMap::new(),
    }
}

struct NewBuild {
    pipeline_id: String,
    pipeline_name: String,
    branch: String,
    sha: String,
    variables: Vec<Value>,
    options: Value,
    trigger_name: Option<String>,
    annotations: BTreeMap<String, String>,
    req_id: Option<String>,
    rebuild_of: Option<String>,
}

fn create(shared: &Shared, state: &mut SimState, new: NewBuild) -> String {
    let now = shared.now();
    let config = shared.config.lock().clone();
    state.admit(&config, now);
    let id = object_id(now);
    let mut progress = object_id(now);
    while progress == id {
        progress = object_id(now);
    }
    let build = SimBuild {
        fails: config.failing_branches.contains(&new.branch),
        needs_approval: config.approval_branches.contains(&new.branch),
        id: id.clone(),
        progress,
        pipeline_id: new.pipeline_id,
        pipeline_name: new.pipeline_name,
        branch: new.branch,
        sha: new.sha,
        variables: new.variables,
        options: new.options,
        trigger_name: new.trigger_name,
        annotations: new.annotations,
        req_id: new.req_id.clone(),
        created: now,
        admitted: None,
        decision: None,
        terminate_requested: None,
        rebuild_of: new.rebuild_of,
    };
    state.builds.push(build);
    state.admit(&config, now);
    if let Some(r) = new.req_id {
        state.by_req_id.entry(r).or_insert_with(|| id.clone());
    }
    id
}

async fn user() -> Response {
    axum::Json(json!({
        "_id": "5f0c0ffee0123456789a0001",
        "userName": "sim-user",
        "email": "sim-user@example.invalid",
        "activeAccountName": "sim-account",
        "roles": ["User"],
        "account": [{"name": "sim-account", "_id": "5f0c0ffee0123456789a0002", "id": "5f0c0ffee0123456789a0002",
                     "runtimeEnvironment": "system/default"}],
    }))
    .into_response()
}

async fn get_pipeline(State(shared): SharedState, Path(name): Path<String>) -> Result<Response, ApiError> {
    let state = shared.state.lock();
    let p = find_pipeline(&state, &name)?;
    let created = p.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let project = p.name.split_once('/').map(|(a, _)| a).unwrap_or_default();
    Ok(axum::Json(json!({
        "version": "1.0",
        "kind": "pipeline",
        "metadata": {"id": p.id, "name": p.name, "project": project, "accountId": "5f0c0ffee0123456789a0002",
                     "created_at": created, "updated_at": created, "labels": {"tags": []}},
        "spec": {"triggers": [], "variables": [], "steps": {}},
    }))
    .into_response())
}

async fn run(
    State(shared): SharedState,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let dedupe = shared.config.lock().dedupe_req_id;
    let mut state = shared.state.lock();
    let p = find_pipeline(&state, &name)?.clone();
    let req_id = query.get("reqId").filter(|r| !r.is_empty()).cloned();
    if dedupe && let Some(existing) = req_id.as_ref().and_then(|r| state.by_req_id.get(r)) {
        return Ok(build_id_answer(existing));
    }
    let annotations = annotations_of(&body);
    let branch = body.get("branch").and_then(Value::as_str).unwrap_or("master").to_string();
    let key = req_id
        .clone()
        .or_else(|| annotations.get(RUN_ID_ANNOTATION).cloned())
        .unwrap_or_else(|| format!("{}:{branch}", p.name));
    let id = create(
        &shared,
        &mut state,
        NewBuild {
            pipeline_id: p.id,
            pipeline_name: p.name,
            sha: body.get("sha").and_then(Value::as_str).unwrap_or_default().to_string(),
            branch,
            variables: variables(&body),
            options: body.get("options").cloned().unwrap_or_else(|| json!({})),
            trigger_name: body.get("trigger").and_then(Value::as_str).map(str::to_string),
            annotations,
            req_id,
            rebuild_of: None,
        },
    );
    drop(state);
    shared.harness.builds().record(&key);
    Ok(build_id_answer(&id))
}

async fn build_by_service(
    State(shared): SharedState,
    Path(service_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let mut state = shared.state.lock();
    // By id only: the service endpoint does not take names.
    let p =
        state.pipelines.iter().find(|p| p.id == service_id).cloned().ok_or_else(|| pipeline_not_found(&service_id))?;
    let branch = body.get("branch").and_then(Value::as_str).unwrap_or("master").to_string();
    let key = format!("{service_id}:{branch}");
    let nocache = body.get("buildFlags").and_then(|f| f.get("nocache")).and_then(Value::as_bool).unwrap_or(false);
    let id = create(
        &shared,
        &mut state,
        NewBuild {
            pipeline_id: p.id,
            pipeline_name: p.name,
            sha: body.get("sha").and_then(Value::as_str).unwrap_or_default().to_string(),
            branch,
            variables: variables(&body),
            options: json!({"noCache": nocache}),
            trigger_name: None,
            annotations: BTreeMap::new(),
            req_id: None,
            rebuild_of: None,
        },
    );
    drop(state);
    shared.harness.builds().record(&key);
    Ok(build_id_answer(&id))
}

async fn get_build(State(shared): SharedState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (now, config, state) = shared.observe();
    let b = &state.builds[build_index(&state, &id)?];
    Ok(axum::Json(b.to_json(&config, now)).into_response())
}

async fn rebuild(State(shared): SharedState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut state = shared.state.lock();
    let original = state.builds[build_index(&state, &id)?].clone();
    let new_id = create(
        &shared,
        &mut state,
        NewBuild {
            pipeline_id: original.pipeline_id,
            pipeline_name: original.pipeline_name,
            branch: original.branch,
            sha: original.sha,
            variables: original.variables,
            options: original.options,
            trigger_name: original.trigger_name,
            annotations: BTreeMap::new(),
            req_id: None,
            rebuild_of: Some(id.clone()),
        },
    );
    drop(state);
    shared.harness.builds().record(&format!("rebuild:{id}"));
    Ok(build_id_answer(&new_id))
}

async fn get_progress(State(shared): SharedState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (now, config, state) = shared.observe();
    let b = &state.builds[progress_index(&state, &id)?];
    Ok(axum::Json(b.progress_json(&config, now)).into_response())
}

async fn terminate(State(shared): SharedState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (now, config, mut state) = shared.observe();
    let i = progress_index(&state, &id)?;
    let b = &mut state.builds[i];
    if b.terminate_requested.is_none() && !FINAL.contains(&b.observe(&config, now).status) {
        b.terminate_requested = Some(now);
    }
    let answer = b.progress_json(&config, now);
    state.admit(&config, now);
    Ok(axum::Json(answer).into_response())
}

async fn approve(
    State(shared): SharedState,
    Path((id, decision)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let approve = match decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(route_not_found()),
    };
    let (now, config, mut state) = shared.observe();
    let i = build_index(&state, &id)?;
    let b = &mut state.builds[i];
    if b.observe(&config, now).status != "pending-approval" {
        return Err(ApiError::bad_request(&format!("Build {id} is not pending approval")));
    }
    b.decision = Some((now, approve));
    Ok(axum::Json(json!({})).into_response())
}

/// `startDate`/`endDate`: `YYYY-MM-DD` (a whole UTC day) or an RFC 3339 time.
fn parse_bound(text: &str, end: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let day = if end { day.succ_opt()? } else { day };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

async fn list(
    State(shared): SharedState,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let values = |key: &str| -> Vec<String> {
        query
            .iter()
            .filter(|(k, _)| k == key || k.strip_suffix("[]") == Some(key))
            .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let one = |key: &str| values(key).into_iter().next();
    let bad = |m: &str| Err(ApiError::bad_request(m));
    let config = shared.config.lock().clone();
    let limit = match one("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) => l.clamp(1, config.max_page_size.max(1)),
        Some(Err(_)) => return bad("limit must be an integer"),
    };
    let page = match one("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        _ => return bad("page must be an integer from 1"),
    };
    let start = match one("startDate").map(|t| parse_bound(&t, false)) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return bad("startDate must be YYYY-MM-DD or an ISO date"),
    };
    let end = match one("endDate").map(|t| parse_bound(&t, true)) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return bad("endDate must be YYYY-MM-DD or an ISO date"),
    };
    let (pipelines, branches, revisions, statuses) =
        (values("pipeline"), values("branchName"), values("revision"), values("status"));
    let reset = one("paginationReset").as_deref() == Some("true");

    let now = shared.now();
    let mut state = shared.state.lock();
    state.admit(&config, now);
    let asked = headers.get("x-pagination-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (session, as_of) = match asked {
        Some(s) if !reset && state.sessions.contains_key(&s) => {
            let at = state.sessions[&s];
            (s, at)
        }
        Some(s) => {
            state.sessions.insert(s.clone(), now);
            (s, now)
        }
        None => {
            let s = uuid::Uuid::new_v4().simple().to_string();
            state.sessions.insert(s.clone(), now);
            (s, now)
        }
    };
    let matching: Vec<Value> = state
        .builds
        .iter()
        .rev()
        .filter(|b| b.created <= as_of)
        .filter(|b| pipelines.is_empty() || pipelines.contains(&b.pipeline_id))
        .filter(|b| branches.is_empty() || branches.contains(&b.branch))
        .filter(|b| revisions.is_empty() || revisions.contains(&b.sha))
        .filter(|b| start.is_none_or(|s| b.created >= s))
        .filter(|b| end.is_none_or(|e| b.created < e))
        .map(|b| b.to_json(&config, now))
        .filter(|j| statuses.is_empty() || statuses.iter().any(|s| j["status"] == s.as_str()))
        .collect();
    let total = matching.len();
    let pages = total.div_ceil(limit).max(1);
    let docs: Vec<Value> = matching.into_iter().skip((page - 1) * limit).take(limit).collect();
    let next_page = if page < pages { json!(page + 1) } else { Value::Null };
    let mut r = axum::Json(json!({
        "workflows": {"docs": docs, "total": total, "limit": limit, "page": page, "pages": pages},
        "pagination": {"sessionId": session, "nextPage": next_page},
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&session) {
        r.headers_mut().insert("x-pagination-session-id", v);
    }
    Ok(r)
}

async fn annotations(State(shared): SharedState, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let now = shared.now();
    let state = shared.state.lock();
    let entity_type = query.get("entityType").map(String::as_str).unwrap_or_default();
    let entity_id = query.get("entityId").map(String::as_str).unwrap_or_default();
    let key = query.get("key");
    let found: Vec<Value> = match entity_type {
        "build" | "workflow" => state
            .builds
            .iter()
            .filter(|b| b.id == entity_id)
            .flat_map(|b| {
                b.annotations.iter().filter(|(k, _)| key.is_none_or(|want| want == *k)).map(|(k, v)| {
                    json!({"_id": object_id(now), "accountId": "5f0c0ffee0123456789a0002",
                           "entityId": b.id, "entityType": "build", "key": k, "value": v, "__v": 0})
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    axum::Json(Value::Array(found)).into_response()
}
