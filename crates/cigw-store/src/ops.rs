//! The operations that read a run, decide through the state machine and write it back with its
//! event, written once over a [`Tx`] (one write transaction of either backend).

use chrono::{DateTime, Utc};
use cigw_core::{ProviderRunRef, RunState, RunStatus};
use serde_json::{Value, json};

use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::sql::Tx;
use crate::statements as st;

/// A stored idempotency key.
pub(crate) struct StoredKey {
    pub(crate) fingerprint: Value,
    pub(crate) response: Value,
    pub(crate) trigger_id: String,
    pub(crate) expires_at: DateTime<Utc>,
}

/// An event about to be inserted.
pub(crate) struct EventRow<'a> {
    pub(crate) run: &'a RunRecord,
    pub(crate) kind: EventKind,
    pub(crate) data: Value,
    pub(crate) created_at: DateTime<Utc>,
}

fn run_from_new(n: &NewRun, trigger_id: &str, requested_by: &str, now: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: n.id.clone(),
        trigger_id: trigger_id.to_string(),
        target: n.target.clone(),
        provider: n.provider,
        account: n.account.clone(),
        git_ref: n.git_ref.clone(),
        parameters: n.parameters.clone(),
        state: RunState::Pending,
        raw_status: None,
        message: None,
        provider_ref: None,
        unconfirmed: false,
        sent_at: None,
        confirm_deadline: None,
        dispatch_attempts: 0,
        lease_owner: None,
        lease_until: None,
        next_dispatch_at: Some(n.dispatch_at),
        next_poll_at: None,
        observed_at: None,
        created_at: now,
        queued_at: None,
        started_at: None,
        finished_at: None,
        updated_at: now,
        chain_parent: n.chain_parent.clone(),
        rerun_of: n.rerun_of.clone(),
        rerun_failed_only: n.rerun_failed_only,
        requested_by: requested_by.to_string(),
        cancel_requested: false,
        maybe_sent_count: 0,
        last_maybe_sent_at: None,
        last_polled_at: None,
        last_refresh_at: None,
        sending_since: None,
    }
}

fn created_data(r: &RunRecord) -> Value {
    json!({
        "target": r.target,
        "provider": r.provider.as_str(),
        "git_ref": r.git_ref,
        "parameters": r.parameters.masked_json(),
        "requested_by": r.requested_by,
        "chain_parent": r.chain_parent,
        "rerun_of": r.rerun_of,
    })
}

fn validate_new_run(n: &NewRun) -> StoreResult<()> {
    if n.id.is_empty() {
        return Err(StoreError::Invalid { field: "runs[].id", message: "must not be empty".into() });
    }
    if n.target.is_empty() {
        return Err(StoreError::Invalid { field: "runs[].target", message: "must not be empty".into() });
    }
    Ok(())
}

