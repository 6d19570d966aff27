//! `/v1/triggers`: intake over HTTP (read the request, hand it to [`crate::intake`], answer 202),
//! read and cancel.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_store::{StoreError, TriggerRecord};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::api::views::RunView;
use crate::api::{ApiJson, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::intake::request::TriggerRequest;
use crate::intake::{Intake, IntakeError, Submission, TriggerAccepted, intake};
use crate::links::Links;
use crate::state::AppState;

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
    pub(crate) fn new(trigger: &TriggerRecord, links: &Links) -> Self {
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

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::MissingScopes(mut scopes) if scopes.len() == 1 => {
                ApiError::MissingScope { scope: scopes.remove(0) }
            }
            IntakeError::MissingScopes(scopes) => ApiError::Forbidden {
                code: "missing_scope",
                message: format!(
                    "this token lacks the scopes {}",
                    scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ),
            },
            IntakeError::Invalid { code, message, problems, omitted } => {
                ApiError::unprocessable_with_omitted(code, message, problems, omitted)
            }
            IntakeError::KeyReused { trigger_id } => ApiError::conflict(
                "idempotency_key_reused",
                format!("this Idempotency-Key was already used for trigger {trigger_id} with a different body"),
            ),
            IntakeError::Store(e) => e.into(),
            IntakeError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

// The doc comment is the operation's OpenAPI summary; the work is done by `crate::intake`.
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
    let request: TriggerRequest = {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_string() } else { path };
            let problem = FieldProblem::new(field, e.inner().to_string());
            ApiError::unprocessable("invalid_body", format!("`{}`: {}", problem.field, problem.message), vec![problem])
        })?
    };
    let source = if principal.via_session() { "ui" } else { "api" };
    let submission = Submission { source: source.into(), request, body: raw };
    match intake(&state, submission, &principal, key).await? {
        Intake::Created(accepted) => Ok((StatusCode::ACCEPTED, Json(accepted)).into_response()),
        Intake::Replayed(response) => {
            let mut resp = (StatusCode::ACCEPTED, Json(response)).into_response();
            resp.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(resp)
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
}
