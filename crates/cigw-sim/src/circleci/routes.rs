//! The HTTP surface: CircleCI's paths, auth, status codes and bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::model::{SimPipeline, SimProject, SimWorkflow, revision};
use super::{APPROVAL_PARAMETER, Shared, UndeclaredParameters};

type Shr = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let clock_source = shared.clone();
    Router::new()
        .route("/me", get(me))
        // `/project/{project-slug}/…` takes the slug as three segments or as one with `%2F`.
        .route("/project/{vcs}/pipeline", get(list_pipelines_one).post(trigger_one))
        // Other methods here are paths CircleCI does not have (e.g. `/pipeline/run` after a
        // one-segment `%2F` slug): 404, not 405.
        .route(
            "/project/{vcs}/{org}/{repo}",
            get(get_project).fallback(|| async { message(StatusCode::NOT_FOUND, "Not found.") }),
        )
        .route("/project/{vcs}/{org}/{repo}/pipeline", get(list_pipelines).post(trigger_classic))
        .route("/project/{vcs}/{org}/{repo}/pipeline/run", post(trigger_run))
        .route("/pipeline/{id}", get(get_pipeline))
        .route("/pipeline/{id}/workflow", get(list_workflows))
        .route("/workflow/{id}", get(get_workflow))
        .route("/workflow/{id}/job", get(list_jobs))
        .route("/workflow/{id}/cancel", post(cancel_workflow))
        .route("/workflow/{id}/rerun", post(rerun_workflow))
        .route("/workflow/{id}/approve/{request}", post(approve_job))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "Not found.") })
        .with_state(shared)
        .layer(axum::middleware::map_response(move |mut r: Response| {
            // CircleCI's clock is the simulated one, `Date` included.
            let now = clock_source.harness.clock().now();
            async move {
                let date = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                if let Ok(v) = HeaderValue::from_str(&date) {
                    r.headers_mut().insert(http::header::DATE, v);
                }
                r
            }
        }))
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({"message": text}))).into_response()
}

/// An error answer, small enough to pass around in `Result`s.
pub(crate) struct ApiError {
    status: StatusCode,
    text: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        message(self.status, &self.text)
    }
}

fn fail(status: StatusCode, text: &str) -> ApiError {
    ApiError { status, text: text.to_string() }
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Accept `Circle-Token`, `Authorization: Bearer`, basic auth with the token as user name, and
/// the deprecated `circle-token` query parameter.
fn authenticate(shared: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<(), ApiError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let token = header("circle-token").or_else(|| {
        let auth = header("authorization")?;
        if let Some(b) = auth.strip_prefix("Bearer ") {
            return Some(b.trim().to_string());
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.strip_prefix("Basic ")?.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        Some(text.split_once(':').map_or(text.clone(), |(u, _)| u.to_string()))
    });
    let token = token.or_else(|| query.get("circle-token").cloned());
    match token {
        None => Err(fail(StatusCode::UNAUTHORIZED, "You must log in first.")),
        Some(t) if shared.config.lock().tokens.contains(&t) => Ok(()),
        Some(_) => Err(fail(StatusCode::UNAUTHORIZED, "Invalid token provided.")),
    }
}

fn normalize_vcs(vcs: &str) -> &str {
    match vcs {
        "github" => "gh",
        "bitbucket" => "bb",
        other => other,
    }
}

fn find_project(shared: &Shared, slug: &str) -> Result<SimProject, ApiError> {
    let slug = match slug.split_once('/') {
        Some((vcs, rest)) => format!("{}/{rest}", normalize_vcs(vcs)),
        None => slug.to_string(),
    };
    shared
        .state
        .lock()
        .projects
        .iter()
        .find(|p| p.slug == slug)
        .cloned()
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "Project not found"))
}

fn page_of(items: Vec<Value>, query: &HashMap<String, String>, page_size: usize) -> Result<Value, ApiError> {
    let start = match query.get("page-token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "Invalid page-token."))?,
    };
    let size = page_size.max(1);
    let page: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len())
        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{}", start + size)));
    Ok(json!({"items": page, "next_page_token": next}))
}

async fn me(State(s): Shr, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    ok(StatusCode::OK, json!({"id": "b1c7b3a4-5d6e-4f70-8a9b-0c1d2e3f4a5b", "login": "sim-user", "name": "Sim User"}))
}

async fn get_project(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    match find_project(&s, &format!("{vcs}/{org}/{repo}")) {
        Ok(p) => ok(
            StatusCode::OK,
            json!({"id": p.id, "slug": p.slug, "name": repo, "organization_id": p.organization_id,
                   "organization_name": org, "organization_slug": format!("{vcs}/{org}"),
                   "vcs_info": {"vcs_url": format!("https://github.com/{org}/{repo}"), "provider": "GitHub",
                                "default_branch": p.default_branch}}),
        ),
        Err(r) => r.into_response(),
    }
}