pub(crate) async fn create_trigger(tx: &mut dyn Tx, t: &NewTrigger) -> StoreResult<CreateOutcome> {
    if t.id.is_empty() {
        return Err(StoreError::Invalid { field: "id", message: "must not be empty".into() });
    }
    if t.runs.is_empty() {
        return Err(StoreError::Invalid { field: "runs", message: "a trigger needs at least one run".into() });
    }
    for r in &t.runs {
        validate_new_run(r)?;
    }
    let now = crate::columns::trunc(t.created_at);
    if let Some(k) = &t.idempotency
        && let Some(stored) = st::get_key(tx, &k.scope, &k.key).await?
    {
        if stored.expires_at > now {
            return Ok(if stored.fingerprint == k.fingerprint {
                CreateOutcome::Replayed { trigger_id: stored.trigger_id, response: stored.response }
            } else {
                CreateOutcome::KeyConflict { trigger_id: stored.trigger_id }
            });
        }
        st::delete_key(tx, &k.scope, &k.key).await?;
    }
    if let Some(f) = &t.chain_firing
        && let Some(ChainFiringRecord { trigger_id: Some(trigger_id), .. }) =
            st::get_chain_firing(tx, &f.chain, &f.upstream_run_id).await?
    {
        return Ok(CreateOutcome::ChainAlreadyFired { trigger_id });
    }
    // A join fires once: the first firing marks it fired, any other finds it so.
    let mut join = None;
    if let Some(f) = &t.chain_firing
        && let Some(key) = &f.join_key
    {
        match st::lock_join(tx, &f.chain, key).await? {
            Some(j) if j.state == JoinState::Fired => {
                return Ok(match j.trigger_id {
                    Some(trigger_id) => CreateOutcome::ChainAlreadyFired { trigger_id },
                    None => CreateOutcome::JoinNotReady,
                });
            }
            Some(j) if j.state == JoinState::Open && j.complete() && j.expires_at > now => join = Some(j),
            _ => return Ok(CreateOutcome::JoinNotReady),
        }
    }
    if let Some(slot) = &t.schedule_slot
        && let Some(trigger_id) = st::get_schedule_firing(tx, slot).await?
    {
        return Ok(CreateOutcome::SlotAlreadyFired { trigger_id });
    }
    if let Some(d) = &t.hook_delivery
        && let Some(seen) = st::lock_hook_delivery(tx, &d.hook, &d.delivery_id).await?
    {
        if seen.trigger_id.is_some() && seen.expires_at > now {
            return Ok(CreateOutcome::DeliveryAlreadyHandled(Box::new(seen)));
        }
        // Expired, or it started nothing: this delivery is handled anew.
        st::delete_hook_delivery(tx, &d.hook, &d.delivery_id).await?;
    }
    let runs: Vec<RunRecord> = t.runs.iter().map(|n| run_from_new(n, &t.id, &t.requested_by, now)).collect();
    let created: Vec<EventRow> = runs
        .iter()
        .map(|run| EventRow { run, kind: EventKind::Created, data: created_data(run), created_at: now })
        .collect();
    st::insert_new_trigger(tx, t, &runs, &created, t.idempotency.as_ref().map(|k| (k, now))).await?;
    if let Some(f) = &t.chain_firing {
        st::put_chain_firing(tx, f, now, &t.id).await?;
        let link = ChainLink {
            trigger_id: t.id.clone(),
            chain: f.chain.clone(),
            root_trigger_id: f.root_trigger_id.clone(),
            depth: f.depth,
            parents: f.parents.clone(),
        };
        st::insert_chain_link(tx, &link).await?;
    }
    if let Some(mut j) = join {
        j.state = JoinState::Fired;
        j.closed_at = Some(now);
        j.trigger_id = Some(t.id.clone());
        st::put_join(tx, &j).await?;
    }
    if let Some(slot) = &t.schedule_slot {
        st::insert_schedule_firing(tx, slot, now, &t.id).await?;
    }
    if let Some(d) = &t.hook_delivery {
        st::insert_hook_delivery(tx, d, Some(&t.id)).await?;
    }
    tx.notify_wakeup().await?;
    Ok(CreateOutcome::Created(TriggerRecord {
        id: t.id.clone(),
        source: t.source.clone(),
        requested_by: t.requested_by.clone(),
        request: t.request.clone(),
        labels: t.labels.clone(),
        created_at: now,
        runs,
    }))
}

/// Remember a delivery that started no trigger, unless the same delivery already started one
/// (then that record, and nothing is written).
pub(crate) async fn record_hook_delivery(
    tx: &mut dyn Tx,
    d: &NewHookDelivery,
) -> StoreResult<Option<HookDeliveryRecord>> {
    let now = crate::columns::trunc(d.received_at);
    if let Some(seen) = st::lock_hook_delivery(tx, &d.hook, &d.delivery_id).await? {
        if seen.trigger_id.is_some() && seen.expires_at > now {
            return Ok(Some(seen));
        }
        st::delete_hook_delivery(tx, &d.hook, &d.delivery_id).await?;
    }
    st::insert_hook_delivery(tx, d, None).await?;
    Ok(None)
}

