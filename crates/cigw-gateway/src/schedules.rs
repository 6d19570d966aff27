//! The scheduler: fires every `[schedules.<name>]` slot through [`intake`], once.
//!
//! Each slot's firing is stored with its trigger in one transaction, keyed by (schedule, slot),
//! so a restart or a second replica that reaches the same slot stores nothing. Slots that passed
//! while no gateway ran are `missed`: with `skip` they fire nothing, with `run-once` the latest
//! of them fires once for all. Only the latest due slot is ever looked at, so a long outage never
//! turns into a storm of triggers (or of work).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::schedule::{MissedSlots, Schedule};
use cigw_store::{ScheduleSlot, StoreError};
use serde_json::json;
use tokio::sync::watch;

use crate::auth::{Principal, Scope};
use crate::intake::request::TriggerRequest;
use crate::intake::{IntakeError, SlotIntake, Submission, intake_slot};
use crate::state::AppState;

/// How late a slot may be seen and still count as on time rather than missed.
pub const ON_TIME: Duration = Duration::from_secs(60);
/// Longest sleep between two looks, so a clock change or a store hiccup is caught soon.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What the scheduler did about one schedule's due slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firing {
    /// The slot fired: a new trigger.
    Fired {
        /// The slot.
        slot: DateTime<Utc>,
        /// Its trigger.
        trigger_id: String,
    },
    /// The slot had fired already, on this or another replica.
    AlreadyFired {
        /// The slot.
        slot: DateTime<Utc>,
        /// Its trigger.
        trigger_id: String,
    },
    /// The slot was missed and the policy is `skip`.
    Skipped {
        /// The latest missed slot.
        slot: DateTime<Utc>,
    },
    /// Intake refused the slot's trigger (it is not retried).
    Refused {
        /// The slot.
        slot: DateTime<Utc>,
        /// Why.
        message: String,
    },
}

/// The schedules of one gateway process and the latest slot it handled of each.
#[derive(Debug)]
pub struct Scheduler {
    state: AppState,
    handled: BTreeMap<String, DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler counting slots after each schedule's latest stored firing; a schedule that
    /// never fired counts from `now`.
    pub async fn start(state: AppState, now: DateTime<Utc>) -> Result<Scheduler, StoreError> {
        let fired = state.store.latest_schedule_firings().await?;
        let handled = state
            .settings
            .schedules
            .keys()
            .map(|name| {
                let since = fired.iter().find(|f| &f.schedule == name).map_or(now, |f| f.slot);
                (name.clone(), since)
            })
            .collect();
        Ok(Scheduler { state, handled })
    }

    /// Handle every schedule's latest slot due at `now` (at most one per schedule).
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Vec<(String, Firing)> {
        let state = self.state.clone();
        let mut done = Vec::new();
        for schedule in state.settings.schedules.values() {
            let since = self.handled.get(&schedule.name).copied().unwrap_or(now);
            let Some(slot) = schedule.latest_at_or_before(now).filter(|slot| *slot > since) else { continue };
            let late = (now - slot).to_std().is_ok_and(|lateness| lateness > ON_TIME);
            let missed = late || schedule.next_after(since).is_some_and(|first| first < slot);
            if missed {
                tracing::info!(schedule = %schedule.name, %slot, policy = schedule.missed.as_str(), "missed slots");
            }
            let firing = if late && schedule.missed == MissedSlots::Skip {
                Firing::Skipped { slot }
            } else {
                match fire(&state, schedule, slot).await {
                    Ok(SlotIntake::Created(accepted)) => {
                        tracing::info!(schedule = %schedule.name, %slot, trigger_id = %accepted.trigger_id, "schedule fired");
                        Firing::Fired { slot, trigger_id: accepted.trigger_id }
                    }
                    Ok(SlotIntake::AlreadyFired { trigger_id }) => Firing::AlreadyFired { slot, trigger_id },
                    Err(IntakeError::Store(e)) => {
                        // Not handled: the next look tries the slot again.
                        tracing::warn!(schedule = %schedule.name, %slot, error = %e, "schedule slot not stored");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(schedule = %schedule.name, %slot, error = %e, "schedule trigger refused");
                        Firing::Refused { slot, message: e.to_string() }
                    }
                }
            };
            crate::metrics::record_intake("schedule", outcome_label(&firing));
            self.handled.insert(schedule.name.clone(), slot);
            done.push((schedule.name.clone(), firing));
        }
        done
    }

    /// When to look next: the earliest next slot of any schedule, at most [`MAX_SLEEP`] away.
    pub fn next_look(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let cap = now + cigw_core::time::span(MAX_SLEEP);
        self.state.settings.schedules.values().filter_map(|s| s.next_after(now)).fold(cap, DateTime::min)
    }

    /// Fire slots on the gateway's clock until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let now = self.state.now();
            self.tick(now).await;
            let now = self.state.now();
            let wait = (self.next_look(now) - now).to_std().unwrap_or_default().max(Duration::from_millis(10));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Run the scheduler of `state`'s schedules until `shutdown` (nothing when there are none).
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    if state.settings.schedules.is_empty() {
        return;
    }
    loop {
        match Scheduler::start(state.clone(), state.now()).await {
            Ok(scheduler) => return scheduler.run(shutdown).await,
            Err(e) => tracing::warn!(error = %e, "schedules: reading the last firings failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(MAX_SLEEP) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn outcome_label(firing: &Firing) -> &'static str {
    match firing {
        Firing::Fired { .. } => "accepted",
        Firing::AlreadyFired { .. } => "replayed",
        Firing::Skipped { .. } => "skipped",
        Firing::Refused { .. } => "rejected",
    }
}

/// The trigger request a schedule makes at each slot.
pub fn request_body(schedule: &Schedule) -> serde_json::Value {
    let mut body = json!({
        "targets": schedule.targets,
        "parameters": schedule.parameters,
        "labels": schedule.labels,
    });
    if let Some(git_ref) = &schedule.git_ref {
        body["ref"] = json!(git_ref);
    }
    body
}

async fn fire(state: &AppState, schedule: &Schedule, slot: DateTime<Utc>) -> Result<SlotIntake, IntakeError> {
    let body = request_body(schedule);
    let request: TriggerRequest =
        serde_json::from_value(body.clone()).map_err(|e| IntakeError::Internal(e.to_string()))?;
    let raw = serde_json::value::to_raw_value(&body).map_err(|e| IntakeError::Internal(e.to_string()))?;
    let who = format!("schedule:{}", schedule.name);
    let requester = Principal::new(who.clone(), who, Scope::parse("trigger").into_iter().collect());
    let submission = Submission { source: "schedule".into(), request, body: raw };
    intake_slot(state, submission, &requester, ScheduleSlot { schedule: schedule.name.clone(), slot }).await
}
