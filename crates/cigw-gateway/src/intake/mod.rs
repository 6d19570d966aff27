//! Intake: the one way a trigger enters the gateway, whatever asks for it (the API today; webhook
//! hooks, schedules and chains next). The whole request is checked (every problem at once), one
//! run per target is planned, and the trigger and its runs are stored in one transaction (or the
//! answer to an earlier request with the same idempotency key is replayed); then the engine is
//! woken. Nothing here knows about HTTP.

mod check;
pub mod request;

use std::collections::BTreeMap;
use std::fmt::Display;

use cigw_core::RunState;
use cigw_core::params::MASK;
use cigw_store::{
    ChainFiring, CreateOutcome, HookDeliveryRecord, IdempotencyKey, NewHookDelivery, NewRun, NewTrigger, ScheduleSlot,
    StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::FieldProblem;
use crate::links::Links;
use crate::state::AppState;
use request::TriggerRequest;

/// A trigger request to take in.
#[derive(Debug)]
pub struct Submission {
    /// Where it comes from: `api`, `hook:<name>`, `schedule:<name>`, `chain:<name>`, … (stored
    /// as the trigger's `source`).
    pub source: String,
    /// The request, read within its limits.
    pub request: TriggerRequest,
    /// The request's JSON as received: stored with secret values masked and fingerprinted for
    /// idempotency. It is parsed whole only once the request is valid, so memory follows the
    /// limits, not the body.
    pub body: Box<RawValue>,
}

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

/// What intake did.
#[derive(Debug)]
pub enum Intake {
    /// The trigger and its runs were stored and the engine woken.
    Created(TriggerAccepted),
    /// The idempotency key was used before with an equal request: nothing was stored; this is
    /// the first answer, as stored.
    Replayed(Value),
}

/// Why a trigger was not taken in; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The requester lacks these scopes (`trigger:<target>`) for requested targets. Checked
    /// before anything else about the targets, so a requester learns nothing about targets it
    /// may not trigger.
    #[error("missing scopes: {}", .0.join(", "))]
    MissingScopes(Vec<String>),
    /// The request cannot be accepted.
    #[error("{message}")]
    Invalid {
        /// `unknown_target` when a target is unknown, the shared code when every problem is of
        /// one kind, else `validation_failed`.
        code: &'static str,
        /// The first few problems and how many there are.
        message: String,
        /// The problems found (at most [`crate::error::MAX_DETAILS`]).
        problems: Vec<FieldProblem>,
        /// Further problems found but not kept.
        omitted: usize,
    },
    /// The idempotency key was used before, with another request, for trigger `trigger_id`.
    #[error("the idempotency key was already used for trigger {trigger_id} with a different request")]
    KeyReused {
        /// The trigger the key belongs to.
        trigger_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything unexpected.
    #[error("{0}")]
    Internal(String),
}

fn internal(cause: impl Display) -> IntakeError {
    IntakeError::Internal(cause.to_string())
}

/// Take in `submission` for `requester`: check it, plan one run per target and store the trigger
/// with its runs in one transaction, or replay the answer of an earlier request with the same
/// `idempotency_key` (keys are scoped to the requester's token).
pub async fn intake(
    state: &AppState,
    submission: Submission,
    requester: &Principal,
    idempotency_key: Option<String>,
) -> Result<Intake, IntakeError> {
    let source = submission.source.clone();
    let (outcome, accepted) = take_in(state, submission, requester, idempotency_key, Tie::None).await?;
    match outcome {
        CreateOutcome::Created(_) => Ok(Intake::Created(accepted)),
        CreateOutcome::Replayed { response, .. } => Ok(Intake::Replayed(response)),
        CreateOutcome::KeyConflict { trigger_id } => Err(IntakeError::KeyReused { trigger_id }),
        CreateOutcome::ChainAlreadyFired { trigger_id } | CreateOutcome::SlotAlreadyFired { trigger_id } => {
            Err(internal(format!("{source} intake got a firing outcome for trigger {trigger_id}")))
        }
        CreateOutcome::JoinNotReady => Err(internal(format!("{source} intake got a join outcome"))),
        CreateOutcome::DeliveryAlreadyHandled(record) => {
            Err(internal(format!("{source} intake got a hook delivery outcome for {}", record.delivery_id)))
        }
    }
}

/// Check `request` for `requester` as intake would (scopes, targets, ref, parameters, labels),
/// storing nothing: the dry runs of hooks use it to say whether a request would be accepted.
pub fn validate(state: &AppState, requester: &Principal, request: &TriggerRequest) -> Result<(), IntakeError> {
    check::plan(state, requester, request).map(|_| ())
}

/// What intake did with a schedule slot.
#[derive(Debug)]
pub enum SlotIntake {
    /// The trigger, its runs and the slot's firing were stored and the engine woken.
    Created(TriggerAccepted),
    /// The slot had fired already (here or on another replica) with this trigger: nothing stored.
    AlreadyFired {
        /// The slot's trigger.
        trigger_id: String,
    },
}

/// Take in `submission` as the firing of a schedule slot: like [`intake`], and the slot is
/// recorded with the trigger in the same transaction, so it fires once whoever asks again.
pub async fn intake_slot(
    state: &AppState,
    submission: Submission,
    requester: &Principal,
    slot: ScheduleSlot,
) -> Result<SlotIntake, IntakeError> {
    let source = submission.source.clone();
    match take_in(state, submission, requester, None, Tie::Slot(slot)).await? {
        (CreateOutcome::Created(_), accepted) => Ok(SlotIntake::Created(accepted)),
        (CreateOutcome::SlotAlreadyFired { trigger_id }, _) => Ok(SlotIntake::AlreadyFired { trigger_id }),
        (other, _) => Err(internal(format!("{source} intake without a key got {other:?}"))),
    }
}

/// What intake did with a chain firing.
#[derive(Debug)]
pub enum ChainIntake {
    /// The trigger, its runs and the firing were stored and the engine woken.
    Created(TriggerAccepted),
    /// This firing (or its join) had fired already, here or on another replica: nothing stored.
    AlreadyFired {
        /// The trigger it produced.
        trigger_id: String,
    },
    /// The join is no longer open and complete: nothing stored.
    JoinNotReady,
}

/// Take in `submission` as a chain firing: like [`intake`], and the firing (with its place in
/// the trigger tree, and for a join the join's end) is recorded with the trigger in the same
/// transaction, keyed by (chain, upstream run), so it fires once whoever asks again.
pub async fn intake_chain(
    state: &AppState,
    submission: Submission,
    requester: &Principal,
    firing: ChainFiring,
) -> Result<ChainIntake, IntakeError> {
    let source = submission.source.clone();
    match take_in(state, submission, requester, None, Tie::Chain(firing)).await? {
        (CreateOutcome::Created(_), accepted) => Ok(ChainIntake::Created(accepted)),
        (CreateOutcome::ChainAlreadyFired { trigger_id }, _) => Ok(ChainIntake::AlreadyFired { trigger_id }),
        (CreateOutcome::JoinNotReady, _) => Ok(ChainIntake::JoinNotReady),
        (other, _) => Err(internal(format!("{source} intake without a key got {other:?}"))),
    }
}

/// What intake did with a hook delivery.
#[derive(Debug)]
pub enum HookIntake {
    /// The trigger, its runs and the delivery were stored and the engine woken; this is the
    /// delivery's answer (its response with `trigger_id` and `runs` added).
    Created(Value),
    /// The delivery had started a trigger already (here or on another replica) and is still
    /// remembered: nothing stored; this is its record, with the first answer.
    AlreadyHandled(Box<HookDeliveryRecord>),
}

/// Take in `submission` for a hook delivery: like [`intake`], and the delivery (its response
/// completed with the trigger's answer) is stored with the trigger in the same transaction, so
/// a crash can neither lose its dedupe nor double its trigger.
pub async fn intake_hook(
    state: &AppState,
    submission: Submission,
    requester: &Principal,
    delivery: NewHookDelivery,
) -> Result<HookIntake, IntakeError> {
    let source = submission.source.clone();
    let base = delivery.response.clone();
    match take_in(state, submission, requester, None, Tie::Delivery(Box::new(delivery))).await? {
        (CreateOutcome::Created(_), accepted) => Ok(HookIntake::Created(
            hook_response(&base, &accepted).ok_or_else(|| internal("a hook response is not an object"))?,
        )),
        (CreateOutcome::DeliveryAlreadyHandled(record), _) => Ok(HookIntake::AlreadyHandled(record)),
        (other, _) => Err(internal(format!("{source} intake without a key got {other:?}"))),
    }
}

/// What a trigger is stored together with, in its transaction.
#[derive(Debug)]
enum Tie {
    /// Nothing.
    None,
    /// A schedule slot's firing.
    Slot(ScheduleSlot),
    /// A hook delivery (its response gets the trigger's answer).
    Delivery(Box<NewHookDelivery>),
    /// A chain firing (with its place in the trigger tree).
    Chain(ChainFiring),
}

/// A hook delivery's answer: its `base` response object with the trigger's answer merged in.
fn hook_response(base: &Value, accepted: &TriggerAccepted) -> Option<Value> {
    let mut response = base.clone();
    let Value::Object(extra) = serde_json::to_value(accepted).ok()? else { return None };
    response.as_object_mut()?.extend(extra);
    Some(response)
}

/// Check, plan and store; wakes the engine when something was stored.
async fn take_in(
    state: &AppState,
    submission: Submission,
    requester: &Principal,
    idempotency_key: Option<String>,
    tie: Tie,
) -> Result<(CreateOutcome, TriggerAccepted), IntakeError> {
    let Submission { source, request: req, body: raw } = submission;
    let planned = check::plan(state, requester, &req)?;
    crate::pacing::yield_to_dispatch(state).await;
    let body: Value = serde_json::from_str(raw.get()).map_err(internal)?;
    drop(raw);

    let now = state.now();
    let links = Links::new(state);
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
            chain_parent: match &tie {
                Tie::Chain(f) => Some(f.upstream_run_id.clone()),
                _ => None,
            },
            rerun_of: None,
            rerun_failed_only: false,
            // A debounced run waits its debounce (at least the dispatch delay), so a newer run
            // of its branch arriving meanwhile supersedes it before anything is sent.
            dispatch_at: now
                + cigw_core::time::span(
                    p.target.spec.debounce.unwrap_or_default().max(state.settings.timings.dispatch_delay),
                ),
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
                state: RunState::Pending.to_string(),
                links: RunSummaryLinks { self_: links.run(&r.id), events: links.run_events(&r.id) },
            })
            .collect(),
    };
    let accepted_json = serde_json::to_value(&accepted).map_err(internal)?;
    let is_secret = |target: &str, name: &str| {
        state.target(target).is_some_and(|t| t.spec.parameters.iter().any(|p| p.name == name && p.secret))
    };
    let request = masked_request(&body, |target, name| match target {
        Some(t) => is_secret(t, name),
        None => req.targets.iter().any(|t| is_secret(t, name)),
    });
    let hook_delivery = match &tie {
        Tie::Delivery(d) => Some(NewHookDelivery {
            response: hook_response(&d.response, &accepted)
                .ok_or_else(|| internal("a hook response is not an object"))?,
            ..(**d).clone()
        }),
        _ => None,
    };
    let (schedule_slot, chain_firing) = match tie {
        Tie::Slot(slot) => (Some(slot), None),
        Tie::Chain(firing) => (None, Some(firing)),
        Tie::None | Tie::Delivery(_) => (None, None),
    };
    let idempotency = idempotency_key.map(|key| IdempotencyKey {
        scope: requester.token_id.clone(),
        key,
        fingerprint: fingerprint(&body),
        response: accepted_json,
        expires_at: now + cigw_core::time::span(state.settings.retention.idempotency_keys),
    });
    let outcome = state
        .store
        .create_trigger(NewTrigger {
            id: trigger_id,
            source,
            requested_by: requester.name.clone(),
            request,
            labels: serde_json::to_value(&req.labels).map_err(internal)?,
            created_at: now,
            runs,
            idempotency,
            chain_firing,
            schedule_slot,
            hook_delivery,
        })
        .await?;
    if matches!(outcome, CreateOutcome::Created(_)) {
        state.wake_engine();
    }
    Ok((outcome, accepted))
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