pub(crate) async fn create_rerun(
    tx: &mut dyn Tx,
    trigger_id: &str,
    n: &NewRun,
    now: DateTime<Utc>,
) -> StoreResult<RunRecord> {
    validate_new_run(n)?;
    let Some(original_id) = &n.rerun_of else {
        return Err(StoreError::Invalid { field: "rerun_of", message: "a rerun must name the run it reruns".into() });
    };
    if !st::trigger_exists(tx, trigger_id).await? {
        return Err(StoreError::NotFound { what: format!("trigger {trigger_id}") });
    }
    let original = st::lock_run(tx, original_id).await?.ok_or_else(|| StoreError::run_not_found(original_id))?;
    if original.trigger_id != trigger_id {
        return Err(StoreError::Invalid {
            field: "trigger_id",
            message: format!("run {original_id} belongs to trigger {}", original.trigger_id),
        });
    }
    let run = run_from_new(n, trigger_id, &original.requested_by, now);
    st::insert_run(tx, &run).await?;
    st::insert_event(
        tx,
        EventRow { run: &original, kind: EventKind::Rerun, data: json!({"rerun_id": run.id}), created_at: now },
    )
    .await?;
    st::insert_event(tx, EventRow { run: &run, kind: EventKind::Created, data: created_data(&run), created_at: now })
        .await?;
    tx.notify_wakeup().await?;
    Ok(run)
}

async fn locked(tx: &mut dyn Tx, run_id: &str) -> StoreResult<RunRecord> {
    st::lock_run(tx, run_id).await?.ok_or_else(|| StoreError::run_not_found(run_id))
}

/// The run, locked to be changed: as read (what [`st::update_run`] compares with) and a copy to
/// change.
async fn locked_to_change(tx: &mut dyn Tx, run_id: &str) -> StoreResult<(RunRecord, RunRecord)> {
    let run = locked(tx, run_id).await?;
    Ok((run.clone(), run))
}

fn check_owner(run: &RunRecord, owner: &str) -> StoreResult<()> {
    if run.lease_owner.as_deref() != Some(owner) {
        return Err(StoreError::Conflict { what: format!("run {} is not leased by `{owner}`", run.id) });
    }
    Ok(())
}

/// Move `run` to `to` if the machine allows it, stamping the phase times; returns the old state.
/// Every path that gives a run its provider build or ends it moves its state here, so this is
/// also where its secret parameter values are dropped once it no longer needs them.
fn move_state(run: &mut RunRecord, to: RunState, at: DateTime<Utc>) -> Option<RunState> {
    let moved = apply_move(run, to, at);
    crate::columns::forget_secret_values(run);
    moved
}

fn apply_move(run: &mut RunRecord, to: RunState, at: DateTime<Utc>) -> Option<RunState> {
    let next = RunState::apply(run.state, to)?;
    let from = run.state;
    run.state = next;
    match next {
        RunState::Queued => {
            run.queued_at.get_or_insert(at);
        }
        RunState::Running | RunState::Blocked => {
            run.queued_at.get_or_insert(at);
            run.started_at.get_or_insert(at);
        }
        s if s.is_terminal() => {
            run.finished_at = Some(at);
            run.next_dispatch_at = None;
            run.next_poll_at = None;
            run.lease_owner = None;
            run.lease_until = None;
        }
        _ => {}
    }
    Some(from)
}

async fn check_ref_free(tx: &mut dyn Tx, run: &RunRecord, r: &ProviderRunRef) -> StoreResult<()> {
    if let Some(owner) = st::ref_owner(tx, &run.target, &r.id, r.attempt).await?
        && owner != run.id
    {
        return Err(StoreError::Conflict {
            what: format!(
                "provider build {} (attempt {}) of target {} belongs to run {owner}",
                r.id, r.attempt, run.target
            ),
        });
    }
    Ok(())
}

fn state_event(from: RunState, run: &RunRecord, extra: Value) -> Value {
    json!({"from": from.as_str(), "to": run.state.as_str(), "detail": extra})
}

/// The answer of a write-ahead send mark: `Conflict` when the owner no longer holds the run.
pub(crate) fn marked(run_id: &str, owner: &str, rows: u64) -> StoreResult<()> {
    match rows {
        1 => Ok(()),
        _ => Err(StoreError::Conflict { what: format!("run {run_id} is not leased by {owner}") }),
    }
}

