//! The HTTP surface: CircleCI's paths, auth, status codes and bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::error::{ApiError, message};
use super::model::{SimPipeline, SimProject, SimWorkflow, revision};
use super::{APPROVAL_PARAMETER, Shared, UndeclaredParameters};

type Shr = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let clock_source = shared.clone();
    Router::new()
        .route("/me", get(me))
        // `/project/{project-slug}/…` takes the slug as three segments or as one with `%2F`.
        .route("/project/{vcs}/pipeline", get(list_pipelines).post(trigger_classic))
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

fn ok(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The project slug of a `/project/{project-slug}/…` path, given as three segments or as one
/// with `%2F`.
struct ProjectSlug(String);

impl<S: Send + Sync> FromRequestParts<S> for ProjectSlug {
    type Rejection = PathRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PathRejection> {
        let Path(segments) = Path::<Vec<String>>::from_request_parts(parts, state).await?;
        Ok(Self(segments.join("/")))
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
        .ok_or_else(|| ApiError::not_found("Project not found"))
}

fn page_of(items: Vec<Value>, query: &HashMap<String, String>, page_size: usize) -> Result<Value, ApiError> {
    let start = match query.get("page-token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .ok_or_else(|| ApiError::bad_request("Invalid page-token."))?,
    };
    let size = page_size.max(1);
    let page: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len())
        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{}", start + size)));
    Ok(json!({"items": page, "next_page_token": next}))
}

async fn me(_: Caller) -> Response {
    ok(StatusCode::OK, json!({"id": "b1c7b3a4-5d6e-4f70-8a9b-0c1d2e3f4a5b", "login": "sim-user", "name": "Sim User"}))
}

async fn get_project(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    _: Caller,
) -> Result<Response, ApiError> {
    let p = find_project(&s, &format!("{vcs}/{org}/{repo}"))?;
    Ok(ok(
        StatusCode::OK,
        json!({"id": p.id, "slug": p.slug, "name": repo, "organization_id": p.organization_id,
               "organization_name": org, "organization_slug": format!("{vcs}/{org}"),
               "vcs_info": {"vcs_url": format!("https://github.com/{org}/{repo}"), "provider": "GitHub",
                            "default_branch": p.default_branch}}),
    ))
}

async fn list_pipelines(
    State(s): Shr,
    ProjectSlug(slug): ProjectSlug,
    Query(q): Query<HashMap<String, String>>,
    _: Caller,
) -> Result<Response, ApiError> {
    let project = find_project(&s, &slug)?;
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
    Ok(ok(StatusCode::OK, page_of(items, &q, cfg.page_size)?))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(ApiError::bad_request("Invalid request body.")),
    }
}

