//! `GET /v1/schedules`: the configured schedules with their next and last slots.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// One configured schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub zone: String,
    /// Targets triggered at each slot.
    pub targets: Vec<String>,
    /// What happens to slots missed while no gateway ran: `skip` or `run-once`.
    #[schema(pattern = "^(skip|run-once)$")]
    pub missed: String,
    /// The next slot after now.
    pub next_slot: Option<DateTime<Utc>>,
    /// The latest slot that fired.
    pub last_slot: Option<DateTime<Utc>>,
    /// When it fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The trigger it made.
    pub last_trigger_id: Option<String>,
}

/// The configured schedules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    /// By name.
    pub schedules: Vec<ScheduleView>,
}

/// List the configured schedules with their next and last slots.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", security(("bearer" = [])),
    responses((status = 200, body = ScheduleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_schedules(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ScheduleList>, ApiError> {
    principal.require_read()?;
    let fired = state.store.latest_schedule_firings().await?;
    let now = state.now();
    let schedules = state
        .settings
        .schedules
        .values()
        .map(|s| {
            let last = fired.iter().find(|f| f.schedule == s.name);
            ScheduleView {
                name: s.name.clone(),
                description: s.description.clone(),
                cron: s.cron_text.clone(),
                zone: s.zone.name().to_string(),
                targets: s.targets.clone(),
                missed: s.missed.as_str().to_string(),
                next_slot: s.next_after(now),
                last_slot: last.map(|f| f.slot),
                last_fired_at: last.map(|f| f.fired_at),
                last_trigger_id: last.map(|f| f.trigger_id.clone()),
            }
        })
        .collect();
    Ok(Json(ScheduleList { schedules }))
}