pub(crate) async fn record_dispatch(
    tx: &mut dyn Tx,
    run_id: &str,
    owner: &str,
    outcome: &DispatchOutcome,
    now: DateTime<Utc>,
) -> StoreResult<RunUpdate> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    check_owner(&run, owner)?;
    if run.state.is_terminal() {
        return Err(StoreError::Conflict { what: format!("run {run_id} is already {}", run.state) });
    }
    run.lease_owner = None;
    run.lease_until = None;
    run.sending_since = None;
    run.updated_at = now;
    let (kind, data, moved_from) = match outcome {
        DispatchOutcome::Started { run_ref, next_poll_at } => {
            check_ref_free(tx, &run, run_ref).await?;
            run.provider_ref = Some(run_ref.clone());
            run.unconfirmed = false;
            run.next_dispatch_at = None;
            run.next_poll_at = Some(*next_poll_at);
            let from = move_state(&mut run, RunState::Queued, now);
            (EventKind::Dispatched, json!({"outcome": "started", "provider_ref": run_ref}), from)
        }
        DispatchOutcome::Unconfirmed { sent_at, deadline, next_poll_at } => {
            run.unconfirmed = true;
            run.sent_at = Some(*sent_at);
            run.confirm_deadline = Some(*deadline);
            run.next_dispatch_at = None;
            run.next_poll_at = Some(*next_poll_at);
            let from = move_state(&mut run, RunState::Queued, now);
            (EventKind::Dispatched, json!({"outcome": "unconfirmed", "sent_at": sent_at, "deadline": deadline}), from)
        }
        DispatchOutcome::NothingToRun { message } => {
            run.message = Some(message.clone());
            let from = move_state(&mut run, RunState::Skipped, now);
            (EventKind::Dispatched, json!({"outcome": "nothing_to_run", "message": message}), from)
        }
        DispatchOutcome::Refused { message } => {
            run.message = Some(message.clone());
            let from = move_state(&mut run, RunState::Error, now);
            (EventKind::Dispatched, json!({"outcome": "refused", "message": message}), from)
        }
        DispatchOutcome::MaybeSent { sent_at, at, reason } => {
            run.maybe_sent_count = run.maybe_sent_count.saturating_add(1);
            run.last_maybe_sent_at = Some(*sent_at);
            run.next_dispatch_at = Some(*at);
            let data = json!({"at": at, "reason": reason, "maybe_sent": true, "sent_at": sent_at,
                              "maybe_sent_count": run.maybe_sent_count});
            (EventKind::DispatchRetry, data, None)
        }
        DispatchOutcome::Canceled { message } => {
            run.message = Some(message.clone());
            let from = move_state(&mut run, RunState::Canceled, now);
            (EventKind::StateChanged, json!({"reason": message}), from)
        }
        DispatchOutcome::RetryAt { at, reason } => {
            if run.cancel_requested && run.provider_ref.is_none() && !run.unconfirmed && run.maybe_sent_count == 0 {
                // Nothing was sent, so the requested cancel can complete without the provider.
                run.message = Some("canceled before dispatch".into());
                let from = move_state(&mut run, RunState::Canceled, now);
                (EventKind::StateChanged, json!({"reason": "canceled before dispatch", "retry_reason": reason}), from)
            } else {
                run.next_dispatch_at = Some(*at);
                (EventKind::DispatchRetry, json!({"at": at, "reason": reason}), None)
            }
        }
    };
    st::update_run(tx, &before, &run).await?;
    let data = match moved_from {
        Some(from) => state_event(from, &run, data),
        None => data,
    };
    st::insert_event(tx, EventRow { run: &run, kind, data, created_at: now }).await?;
    Ok(RunUpdate { run, moved_from, stale: false })
}

pub(crate) async fn adopt(
    tx: &mut dyn Tx,
    run_id: &str,
    run_ref: &ProviderRunRef,
    now: DateTime<Utc>,
) -> StoreResult<RunUpdate> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    if let Some(existing) = &run.provider_ref {
        if existing.id == run_ref.id && existing.attempt == run_ref.attempt {
            return Ok(RunUpdate { run, moved_from: None, stale: false });
        }
        return Err(StoreError::Conflict {
            what: format!("run {run_id} already owns provider build {} (attempt {})", existing.id, existing.attempt),
        });
    }
    if run.state.is_terminal() {
        return Err(StoreError::Conflict { what: format!("run {run_id} is already {}", run.state) });
    }
    check_ref_free(tx, &run, run_ref).await?;
    run.provider_ref = Some(run_ref.clone());
    run.unconfirmed = false;
    run.next_dispatch_at = None;
    run.next_poll_at = Some(now);
    run.updated_at = now;
    let moved_from = move_state(&mut run, RunState::Queued, now);
    st::update_run(tx, &before, &run).await?;
    st::insert_event(
        tx,
        EventRow { run: &run, kind: EventKind::Adopted, data: json!({"provider_ref": run_ref}), created_at: now },
    )
    .await?;
    Ok(RunUpdate { run, moved_from, stale: false })
}