/// Check parameters against CircleCI's limits and the project's declared ones.
fn check_parameters(
    project: &SimProject,
    params: &Map<String, Value>,
    mode: UndeclaredParameters,
) -> Result<Vec<(String, String)>, ApiError> {
    if params.len() > 100 {
        return Err(ApiError::bad_request("Too many pipeline parameters: at most 100 are allowed."));
    }
    for (k, v) in params {
        if k.chars().count() > 128 {
            return Err(ApiError::bad_request("Pipeline parameter names must be at most 128 characters."));
        }
        match v {
            Value::String(s) if s.chars().count() > 512 => {
                return Err(ApiError::bad_request("Pipeline parameter values must be at most 512 characters."));
            }
            Value::String(_) | Value::Bool(_) => {}
            Value::Number(n) if n.is_i64() => {}
            _ => {
                return Err(ApiError::bad_request("Pipeline parameters must be strings, integers or booleans."));
            }
        }
    }
    let unexpected: Vec<&str> = params.keys().filter(|k| !project.parameters.contains(k)).map(String::as_str).collect();
    if unexpected.is_empty() {
        return Ok(Vec::new());
    }
    let text = format!("Unexpected argument(s): {}", unexpected.join(", "));
    match mode {
        UndeclaredParameters::Reject => Err(ApiError::bad_request(&text)),
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

impl NewPipeline {
    /// The body's parameters, checked, and the ref to build: the given tag, else the given
    /// branch, else the project's default branch.
    fn checked(
        s: &Shared,
        project: &SimProject,
        body: &Map<String, Value>,
        branch: Option<String>,
        tag: Option<String>,
        via_definition: bool,
    ) -> Result<Self, ApiError> {
        let parameters = parameters_field(body)?;
        let mode = s.config.lock().undeclared_parameters;
        let errors = check_parameters(project, &parameters, mode)?;
        let branch = if tag.is_none() { branch.or_else(|| Some(project.default_branch.clone())) } else { None };
        Ok(Self { branch, tag, parameters, errors, via_definition })
    }
}

/// Create the pipeline and its workflows (listed from `created_at + workflows_after`), and count
/// the build.
fn create_pipeline(s: &Shared, project: &SimProject, new: NewPipeline) -> SimPipeline {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let mut state = s.state.lock();
    let number = state.next_number(&project.slug);
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
            state.add_workflow(SimWorkflow {
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
    ProjectSlug(slug): ProjectSlug,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller?;
    let project = find_project(&s, &slug)?;
    if project.slug.starts_with("circleci/") {
        return Err(ApiError::bad_request(
            "This endpoint does not support triggering pipelines integrated with GitLab or GitHub App; use the \
             Trigger Pipeline Run API.",
        ));
    }
    let body = parse_body(&body)?;
    let branch = string_field(&body, "branch")?;
    let tag = string_field(&body, "tag")?;
    if branch.is_some() && tag.is_some() {
        return Err(ApiError::bad_request("Only one of branch or tag may be given."));
    }
    let new = NewPipeline::checked(&s, &project, &body, branch, tag, false)?;
    Ok(ok(StatusCode::CREATED, creation_json(&create_pipeline(&s, &project, new))))
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(ApiError::bad_request(&format!("The {key} name must not be empty.")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(&format!("The {key} must be a string."))),
    }
}

fn parameters_field(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match body.get("parameters") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad_request("Pipeline parameters must be an object.")),
    }
}

fn ref_object(body: &Map<String, Value>, key: &str) -> Result<(Option<String>, Option<String>), ApiError> {
    match body.get(key) {
        None => Ok((None, None)),
        Some(Value::Object(m)) => {
            if m.keys().any(|k| k != "branch" && k != "tag") {
                return Err(ApiError::bad_request("Unexpected request body provided."));
            }
            Ok((string_field(m, "branch")?, string_field(m, "tag")?))
        }
        Some(_) => Err(ApiError::bad_request("Unexpected request body provided.")),
    }
}

async fn trigger_run(
    State(s): Shr,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller?;
    if !["github", "gh", "bitbucket", "bb", "circleci"].contains(&vcs.as_str()) {
        return Err(ApiError::not_found("Not found."));
    }
    let project = find_project(&s, &format!("{vcs}/{org}/{repo}"))?;
    let body = parse_body(&body)?;
    if body.keys().any(|k| !["definition_id", "config", "checkout", "parameters"].contains(&k.as_str())) {
        return Err(ApiError::bad_request("Unexpected request body provided."));
    }
    let definition = body.get("definition_id").and_then(Value::as_str).unwrap_or_default();
    if !project.definition_ids.iter().any(|d| d == definition) {
        return Err(ApiError::not_found("Pipeline definition not found."));
    }
    let (config_branch, config_tag) = ref_object(&body, "config")?;
    let (branch, tag) = ref_object(&body, "checkout")?;
    if branch.is_some() && tag.is_some() || config_branch.is_some() && config_tag.is_some() {
        return Err(ApiError::bad_request("Only one of branch or tag may be given."));
    }
    let new = NewPipeline::checked(&s, &project, &body, branch, tag, true)?;
    let skip_prefix = s.config.lock().ci_skip_prefix.clone();
    if new.branch.as_deref().is_some_and(|b| b.starts_with(&skip_prefix)) {
        return Ok(ok(StatusCode::OK, json!({"message": "Ignoring pipeline due to CI skip in the commit"})));
    }
    Ok(ok(StatusCode::CREATED, creation_json(&create_pipeline(&s, &project, new))))
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// A pipeline and its project, or CircleCI's 404.
fn find_pipeline(s: &Shared, id: &str) -> Result<(SimPipeline, Option<SimProject>), ApiError> {
    let state = s.state.lock();
    let p =
        state.pipelines.by_id(id).filter(|_| is_uuid(id)).ok_or_else(|| ApiError::not_found("Pipeline not found."))?;
    let project = state.projects.iter().find(|pr| pr.slug == p.project_slug);
    Ok((p.clone(), project.cloned()))
}

async fn get_pipeline(State(s): Shr, Path(id): Path<String>, _: Caller) -> Result<Response, ApiError> {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let (p, project) = find_pipeline(&s, &id)?;
    Ok(ok(StatusCode::OK, p.to_json(project.as_ref(), now, &cfg)))
}

fn visible(w: &SimWorkflow, now: DateTime<Utc>) -> bool {
    w.created_at <= now
}

async fn list_workflows(
    State(s): Shr,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    _: Caller,
) -> Result<Response, ApiError> {
    find_pipeline(&s, &id)?;
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    // Newest first, like the API.
    let items: Vec<Value> =
        s.state.lock().workflows_of(&id).rev().filter(|w| visible(w, now)).map(|w| w.to_json(now, &cfg)).collect();
    Ok(ok(StatusCode::OK, page_of(items, &q, cfg.page_size)?))
}

/// A workflow listed by now, or CircleCI's 404.
fn find_workflow(s: &Shared, id: &str, now: DateTime<Utc>) -> Result<SimWorkflow, ApiError> {
    s.state
        .lock()
        .workflows
        .by_id(id)
        .filter(|w| visible(w, now))
        .cloned()
        .ok_or_else(|| ApiError::not_found("Workflow not found."))
}

async fn get_workflow(State(s): Shr, Path(id): Path<String>, _: Caller) -> Result<Response, ApiError> {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = find_workflow(&s, &id, now)?;
    Ok(ok(StatusCode::OK, w.to_json(now, &cfg)))
}

async fn list_jobs(
    State(s): Shr,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    _: Caller,
) -> Result<Response, ApiError> {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = find_workflow(&s, &id, now)?;
    Ok(ok(StatusCode::OK, page_of(w.jobs_json(now, &cfg), &q, cfg.page_size)?))
}

fn update_workflow(s: &Shared, id: &str, f: impl FnOnce(&mut SimWorkflow)) {
    if let Some(w) = s.state.lock().workflows.by_id_mut(id) {
        f(w);
    }
}

async fn cancel_workflow(State(s): Shr, Path(id): Path<String>, _: Caller) -> Result<Response, ApiError> {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = find_workflow(&s, &id, now)?;
    if w.phase(now, &cfg).stopped_at.is_none() {
        update_workflow(&s, &id, |w| w.canceled_at = Some(now));
    }
    Ok(message(StatusCode::ACCEPTED, "Accepted."))
}

async fn rerun_workflow(
    State(s): Shr,
    Path(id): Path<String>,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller?;
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let old = find_workflow(&s, &id, now)?;
    let body = parse_body(&body)?;
    let from_failed = body.get("from_failed").and_then(Value::as_bool).unwrap_or(false);
    if from_failed && body.contains_key("jobs") {
        return Err(ApiError::bad_request("from_failed and jobs cannot be given together."));
    }
    if (body.contains_key("enable_ssh") || body.contains_key("sparse_tree")) && !body.contains_key("jobs") {
        return Err(ApiError::bad_request("enable_ssh and sparse_tree require jobs."));
    }
    let phase = old.phase(now, &cfg);
    if phase.stopped_at.is_none() {
        return Err(ApiError::bad_request("Workflow is still running and cannot be rerun."));
    }
    if from_failed && !matches!(phase.status, "failed" | "error") {
        return Err(ApiError::bad_request("Workflow has no failed jobs to rerun."));
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
    s.state.lock().add_workflow(new);
    Ok(ok(StatusCode::ACCEPTED, json!({"workflow_id": new_id})))
}

async fn approve_job(
    State(s): Shr,
    Path((id, request)): Path<(String, String)>,
    _: Caller,
) -> Result<Response, ApiError> {
    let now = s.harness.clock().now();
    let cfg = s.config.lock().clone();
    let w = find_workflow(&s, &id, now)?;
    if w.approval_request_id.as_deref() != Some(request.as_str()) {
        return Err(ApiError::not_found("Approval request not found."));
    }
    if w.phase(now, &cfg).status != "on_hold" {
        return Err(ApiError::bad_request("Job is not waiting for approval."));
    }
    update_workflow(&s, &id, |w| w.approved_at = Some(now));
    Ok(message(StatusCode::ACCEPTED, "Accepted."))
}
