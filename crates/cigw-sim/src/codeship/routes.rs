//! The HTTP surface of the Codeship simulator.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CodeshipSim;
use super::auth::{Caller, login};
use super::error::ApiError;
use super::model::{SimBuild, SimProject, SimProjectType, State, View, ts};

const DEFAULT_PER_PAGE: u64 = 30;
const MAX_PER_PAGE: u64 = 50;

pub(crate) fn router(sim: CodeshipSim) -> Router {
    let builds = "/v2/organizations/{org}/projects/{project}/builds";
    Router::new()
        .route("/v2/auth", post(login))
        .route("/v2/organizations/{org}/projects", get(list_projects))
        .route("/v2/organizations/{org}/projects/{project}", get(get_project))
        .route(builds, get(list_builds).post(create_build))
        .route(&format!("{builds}/{{build}}"), get(get_build))
        .route(&format!("{builds}/{{build}}/stop"), post(stop_build))
        .route(&format!("{builds}/{{build}}/restart"), post(restart_build))
        .route(&format!("{builds}/{{build}}/pipelines"), get(build_pipelines))
        .route(&format!("{builds}/{{build}}/services"), get(build_services))
        .route(&format!("{builds}/{{build}}/steps"), get(build_steps))
        .with_state(sim)
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
    per_page: Option<String>,
}

impl PageQuery {
    fn resolve(&self) -> (u64, u64) {
        let page = self.page.as_deref().and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
        let per_page = self
            .per_page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(DEFAULT_PER_PAGE)
            .min(MAX_PER_PAGE);
        (page, per_page)
    }
}

/// One page of `items` with the body fields and the `Link` header.
fn paged(key: &str, items: Vec<Value>, query: &PageQuery, link_base: &str) -> Response {
    let (page, per_page) = query.resolve();
    let total = items.len() as u64;
    let last = total.div_ceil(per_page).max(1);
    let start = ((page - 1) * per_page) as usize;
    let slice: Vec<Value> = items.into_iter().skip(start).take(per_page as usize).collect();
    let link = |p: u64, rel: &str| format!("<{link_base}?page={p}&per_page={per_page}>; rel=\"{rel}\"");
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link((page - 1).min(last), "prev"));
    }
    let mut response =
        axum::Json(json!({ key: slice, "page": page, "per_page": per_page, "total": total })).into_response();
    if !links.is_empty()
        && let Ok(v) = HeaderValue::from_str(&links.join(", "))
    {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

async fn list_projects(
    AxumState(sim): AxumState<CodeshipSim>,
    Path(org): Path<String>,
    Query(query): Query<PageQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "project.read")?;
    let items = sim.state.lock().projects.values().map(|p| p.to_json()).collect();
    let base = format!("{}/v2/organizations/{org}/projects", base_url(&headers));
    Ok(paged("projects", items, &query, &base))
}

async fn get_project(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((_org, project)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&sim, "project.read")?;
    let state = sim.state.lock();
    Ok(axum::Json(json!({"project": find_project(&state, &project)?.to_json()})).into_response())
}

/// A project of the organization, or Codeship's 404.
fn find_project<'s>(state: &'s State, project: &str) -> Result<&'s SimProject, ApiError> {
    state.projects.get(project).ok_or_else(|| ApiError::not_found("project not found"))
}

/// Where build `build` of `project` is in `state.builds`, or Codeship's 404.
fn build_index(state: &State, project: &str, build: &str) -> Result<usize, ApiError> {
    state
        .builds
        .position_of(build)
        .filter(|&at| state.builds[at].project_uuid == project)
        .ok_or_else(|| ApiError::not_found("build not found"))
}