pub(crate) async fn apply_status(
    tx: &mut dyn Tx,
    run_id: &str,
    owner: &str,
    status: &RunStatus,
    next_poll_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<RunUpdate> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    check_owner(&run, owner)?;
    run.lease_owner = None;
    run.lease_until = None;
    run.updated_at = run.updated_at.max(now);
    let stale = run.observed_at.is_some_and(|seen| status.observed_at < seen);
    let mut moved_from = None;
    if !stale && !run.state.is_terminal() {
        run.observed_at = Some(status.observed_at);
        run.raw_status = Some(status.raw_status.clone());
        if let (Some(url), Some(r)) = (&status.url, run.provider_ref.as_mut()) {
            r.url = Some(url.clone());
        }
        let at = status.observed_at;
        moved_from = move_state(&mut run, status.state, at);
        // The message explains the provider's current status: a new state without one clears
        // the old (a run that left approval no longer "waits at an approval step").
        if status.message.is_some() || moved_from.is_some() {
            run.message = status.message.clone();
        }
        if moved_from.is_some() {
            // A run first seen at its end (a short build read only once, after its callback)
            // keeps the provider's start time too, so its duration is known.
            if let Some(t) = status.started_at
                && (matches!(run.state, RunState::Running | RunState::Blocked)
                    || (run.state.is_terminal() && run.started_at.is_none()))
            {
                run.started_at = Some(t);
            }
            if let Some(t) = status.finished_at
                && run.state.is_terminal()
            {
                run.finished_at = Some(t);
            }
        }
    }
    if !run.state.is_terminal() {
        run.next_poll_at = next_poll_at;
    }
    st::update_run(tx, &before, &run).await?;
    if let Some(from) = moved_from {
        let status_json = serde_json::to_value(status).unwrap_or(Value::Null);
        st::insert_event(
            tx,
            EventRow {
                run: &run,
                kind: EventKind::StateChanged,
                data: state_event(from, &run, status_json),
                created_at: now,
            },
        )
        .await?;
    }
    Ok(RunUpdate { run, moved_from, stale })
}

pub(crate) async fn request_cancel(tx: &mut dyn Tx, run_id: &str, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    if run.state.is_terminal() {
        return Err(StoreError::Conflict { what: format!("run {run_id} is already {}", run.state) });
    }
    if run.state == RunState::Canceling {
        return Ok(RunUpdate { run, moved_from: None, stale: false });
    }
    run.cancel_requested = true;
    run.updated_at = now;
    // A run some earlier send of which may have reached the provider is not "never sent": it
    // keeps reconciling (as `canceling`) so a build that did start is found and canceled.
    let never_sent = run.provider_ref.is_none() && !run.unconfirmed && run.maybe_sent_count == 0;
    let target = if run.state == RunState::Pending && !run.is_leased(now) && never_sent {
        run.message = Some("canceled before dispatch".into());
        RunState::Canceled
    } else {
        if run.next_dispatch_at.is_none() {
            run.next_poll_at = Some(now);
        }
        RunState::Canceling
    };
    let moved_from = move_state(&mut run, target, now);
    st::update_run(tx, &before, &run).await?;
    if let Some(from) = moved_from {
        st::insert_event(
            tx,
            EventRow {
                run: &run,
                kind: EventKind::CancelRequested,
                data: state_event(from, &run, Value::Null),
                created_at: now,
            },
        )
        .await?;
    }
    Ok(RunUpdate { run, moved_from, stale: false })
}

