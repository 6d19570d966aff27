//! `/v1/notifications/deliveries` (scope `admin`): the notification outbox, one row per
//! (notification, run event), with its attempts and last error; redelivery of a dead-lettered
//! or delivered one.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use cigw_store::{OutboxFilter, OutboxRecord, OutboxStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// One delivery: a run event for one notification, as a CDEvent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Id (pass it to `redeliver`).
    pub id: i64,
    /// The `[notifications.<name>]` it goes to.
    pub notification: String,
    /// The run event it reports (`GET /v1/runs/{run_id}/events`).
    pub event_id: i64,
    /// The run.
    pub run_id: String,
    /// The CDEvent `context.id`, also sent as `webhook-id` (receivers dedupe on it).
    pub message_id: String,
    /// The CDEvent type, e.g. `dev.cdevents.pipelinerun.finished.0.3.0`.
    pub event_type: String,
    /// `pending` (waiting for its next attempt), `delivered`, or `dead` (gave up: dead-lettered).
    #[schema(pattern = "^(pending|delivered|dead)$")]
    pub status: String,
    /// Attempts since it was enqueued or last redelivered.
    pub attempts: u32,
    /// The give-up limit of its notification (null when it is no longer configured).
    pub max_attempts: Option<u32>,
    /// When the next attempt is due (pending rows only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the latest attempt ended.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the latest attempt that got an answer.
    pub last_status: Option<u16>,
    /// Why the latest failed attempt failed.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or dead-lettered.
    pub finished_at: Option<DateTime<Utc>>,
}

impl DeliveryView {
    /// The view of a stored row.
    pub fn new(row: &OutboxRecord, state: &AppState) -> Self {
        let text = |pointer: &str| row.payload.pointer(pointer).and_then(|v| v.as_str()).unwrap_or("").to_string();
        DeliveryView {
            id: row.id,
            notification: row.notification.clone(),
            event_id: row.event_id,
            run_id: row.run_id.clone(),
            message_id: crate::notifications::delivery::message_id(row),
            event_type: text("/context/type"),
            status: row.status.as_str().to_string(),
            attempts: row.attempts,
            max_attempts: state.settings.notifications.get(&row.notification).map(|n| n.delivery.max_attempts),
            next_attempt_at: (row.status == OutboxStatus::Pending).then_some(row.next_attempt_at),
            last_attempt_at: row.last_attempt_at,
            last_status: row.last_status,
            last_error: row.last_error.clone(),
            created_at: row.created_at,
            finished_at: row.finished_at,
        }
    }
}

/// One delivery with the event it sends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The CDEvent POSTed (secret parameters masked).
    pub payload: serde_json::Value,
}

/// A page of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/notifications/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query for OpenAPI; the handler parses the pairs itself for precise errors
pub(crate) struct ListDeliveriesQuery {
    /// Only this notification.
    #[param(min_length = 1)]
    notification: Option<String>,
    /// Only this status.
    #[param(pattern = "^(pending|delivered|dead)$")]
    status: Option<String>,
    /// Only this run.
    #[param(min_length = 1)]
    run_id: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

fn parse_filter(pairs: Vec<(String, String)>) -> Result<(OutboxFilter, Option<String>), ApiError> {
    let mut filter = OutboxFilter::default();
    let mut cursor = None;
    for (key, value) in pairs {
        if value.is_empty() && matches!(key.as_str(), "notification" | "run_id" | "cursor") {
            return Err(ApiError::bad_field(key, "must not be empty (leave the parameter out instead)"));
        }
        match key.as_str() {
            "notification" => filter.notification = Some(value),
            "run_id" => filter.run_id = Some(value),
            "status" => {
                filter.status = Some(OutboxStatus::parse(&value).ok_or_else(|| {
                    ApiError::bad_field("status", format!("expected pending, delivered or dead, got `{value}`"))
                })?);
            }
            "limit" => filter.limit = super::limit_param(&value)?,
            "cursor" => cursor = Some(value),
            other => {
                return Err(ApiError::bad_field(
                    other,
                    "unknown query parameter (expected notification, status, run_id, limit or cursor)",
                ));
            }
        }
    }
    Ok((filter, cursor))
}

fn delivery_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_field("id", format!("expected a delivery id (a positive integer), got `{text}`")))
}

/// List notification deliveries, newest first, with filters and cursor paging.
#[utoipa::path(get, path = "/v1/notifications/deliveries", tag = "notifications", security(("bearer" = [])),
    params(ListDeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require_admin()?;
    let Query(pairs) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (filter, cursor) = parse_filter(pairs)?;
    let page = state.store.list_outbox(&filter, cursor.as_deref()).await?;
    Ok(Json(DeliveryList {
        deliveries: page.rows.iter().map(|r| DeliveryView::new(r, &state)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One delivery with the CDEvent it sends.
#[utoipa::path(get, path = "/v1/notifications/deliveries/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Delivery id")),
    responses((status = 200, body = DeliveryDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    principal.require_admin()?;
    let row = state.store.get_outbox(delivery_id(&id)?).await?;
    Ok(Json(DeliveryDetail { delivery: DeliveryView::new(&row, &state), payload: row.payload }))
}

/// Send a dead-lettered (or delivered) delivery again: it becomes pending, due now, with its
/// attempts counted afresh. The same `webhook-id` is sent, so receivers can tell a repeat.
#[utoipa::path(post, path = "/v1/notifications/deliveries/{id}/redeliver", tag = "notifications",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1, description = "Delivery id")),
    responses((status = 200, body = DeliveryView, description = "Pending again"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Still pending, or its notification is no longer configured")))]
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    principal.require_admin()?;
    let id = delivery_id(&id)?;
    let row = state.store.get_outbox(id).await?;
    if !state.settings.notifications.contains_key(&row.notification) {
        return Err(ApiError::conflict(
            "notification_not_configured",
            format!("notification `{}` is no longer configured; nothing would send it", row.notification),
        ));
    }
    let row = state.store.redeliver_outbox(id, state.now()).await.map_err(|e| match e {
        cigw_store::StoreError::Conflict { what } => ApiError::conflict("delivery_pending", what),
        other => other.into(),
    })?;
    tracing::info!(delivery = id, notification = %row.notification, by = %principal.name, "delivery redelivered");
    Ok(Json(DeliveryView::new(&row, &state)))
}