async fn list_builds(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((org, project)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.read")?;
    let now = sim.harness.clock().now();
    let state = sim.state.lock();
    let kind = find_project(&state, &project)?.project_type;
    let base = base_url(&headers);
    // Newest first, by when each build was created (a Basic restart does not move it).
    let listing = sim.harness.faults().listing();
    let mut builds: Vec<&SimBuild> = state
        .builds
        .iter()
        .rev()
        .filter(|b| b.project_uuid == project && listing.shows(b.runs[0].created_at, now))
        .collect();
    builds.sort_by_key(|b| std::cmp::Reverse(b.runs[0].created_at));
    let items = builds.into_iter().map(|b| b.to_json(&b.view(&state.config, kind, now), kind, &base)).collect();
    Ok(paged("builds", items, &query, &format!("{base}/v2/organizations/{org}/projects/{project}/builds")))
}

async fn get_build(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((_org, project, build)): Path<(String, String, String)>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.read")?;
    let now = sim.harness.clock().now();
    let state = sim.state.lock();
    let kind = find_project(&state, &project)?.project_type;
    let b = &state.builds[build_index(&state, &project, &build)?];
    let json = b.to_json(&b.view(&state.config, kind, now), kind, &base_url(&headers));
    Ok(axum::Json(json!({ "build": json })).into_response())
}

#[derive(Debug, Deserialize)]
struct CreateBuildBody {
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    commit_sha: Option<String>,
}

/// Start one more run of `index` (a Basic restart) if its latest run has finished.
fn restart_in_place(sim: &CodeshipSim, state: &mut State, index: usize, now: DateTime<Utc>) {
    let view = state.builds[index].view(&state.config, SimProjectType::Basic, now);
    if view.is_final() {
        state.builds[index].runs.push(super::model::BuildRun { created_at: now, stopped_at: None });
        sim.harness.builds().record(&state.builds[index].key);
    }
}

async fn create_build(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((_org, project)): Path<(String, String)>,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller?.require(&sim, "build.write")?;
    let now = sim.harness.clock().now();
    let mut state = sim.state.lock();
    let (kind, project_id) = find_project(&state, &project).map(|p| (p.project_type, p.id))?;
    let request: CreateBuildBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBuildBody { git_ref: None, commit_sha: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))?
    };
    let Some(git_ref) = request.git_ref.filter(|r| !r.trim().is_empty()) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "ref is required"));
    };
    // Codeship answers 202 to any ref, but only `heads/<branch>` builds anything.
    let Some(branch) = git_ref.strip_prefix("heads/").filter(|b| !b.is_empty()).map(str::to_string) else {
        return Ok(accepted());
    };
    let sha = request.commit_sha.filter(|s| !s.is_empty());
    if kind == SimProjectType::Basic
        && let Some(sha) = &sha
        && let Some(index) = state.builds.iter().position(|b| b.project_uuid == project && &b.sha == sha)
    {
        // An already-built sha on Basic has the effect of a restart of that build.
        restart_in_place(&sim, &mut state, index, now);
        return Ok(accepted());
    }
    let explicit = sha.is_some();
    let sha = match sha {
        Some(s) => s,
        None => state
            .branch_heads
            .entry(format!("{project}/{branch}"))
            .or_insert_with(|| format!("{:040x}", rand::random::<u128>()))
            .clone(),
    };
    let mut build = SimBuild::new(&project, project_id, &branch, &sha, now);
    build.key = if explicit { sha.clone() } else { git_ref.clone() };
    sim.harness.builds().record(&build.key);
    state.builds.push(build);
    Ok(accepted())
}