/// Make a tracked run due for a read soon, coalescing refreshes: an occasional refresh (none in
/// the `min_gap` before it) makes the run due at `now`; during a burst of refreshes the read is
/// due `min_gap` after the run's last read, so a burst costs one provider read per `min_gap`.
/// Never makes a read later than it already was. Returns when the read is due (`None` when the
/// run is not tracked).
pub(crate) async fn poll_soon(
    tx: &mut dyn Tx,
    run_id: &str,
    now: DateTime<Utc>,
    min_gap: std::time::Duration,
) -> StoreResult<Option<DateTime<Utc>>> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    let tracked =
        !run.state.is_terminal() && run.next_dispatch_at.is_none() && (run.provider_ref.is_some() || run.unconfirmed);
    if !tracked {
        return Ok(None);
    }
    let gap = cigw_core::time::span(min_gap);
    let burst = run.last_refresh_at.is_some_and(|last| now < last + gap);
    let at = match run.last_polled_at {
        Some(read) if burst => (read + gap).max(now),
        _ => now,
    };
    run.last_refresh_at = Some(now);
    if run.next_poll_at.is_none_or(|due| due > at) {
        run.next_poll_at = Some(at);
    }
    st::update_run(tx, &before, &run).await?;
    if run.next_poll_at == Some(at) {
        tx.notify_wakeup().await?;
    }
    Ok(run.next_poll_at)
}

/// The unconfirmed runs of a target, oldest send first.
pub(crate) fn by_send_order(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
    runs.sort_by(|a, b| (a.sent_at.unwrap_or(a.created_at), &a.id).cmp(&(b.sent_at.unwrap_or(b.created_at), &b.id)));
    runs
}

pub(crate) async fn set_state(
    tx: &mut dyn Tx,
    run_id: &str,
    state: RunState,
    message: Option<&str>,
    kind: EventKind,
    now: DateTime<Utc>,
) -> StoreResult<RunUpdate> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    let moved_from = move_state(&mut run, state, now);
    if let Some(from) = moved_from {
        if let Some(m) = message {
            run.message = Some(m.to_string());
        }
        run.updated_at = now;
        st::update_run(tx, &before, &run).await?;
        st::insert_event(
            tx,
            EventRow { run: &run, kind, data: state_event(from, &run, json!({"message": message})), created_at: now },
        )
        .await?;
    }
    Ok(RunUpdate { run, moved_from, stale: false })
}

pub(crate) async fn append_event(tx: &mut dyn Tx, e: &NewEvent) -> StoreResult<EventRecord> {
    let run = locked(tx, &e.run_id).await?;
    st::insert_event(tx, EventRow { run: &run, kind: e.kind, data: e.data.clone(), created_at: e.created_at }).await
}

/// Cursor of `list_runs`: the last row's creation time (µs) and id.
pub(crate) fn encode_cursor(run: &RunRecord) -> String {
    format!("{}.{}", run.created_at.timestamp_micros(), run.id)
}

/// The inverse of [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> StoreResult<(DateTime<Utc>, String)> {
    let bad = || StoreError::Invalid { field: "cursor", message: "not a cursor returned by a previous page".into() };
    let (micros, id) = cursor.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((DateTime::from_timestamp_micros(micros).ok_or_else(bad)?, id.to_string()))
}

/// Check a page size.
pub(crate) fn check_limit(limit: u32) -> StoreResult<i64> {
    if !(1..=1000).contains(&limit) {
        return Err(StoreError::Invalid { field: "limit", message: format!("must be 1 to 1000, got {limit}") });
    }
    Ok(i64::from(limit))
}

/// Report one upstream run's end to its join: opens the join (or a new round of an expired one),
/// keeps the latest run of each target (by event id, so a late re-read of an older event
/// cannot undo a newer result), and leaves a fired join unchanged. A join found past its
/// expiry is expired first (with its events) and a new round opens.
pub(crate) async fn record_join_arrival(tx: &mut dyn Tx, a: &JoinArrival) -> StoreResult<ChainJoinRecord> {
    let now = crate::columns::trunc(a.now);
    let fresh = || ChainJoinRecord {
        chain: a.chain.clone(),
        join_key: a.join_key.clone(),
        state: JoinState::Open,
        all_of: a.all_of.clone(),
        members: Default::default(),
        opened_at: now,
        expires_at: now + cigw_core::time::span(a.ttl),
        closed_at: None,
        trigger_id: None,
    };
    let mut join = match st::lock_join(tx, &a.chain, &a.join_key).await? {
        None => fresh(),
        Some(j) if j.state == JoinState::Fired => return Ok(j),
        Some(j) if j.state == JoinState::Expired => fresh(),
        Some(j) if j.expires_at <= now => {
            expire(tx, j, now).await?;
            fresh()
        }
        Some(j) => j,
    };
    let newer = join.members.get(&a.target).is_none_or(|m| m.event_id < a.member.event_id);
    if newer {
        join.members.insert(a.target.clone(), a.member.clone());
        st::put_join(tx, &join).await?;
    }
    Ok(join)
}