async fn list_pipelines(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_pipelines_for(&s, &format!("{vcs}/{org}/{repo}"), &headers, &q)
}

async fn list_pipelines_one(
    State(s): Shr,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_pipelines_for(&s, &slug, &headers, &q)
}

fn list_pipelines_for(s: &Shared, slug: &str, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    if let Err(r) = authenticate(s, headers, q) {
        return r.into_response();
    }
    let project = match find_project(s, slug) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let branch = q.get("branch").filter(|b| !b.is_empty());
    let items: Vec<Value> = s
        .state
        .lock()
        .pipelines
        .iter()
        .rev()
        .filter(|p| p.project_slug == project.slug && p.created_at <= now)
        .filter(|p| branch.is_none_or(|b| p.branch.as_ref() == Some(b)))
        .map(|p| p.to_json(Some(&project), now, &cfg))
        .collect();
    page_of(items, q, cfg.page_size).map_or_else(IntoResponse::into_response, |v| ok(StatusCode::OK, v))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(fail(StatusCode::BAD_REQUEST, "Invalid request body.")),
    }
}

/// Check parameters against CircleCI's limits and the project's declared ones.
fn check_parameters(
    project: &SimProject,
    params: &Map<String, Value>,
    mode: UndeclaredParameters,
) -> Result<Vec<(String, String)>, ApiError> {
    if params.len() > 100 {
        return Err(fail(StatusCode::BAD_REQUEST, "Too many pipeline parameters: at most 100 are allowed."));
    }
    for (k, v) in params {
        if k.chars().count() > 128 {
            return Err(fail(StatusCode::BAD_REQUEST, "Pipeline parameter names must be at most 128 characters."));
        }
        match v {
            Value::String(s) if s.chars().count() > 512 => {
                return Err(fail(StatusCode::BAD_REQUEST, "Pipeline parameter values must be at most 512 characters."));
            }
            Value::String(_) | Value::Bool(_) => {}
            Value::Number(n) if n.is_i64() => {}
            _ => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "Pipeline parameters must be strings, integers or booleans.",
                ));
            }
        }
    }
    let unexpected: Vec<&str> = params.keys().filter(|k| !project.parameters.contains(k)).map(String::as_str).collect();
    if unexpected.is_empty() {
        return Ok(Vec::new());
    }
    let text = format!("Unexpected argument(s): {}", unexpected.join(", "));
    match mode {
        UndeclaredParameters::Reject => Err(fail(StatusCode::BAD_REQUEST, &text)),
        UndeclaredParameters::ErroredPipeline => Ok(vec![("config".to_string(), text)]),
    }
}

struct NewPipeline {
    branch: Option<String>,
    tag: Option<String>,
    parameters: Map<String, Value>,
    errors: Vec<(String, String)>,
    via_definition: bool,
}

/// Create the pipeline and its workflows (listed from `created_at + workflows_after`), and count
/// the build.
fn create_pipeline(s: &Shared, project: &SimProject, new: NewPipeline) -> SimPipeline {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let mut state = s.state.lock();
    let number = state.pipelines.iter().filter(|p| p.project_slug == project.slug).count() as u64 + 1;
    let pipeline = SimPipeline {
        id: uuid::Uuid::new_v4().to_string(),
        number,
        project_slug: project.slug.clone(),
        created_at: now,
        branch: new.branch,
        tag: new.tag,
        revision: revision(),
        parameters: new.parameters,
        errors: new.errors,
        via_definition: new.via_definition,
    };
    let ref_name = pipeline.branch.clone().or_else(|| pipeline.tag.clone()).unwrap_or_default();
    let key = pipeline.parameters.get("cigw_run_id").and_then(Value::as_str).map_or(ref_name.clone(), str::to_string);
    s.harness.builds().record(&key);
    let filtered_out = ref_name.starts_with(&cfg.no_workflow_prefix);
    if pipeline.errors.is_empty() && !filtered_out {
        let fails = ref_name.starts_with(&cfg.failing_prefix);
        let hold = pipeline.parameters.get(APPROVAL_PARAMETER) == Some(&Value::Bool(true));
        let appear = now + cigw_core::time::span(cfg.workflows_after);
        let mut names = vec![("build", false, false), ("test", fails, false)];
        if hold {
            names.push(("deploy", false, true));
        }
        for (name, fails, hold) in names {
            state.workflows.push(SimWorkflow {
                id: uuid::Uuid::new_v4().to_string(),
                pipeline_id: pipeline.id.clone(),
                pipeline_number: number,
                project_slug: project.slug.clone(),
                name: name.into(),
                created_at: appear,
                fails,
                hold,
                approval_request_id: hold.then(|| uuid::Uuid::new_v4().to_string()),
                approved_at: None,
                canceled_at: None,
                rerun_of: None,
                job_ids: vec![uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string()],
            });
        }
    }
    state.pipelines.push(pipeline.clone());
    pipeline
}