async fn stop_build(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((_org, project, build)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.write")?;
    let now = sim.harness.clock().now();
    let mut state = sim.state.lock();
    let kind = find_project(&state, &project)?.project_type;
    let index = build_index(&state, &project, &build)?;
    let view = state.builds[index].view(&state.config, kind, now);
    if !view.is_final()
        && let Some(run) = state.builds[index].runs.last_mut()
    {
        run.stopped_at = Some(now);
    }
    Ok(accepted())
}

async fn restart_build(
    AxumState(sim): AxumState<CodeshipSim>,
    Path((_org, project, build)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.write")?;
    let now = sim.harness.clock().now();
    let mut state = sim.state.lock();
    let (kind, project_id) = find_project(&state, &project).map(|p| (p.project_type, p.id))?;
    let index = build_index(&state, &project, &build)?;
    // Restarting an unfinished build is ignored, and still answers 202.
    match kind {
        SimProjectType::Basic => restart_in_place(&sim, &mut state, index, now),
        SimProjectType::Pro => {
            let old = state.builds[index].clone();
            if old.view(&state.config, kind, now).is_final() {
                let mut new = SimBuild::new(&project, project_id, &old.branch, &old.sha, now);
                new.key = old.key.clone();
                sim.harness.builds().record(&new.key);
                state.builds.push(new);
            }
        }
    }
    Ok(accepted())
}

/// The detail endpoints: data for the matching project type, an empty page for the other.
fn detail(
    sim: &CodeshipSim,
    headers: &HeaderMap,
    (org, project, build): (String, String, String),
    query: &PageQuery,
    key: &str,
    make: impl Fn(&SimBuild, &View, SimProjectType) -> Option<Value>,
) -> Result<Response, ApiError> {
    let now = sim.harness.clock().now();
    let state = sim.state.lock();
    let kind = find_project(&state, &project)?.project_type;
    let b = &state.builds[build_index(&state, &project, &build)?];
    let item = make(b, &b.view(&state.config, kind, now), kind);
    let base = format!("{}/v2/organizations/{org}/projects/{project}/builds/{build}/{key}", base_url(headers));
    Ok(paged(key, item.into_iter().collect(), query, &base))
}

fn step_status(view: &View) -> &'static str {
    view.status
}

async fn build_pipelines(
    AxumState(sim): AxumState<CodeshipSim>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<PageQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.read")?;
    detail(&sim, &headers, ids, &query, "pipelines", |b, view, kind| {
        (kind == SimProjectType::Basic).then(|| {
            let created = b.runs.last().map(|r| r.created_at);
            json!({
                "build_uuid": b.uuid,
                "created_at": ts(created),
                "finished_at": ts(view.finished_at),
                "metrics": {
                    "ami_id": "ami-sim", "architecture": "trusty_64", "cpu_per_second": "100", "cpu_system": "400",
                    "cpu_user": "1000", "disk_free_bytes": "128536784896", "disk_used_bytes": "362098688",
                    "duration": "20", "instance_id": "i-sim", "instance_type": "sim.small",
                    "max_used_connections": "1", "memory_max_usage_in_bytes": "665427968",
                    "network_rx_bytes": "32221720", "network_tx_bytes": "310269", "queries": "112"
                },
                "status": step_status(view),
                "type": "build",
                "updated_at": ts(view.finished_at.or(view.queued_at).or(created)),
                "uuid": b.detail_uuids[0],
            })
        })
    })
}

async fn build_services(
    AxumState(sim): AxumState<CodeshipSim>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<PageQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.read")?;
    detail(&sim, &headers, ids, &query, "services", |b, view, kind| {
        (kind == SimProjectType::Pro).then(|| {
            json!({
                "build_uuid": b.uuid,
                "building_at": ts(view.allocated_at),
                "finished_at": ts(view.finished_at),
                "name": "app",
                "pulling_at": ts(view.allocated_at),
                "status": if view.is_final() { "finished" } else { "building" },
                "updated_at": ts(view.finished_at.or(view.allocated_at).or(view.queued_at)),
                "uuid": b.detail_uuids[1],
            })
        })
    })
}

async fn build_steps(
    AxumState(sim): AxumState<CodeshipSim>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<PageQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&sim, "build.read")?;
    detail(&sim, &headers, ids, &query, "steps", |b, view, kind| {
        (kind == SimProjectType::Pro).then(|| {
            json!({
                "build_uuid": b.uuid,
                "building_at": ts(view.allocated_at),
                "command": "./run-tests.sh",
                "finished_at": ts(view.finished_at),
                "image_name": null,
                "name": "test",
                "registry": null,
                "service_uuid": b.detail_uuids[1],
                "started_at": ts(view.allocated_at),
                "status": step_status(view),
                "steps": [],
                "tag": "",
                "type": "run",
                "updated_at": ts(view.finished_at.or(view.allocated_at).or(view.queued_at)),
                "uuid": b.detail_uuids[2],
            })
        })
    })
}
