//! `/v1/runs`: read, list, cancel, rerun, approve/deny and refresh runs.
//!
//! Only approve and deny call the provider synchronously; everything else records intent in
//! the store and wakes the engine, which does the provider work.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use cigw_core::{Decision, RunState};
use cigw_store::{EventFilter, EventKind, NewEvent, NewRun, RunFilter, RunRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::views::{EventView, RunView};
use crate::api::wait::{WaitQuery, parse_wait, wait_until_finished};
use crate::api::{ApiJson, state_param};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::links::Links;
use crate::state::AppState;

/// Most events returned with one run (the SSE stream has them all).
const MAX_EVENTS: u32 = 1000;

/// One run with its events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunView,
    /// Its events, oldest first.
    pub events: Vec<EventView>,
}

/// A page of runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The events of a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<EventView>,
}

/// Filters of `GET /v1/runs`; a parameter given twice counts once, the last value winning.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query for OpenAPI; the handler parses the pairs itself for precise errors
pub(crate) struct ListRunsQuery {
    /// Only this target.
    #[param(min_length = 1)]
    target: Option<String>,
    /// Only this state.
    #[param(value_type = Option<cigw_core::RunState>)]
    state: Option<String>,
    /// Only this trigger.
    #[param(min_length = 1)]
    trigger_id: Option<String>,
    /// Only runs created at or after this RFC 3339 time.
    since: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// Options of a rerun.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Rerun only what failed (where the provider can).
    #[serde(default)]
    pub failed_only: bool,
}

pub(crate) async fn load_events(state: &AppState, run_id: &str) -> Result<Vec<EventView>, ApiError> {
    let filter = EventFilter { run_id: Some(run_id.to_string()), ..EventFilter::default() };
    Ok(state.store.events_after(0, &filter, MAX_EVENTS).await?.into_iter().map(EventView::from).collect())
}

async fn run_view(state: &AppState, run_id: &str) -> Result<RunView, ApiError> {
    let run = state.store.get_run(run_id).await?;
    Ok(RunView::new(&run, &Links::new(state)))
}

/// Read one run with its events; with `?wait=<seconds>`, answer as soon as the run has finished
/// (or when the wait is over, with its current state).
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id"), WaitQuery),
    responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    principal.require_read()?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(wait) = query.wait {
        let wait = parse_wait(&wait, &state)?;
        wait_until_finished(&state, &id, wait).await?;
    }
    let run = run_view(&state, &id).await?;
    let events = load_events(&state, &id).await?;
    Ok(Json(RunDetail { run, events }))
}

/// The events of one run.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = EventList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn run_events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    principal.require_read()?;
    state.store.get_run(&id).await?;
    Ok(Json(EventList { events: load_events(&state, &id).await? }))
}

fn parse_filter(pairs: Vec<(String, String)>) -> Result<(RunFilter, Option<String>), ApiError> {
    let mut filter = RunFilter::default();
    let mut cursor = None;
    for (key, value) in pairs {
        if value.is_empty() && matches!(key.as_str(), "target" | "trigger_id" | "cursor") {
            return Err(ApiError::bad_field(key, "must not be empty (leave the parameter out instead)"));
        }
        match key.as_str() {
            "target" => filter.target = Some(value),
            "trigger_id" => filter.trigger_id = Some(value),
            "state" => filter.state = Some(state_param(&value)?),
            "since" => {
                let since = DateTime::parse_from_rfc3339(&value).map_err(|_| {
                    ApiError::bad_field(
                        "since",
                        format!("expected an RFC 3339 time such as 2026-01-31T12:00:00Z, got `{value}`"),
                    )
                })?;
                filter.since = Some(since.with_timezone(&Utc));
            }
            "limit" => filter.limit = super::limit_param(&value)?,
            "cursor" => cursor = Some(value),
            other => {
                return Err(ApiError::bad_field(
                    other,
                    "unknown query parameter (expected target, state, trigger_id, since, limit or cursor)",
                ));
            }
        }
    }
    Ok((filter, cursor))
}