fn creation_json(p: &SimPipeline) -> Value {
    json!({"number": p.number, "state": "pending", "id": p.id, "created_at": super::model::ts(p.created_at)})
}

async fn trigger_classic(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    trigger_classic_for(&s, &format!("{vcs}/{org}/{repo}"), &headers, &q, &body)
}

async fn trigger_one(
    State(s): Shr,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    trigger_classic_for(&s, &slug, &headers, &q, &body)
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(fail(StatusCode::BAD_REQUEST, &format!("The {key} name must not be empty.")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(fail(StatusCode::BAD_REQUEST, &format!("The {key} must be a string."))),
    }
}

fn parameters_field(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match body.get("parameters") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(fail(StatusCode::BAD_REQUEST, "Pipeline parameters must be an object.")),
    }
}

fn trigger_classic_for(
    s: &Shared,
    slug: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    if let Err(r) = authenticate(s, headers, q) {
        return r.into_response();
    }
    let project = match find_project(s, slug) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    if project.slug.starts_with("circleci/") {
        return message(
            StatusCode::BAD_REQUEST,
            "This endpoint does not support triggering pipelines integrated with GitLab or GitHub App; use the \
             Trigger Pipeline Run API.",
        );
    }
    let result = (|| {
        let body = parse_body(body)?;
        let branch = string_field(&body, "branch")?;
        let tag = string_field(&body, "tag")?;
        if branch.is_some() && tag.is_some() {
            return Err(fail(StatusCode::BAD_REQUEST, "Only one of branch or tag may be given."));
        }
        let parameters = parameters_field(&body)?;
        let mode = s.config.lock().undeclared_parameters;
        let errors = check_parameters(&project, &parameters, mode)?;
        let branch = if tag.is_none() { branch.or_else(|| Some(project.default_branch.clone())) } else { None };
        Ok(NewPipeline { branch, tag, parameters, errors, via_definition: false })
    })();
    match result {
        Ok(new) => ok(StatusCode::CREATED, creation_json(&create_pipeline(s, &project, new))),
        Err(r) => r.into_response(),
    }
}

fn ref_object(body: &Map<String, Value>, key: &str) -> Result<(Option<String>, Option<String>), ApiError> {
    match body.get(key) {
        None => Ok((None, None)),
        Some(Value::Object(m)) => {
            if m.keys().any(|k| k != "branch" && k != "tag") {
                return Err(fail(StatusCode::BAD_REQUEST, "Unexpected request body provided."));
            }
            Ok((string_field(m, "branch")?, string_field(m, "tag")?))
        }
        Some(_) => Err(fail(StatusCode::BAD_REQUEST, "Unexpected request body provided.")),
    }
}