/// Expire an open join: mark it and append a `join_expired` event to each member run.
async fn expire(tx: &mut dyn Tx, mut join: ChainJoinRecord, now: DateTime<Utc>) -> StoreResult<ChainJoinRecord> {
    join.state = JoinState::Expired;
    join.closed_at = Some(now);
    st::put_join(tx, &join).await?;
    let data = json!({
        "chain": join.chain,
        "join_key": join.join_key,
        "waiting_for": join.waiting_for(),
        "opened_at": join.opened_at,
        "expires_at": join.expires_at,
    });
    for member in join.members.values() {
        if let Some(run) = st::find_run(tx, &member.run_id).await? {
            let row = EventRow { run: &run, kind: EventKind::JoinExpired, data: data.clone(), created_at: now };
            st::insert_event(tx, row).await?;
        }
    }
    Ok(join)
}

/// Expire the join if it is still open and past its expiry at `now`.
pub(crate) async fn expire_join(
    tx: &mut dyn Tx,
    chain: &str,
    key: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<ChainJoinRecord>> {
    let now = crate::columns::trunc(now);
    match st::lock_join(tx, chain, key).await? {
        Some(j) if j.state == JoinState::Open && j.expires_at <= now => Ok(Some(expire(tx, j, now).await?)),
        _ => Ok(None),
    }
}

/// The tree of the trigger `id` belongs to (call it in one snapshot).
pub(crate) async fn trigger_tree(tx: &mut dyn Tx, id: &str) -> StoreResult<TriggerTree> {
    let root = match st::get_chain_link(tx, id).await? {
        Some(link) => link.root_trigger_id,
        None => {
            if !st::trigger_exists(tx, id).await? {
                return Err(StoreError::NotFound { what: format!("trigger {id}") });
            }
            id.to_string()
        }
    };
    let mut triggers = Vec::new();
    // The root may have been pruned while its descendants remain.
    if st::trigger_exists(tx, &root).await? {
        triggers.push((st::get_trigger(tx, &root).await?, None));
    }
    for link in st::chain_links_of_root(tx, &root).await? {
        let trigger = st::get_trigger(tx, &link.trigger_id).await?;
        triggers.push((trigger, Some(link)));
    }
    Ok(TriggerTree { root_trigger_id: root, triggers })
}

/// End a claimed run `skipped` when a newer run of its target and branch (or tag) exists that
/// is not a rerun and was not canceled: the newest of them replaces it, and the `superseded`
/// event and the message link it. Only a run `owner` holds and that was never possibly sent is
/// superseded; `None` when the run stays (it is the newest, or may have reached its provider).
pub(crate) async fn supersede(
    tx: &mut dyn Tx,
    run_id: &str,
    owner: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<RunUpdate>> {
    let (before, mut run) = locked_to_change(tx, run_id).await?;
    check_owner(&run, owner)?;
    let never_sent = run.provider_ref.is_none() && !run.unconfirmed && run.maybe_sent_count == 0;
    if run.state != RunState::Pending || !never_sent || run.rerun_of.is_some() {
        return Ok(None);
    }
    let Some(by) = st::newest_replacement(tx, &run).await? else { return Ok(None) };
    run.message = Some(format!("superseded by run {by} (/v1/runs/{by}) before it was sent"));
    run.updated_at = now;
    run.sending_since = None;
    let Some(from) = move_state(&mut run, RunState::Skipped, now) else { return Ok(None) };
    st::update_run(tx, &before, &run).await?;
    let detail = json!({"superseded_by": by, "links": {"superseded_by": format!("/v1/runs/{by}")}});
    let data = state_event(from, &run, detail);
    st::insert_event(tx, EventRow { run: &run, kind: EventKind::Superseded, data, created_at: now }).await?;
    Ok(Some(RunUpdate { run, moved_from: Some(from), stale: false }))
}