/// List runs, newest first, with filters and cursor paging.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("bearer" = [])), params(ListRunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    principal.require_read()?;
    let Query(pairs) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (filter, cursor) = parse_filter(pairs)?;
    let page = state.store.list_runs(&filter, cursor.as_deref()).await?;
    let links = Links::new(&state);
    Ok(Json(RunList {
        runs: page.runs.iter().map(|r| RunView::new(r, &links)).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn finished(run: &RunRecord) -> ApiError {
    ApiError::conflict("run_finished", format!("run {} has already finished ({})", run.id, run.state))
}

/// Cancel a run: a pending run is canceled at once, any other is canceled at the provider.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The run has finished")))]
pub async fn cancel_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    principal.require_cancel()?;
    let run = state.store.get_run(&id).await?;
    if run.state.is_terminal() {
        return Err(finished(&run));
    }
    let update = state.store.request_cancel(&id, state.now()).await.map_err(|e| match e {
        cigw_store::StoreError::Conflict { .. } => finished(&run),
        other => other.into(),
    })?;
    state.wake_engine();
    Ok((StatusCode::ACCEPTED, Json(RunView::new(&update.run, &Links::new(&state)))))
}

/// Run a finished run again, as a new run linked with `rerun_of`.
#[utoipa::path(post, path = "/v1/runs/{id}/rerun", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")), request_body(content = Option<RerunRequest>),
    responses((status = 202, body = RunView, description = "The new run"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The run has not finished or never reached the provider"),
        (status = 422, body = ErrorBody, description = "The target is gone or cannot rerun")))]
pub async fn rerun_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Option<ApiJson<RerunRequest>>, ApiError>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let run = {
        // The target (and so the scope needed) is known only from the run.
        principal.require_any_trigger()?;
        state.store.get_run(&id).await?
    };
    principal.require_trigger(&run.target)?;
    let options = body?.map(|ApiJson(b)| b).unwrap_or_default();
    if !run.state.is_terminal() {
        return Err(ApiError::conflict(
            "run_not_finished",
            format!("run {} has not finished ({}); cancel it or wait for its end", run.id, run.state),
        ));
    }
    if run.provider_ref.is_none() {
        return Err(ApiError::conflict(
            "run_not_started",
            format!("run {} never reached the provider ({}); trigger the target again instead", run.id, run.state),
        ));
    }
    let Some(target) = state.target(&run.target) else {
        return Err(ApiError::unprocessable(
            "unknown_target",
            format!("target `{}` is no longer configured", run.target),
            Vec::new(),
        ));
    };
    let caps = target.target.capabilities();
    if !caps.rerun {
        return Err(ApiError::unprocessable(
            "unsupported",
            format!("target `{}` ({}) cannot rerun runs", run.target, run.provider),
            Vec::new(),
        ));
    }
    if options.failed_only && !caps.rerun_failed_only {
        return Err(ApiError::unprocessable(
            "unsupported",
            format!(
                "target `{}` ({}) cannot rerun only the failed parts; omit `failed_only`",
                run.target, run.provider
            ),
            Vec::new(),
        ));
    }
    let now = state.now();
    let new_run = NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        target: run.target.clone(),
        provider: run.provider,
        account: run.account.clone(),
        git_ref: run.git_ref.clone(),
        parameters: run.parameters.clone(),
        chain_parent: None,
        rerun_of: Some(run.id.clone()),
        rerun_failed_only: options.failed_only,
        dispatch_at: now + cigw_core::time::span(state.settings.timings.dispatch_delay),
    };
    let created = state.store.create_rerun(&run.trigger_id, new_run, now).await?;
    state.wake_engine();
    Ok((StatusCode::ACCEPTED, Json(RunView::new(&created, &Links::new(&state)))))
}