async fn trigger_run(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    if !["github", "gh", "bitbucket", "bb", "circleci"].contains(&vcs.as_str()) {
        return message(StatusCode::NOT_FOUND, "Not found.");
    }
    let project = match find_project(&s, &format!("{vcs}/{org}/{repo}")) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let result = (|| {
        let body = parse_body(&body)?;
        if body.keys().any(|k| !["definition_id", "config", "checkout", "parameters"].contains(&k.as_str())) {
            return Err(fail(StatusCode::BAD_REQUEST, "Unexpected request body provided."));
        }
        let definition = body.get("definition_id").and_then(Value::as_str).unwrap_or_default();
        if !project.definition_ids.iter().any(|d| d == definition) {
            return Err(fail(StatusCode::NOT_FOUND, "Pipeline definition not found."));
        }
        let (config_branch, config_tag) = ref_object(&body, "config")?;
        let (branch, tag) = ref_object(&body, "checkout")?;
        if branch.is_some() && tag.is_some() || config_branch.is_some() && config_tag.is_some() {
            return Err(fail(StatusCode::BAD_REQUEST, "Only one of branch or tag may be given."));
        }
        let parameters = parameters_field(&body)?;
        let mode = s.config.lock().undeclared_parameters;
        let errors = check_parameters(&project, &parameters, mode)?;
        let branch = if tag.is_none() { branch.or_else(|| Some(project.default_branch.clone())) } else { None };
        Ok(NewPipeline { branch, tag, parameters, errors, via_definition: true })
    })();
    let new = match result {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let skip_prefix = s.config.lock().ci_skip_prefix.clone();
    if new.branch.as_deref().is_some_and(|b| b.starts_with(&skip_prefix)) {
        return ok(StatusCode::OK, json!({"message": "Ignoring pipeline due to CI skip in the commit"}));
    }
    let p = create_pipeline(&s, &project, new);
    ok(StatusCode::CREATED, creation_json(&p))
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn with_pipeline<T>(s: &Shared, id: &str, f: impl FnOnce(&SimPipeline, Option<&SimProject>) -> T) -> Option<T> {
    let state = s.state.lock();
    let p = state.pipelines.iter().find(|p| p.id == id && is_uuid(id))?;
    let project = state.projects.iter().find(|pr| pr.slug == p.project_slug);
    Some(f(p, project))
}

async fn get_pipeline(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    with_pipeline(&s, &id, |p, pr| ok(StatusCode::OK, p.to_json(pr, now, &cfg)))
        .unwrap_or_else(|| message(StatusCode::NOT_FOUND, "Pipeline not found."))
}

fn visible(w: &SimWorkflow, now: DateTime<Utc>) -> bool {
    w.created_at <= now
}

async fn list_workflows(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    if with_pipeline(&s, &id, |_, _| ()).is_none() {
        return message(StatusCode::NOT_FOUND, "Pipeline not found.");
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    // Newest first, like the API.
    let items: Vec<Value> = s
        .state
        .lock()
        .workflows
        .iter()
        .rev()
        .filter(|w| w.pipeline_id == id && visible(w, now))
        .map(|w| w.to_json(now, &cfg))
        .collect();
    page_of(items, &q, cfg.page_size).map_or_else(IntoResponse::into_response, |v| ok(StatusCode::OK, v))
}

fn find_workflow(s: &Shared, id: &str, now: DateTime<Utc>) -> Result<SimWorkflow, ApiError> {
    s.state
        .lock()
        .workflows
        .iter()
        .find(|w| w.id == id && visible(w, now))
        .cloned()
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "Workflow not found."))
}

async fn get_workflow(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    find_workflow(&s, &id, now).map_or_else(IntoResponse::into_response, |w| ok(StatusCode::OK, w.to_json(now, &cfg)))
}

async fn list_jobs(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    match find_workflow(&s, &id, now) {
        Ok(w) => page_of(w.jobs_json(now, &cfg), &q, cfg.page_size)
            .map_or_else(IntoResponse::into_response, |v| ok(StatusCode::OK, v)),
        Err(r) => r.into_response(),
    }
}

fn update_workflow(s: &Shared, id: &str, f: impl FnOnce(&mut SimWorkflow)) {
    if let Some(w) = s.state.lock().workflows.iter_mut().find(|w| w.id == id) {
        f(w);
    }
}

async fn cancel_workflow(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = match find_workflow(&s, &id, now) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    if w.phase(now, &cfg).stopped_at.is_none() {
        update_workflow(&s, &id, |w| w.canceled_at = Some(now));
    }
    message(StatusCode::ACCEPTED, "Accepted.")
}

async fn rerun_workflow(
    State(s): Shr,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let old = match find_workflow(&s, &id, now) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let from_failed = body.get("from_failed").and_then(Value::as_bool).unwrap_or(false);
    if from_failed && body.contains_key("jobs") {
        return message(StatusCode::BAD_REQUEST, "from_failed and jobs cannot be given together.");
    }
    if (body.contains_key("enable_ssh") || body.contains_key("sparse_tree")) && !body.contains_key("jobs") {
        return message(StatusCode::BAD_REQUEST, "enable_ssh and sparse_tree require jobs.");
    }
    let phase = old.phase(now, &cfg);
    if phase.stopped_at.is_none() {
        return message(StatusCode::BAD_REQUEST, "Workflow is still running and cannot be rerun.");
    }
    if from_failed && !matches!(phase.status, "failed" | "error") {
        return message(StatusCode::BAD_REQUEST, "Workflow has no failed jobs to rerun.");
    }
    let new = SimWorkflow {
        id: uuid::Uuid::new_v4().to_string(),
        created_at: now,
        approval_request_id: old.hold.then(|| uuid::Uuid::new_v4().to_string()),
        approved_at: None,
        canceled_at: None,
        rerun_of: Some(old.id.clone()),
        job_ids: vec![uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string()],
        ..old
    };
    let new_id = new.id.clone();
    s.state.lock().workflows.push(new);
    ok(StatusCode::ACCEPTED, json!({"workflow_id": new_id}))
}

async fn approve_job(
    State(s): Shr,
    Path((id, request)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&s, &headers, &q) {
        return r.into_response();
    }
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = match find_workflow(&s, &id, now) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    if w.approval_request_id.as_deref() != Some(request.as_str()) {
        return message(StatusCode::NOT_FOUND, "Approval request not found.");
    }
    if w.phase(now, &cfg).status != "on_hold" {
        return message(StatusCode::BAD_REQUEST, "Job is not waiting for approval.");
    }
    update_workflow(&s, &id, |w| w.approved_at = Some(now));
    message(StatusCode::ACCEPTED, "Accepted.")
}