async fn decide(
    state: AppState,
    principal: Principal,
    id: String,
    decision: Decision,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    principal.require_approve()?;
    let run = state.store.get_run(&id).await?;
    if run.state != RunState::Blocked {
        return Err(ApiError::conflict(
            "run_not_blocked",
            format!("run {} is {}, not blocked waiting for approval", run.id, run.state),
        ));
    }
    let Some(target) = state.target(&run.target) else {
        return Err(ApiError::unprocessable(
            "unknown_target",
            format!("target `{}` is no longer configured", run.target),
            Vec::new(),
        ));
    };
    if !target.target.capabilities().approve {
        return Err(ApiError::unprocessable(
            "unsupported",
            format!("target `{}` ({}) cannot approve or deny runs through the API", run.target, run.provider),
            Vec::new(),
        ));
    }
    let Some(provider_ref) = &run.provider_ref else {
        return Err(ApiError::conflict("run_not_started", format!("run {} has no provider build yet", run.id)));
    };
    target.target.approve(provider_ref, decision).await?;
    let now = state.now();
    let kind = match decision {
        Decision::Approve => EventKind::Approved,
        Decision::Deny => EventKind::Denied,
    };
    state
        .store
        .append_event(NewEvent {
            run_id: run.id.clone(),
            kind,
            data: serde_json::json!({ "by": principal.name }),
            created_at: now,
        })
        .await?;
    state.store.poll_now(&run.id, now).await?;
    state.wake_engine();
    run_view(&state, &id).await.map(|v| (StatusCode::ACCEPTED, Json(v)))
}

/// Approve a run that waits for approval.
#[utoipa::path(post, path = "/v1/runs/{id}/approve", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The run is not blocked"),
        (status = 422, body = ErrorBody, description = "The target cannot approve"),
        (status = 502, body = ErrorBody, description = "The provider failed")))]
pub async fn approve_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    decide(state, principal, id, Decision::Approve).await
}

/// Deny a run that waits for approval.
#[utoipa::path(post, path = "/v1/runs/{id}/deny", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The run is not blocked"),
        (status = 422, body = ErrorBody, description = "The target cannot approve"),
        (status = 502, body = ErrorBody, description = "The provider failed")))]
pub async fn deny_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    decide(state, principal, id, Decision::Deny).await
}

/// Ask the tracker to read the run at its provider now.
#[utoipa::path(post, path = "/v1/runs/{id}/refresh", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The run has finished")))]
pub async fn refresh_run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    principal.require_read()?;
    let run = state.store.get_run(&id).await?;
    if run.state.is_terminal() {
        return Err(finished(&run));
    }
    // A run not dispatched yet has nothing to read at the provider: waking the engine is enough.
    // Refreshes are coalesced: an occasional one reads at once; during a burst the read is due
    // `poll_initial` after the run's last read, so a read token cannot spend more than one
    // provider read per run per `poll_initial` (every read goes through the account's rate
    // limit like any poll).
    if run.provider_ref.is_some() || run.unconfirmed {
        state.store.poll_soon(&id, state.now(), state.settings.timings.poll_initial).await?;
    }
    state.wake_engine();
    Ok((StatusCode::ACCEPTED, Json(RunView::new(&run, &Links::new(&state)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_parse() {
        let (f, cursor) = parse_filter(pairs(&[
            ("target", "web"),
            ("state", "running"),
            ("since", "2026-01-31T12:00:00Z"),
            ("limit", "10"),
            ("cursor", "abc"),
        ]))
        .unwrap();
        assert_eq!(f.target.as_deref(), Some("web"));
        assert_eq!(f.state, Some(RunState::Running));
        assert_eq!(f.limit, 10);
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-01-31T12:00:00+00:00");
        assert_eq!(cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn bad_filters_name_the_field() {
        for (q, field) in [
            (("state", "done"), "state"),
            (("since", "yesterday"), "since"),
            (("limit", "0"), "limit"),
            (("limit", "1001"), "limit"),
            (("colour", "red"), "colour"),
            (("target", ""), "target"),
            (("trigger_id", ""), "trigger_id"),
            (("cursor", ""), "cursor"),
        ] {
            let err = parse_filter(pairs(&[q])).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.body().details[0].field, field);
        }
    }
}
