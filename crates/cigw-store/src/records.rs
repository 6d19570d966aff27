//! Records to rows and back, once for both backends: a row is read through [`Row`], a run is
//! written as the arguments of [`RUN_COLUMNS`].

use crate::columns::*;
use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::ops::StoredKey;
use crate::sql::{Arg, Row};

pub(crate) fn run_from_row(row: &dyn Row) -> StoreResult<RunRecord> {
    let id = row.text("id")?;
    let parameters = parse_parameters(&row.json("parameters")?, &id)?;
    Ok(RunRecord {
        trigger_id: row.text("trigger_id")?,
        target: row.text("target")?,
        provider: parse_provider(&row.text("provider")?)?,
        account: row.text("account")?,
        git_ref: git_ref(row.opt_text("branch")?, row.opt_text("tag")?, row.opt_text("sha")?),
        parameters,
        state: parse_state(&row.text("state")?)?,
        raw_status: row.opt_text("raw_status")?,
        message: row.opt_text("message")?,
        provider_ref: provider_ref(
            row.opt_text("provider_run_id")?,
            row.opt_int("provider_number")?,
            row.opt_int("provider_attempt")?,
            row.opt_text("provider_url")?,
            row.opt_json("provider_extra")?,
        ),
        unconfirmed: row.flag("unconfirmed")?,
        sent_at: row.opt_time("sent_at")?,
        confirm_deadline: row.opt_time("confirm_deadline")?,
        dispatch_attempts: count(row.int("dispatch_attempts")?),
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: row.opt_time("lease_until")?,
        next_dispatch_at: row.opt_time("next_dispatch_at")?,
        next_poll_at: row.opt_time("next_poll_at")?,
        observed_at: row.opt_time("observed_at")?,
        created_at: row.time("created_at")?,
        queued_at: row.opt_time("queued_at")?,
        started_at: row.opt_time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        updated_at: row.time("updated_at")?,
        chain_parent: row.opt_text("chain_parent")?,
        rerun_of: row.opt_text("rerun_of")?,
        rerun_failed_only: row.flag("rerun_failed_only")?,
        requested_by: row.text("requested_by")?,
        cancel_requested: row.flag("cancel_requested")?,
        maybe_sent_count: count(row.int("maybe_sent_count")?),
        last_maybe_sent_at: row.opt_time("last_maybe_sent_at")?,
        last_polled_at: row.opt_time("last_polled_at")?,
        last_refresh_at: row.opt_time("last_refresh_at")?,
        sending_since: row.opt_time("sending_since")?,
        id,
    })
}

/// A stored counter, saturated at `u32::MAX`.
fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The values of [`RUN_COLUMNS`], in that order.
pub(crate) fn run_args(r: &RunRecord) -> Vec<Arg> {
    let pr = r.provider_ref.as_ref();
    vec![
        r.id.clone().into(),
        r.trigger_id.clone().into(),
        r.target.clone().into(),
        r.provider.as_str().into(),
        r.account.clone().into(),
        r.git_ref.branch.clone().into(),
        r.git_ref.tag.clone().into(),
        r.git_ref.sha.clone().into(),
        stored_parameters(r).into(),
        r.state.as_str().into(),
        r.raw_status.clone().into(),
        r.message.clone().into(),
        pr.map(|p| p.id.clone()).into(),
        pr.and_then(|p| p.number).map(|n| n as i64).into(),
        pr.map(|p| i64::from(p.attempt)).into(),
        pr.and_then(|p| p.url.clone()).into(),
        pr.filter(|p| !p.extra.is_null()).map(|p| p.extra.clone()).into(),
        r.unconfirmed.into(),
        r.sent_at.into(),
        r.confirm_deadline.into(),
        i64::from(r.dispatch_attempts).into(),
        r.lease_owner.clone().into(),
        r.lease_until.into(),
        r.next_dispatch_at.into(),
        r.next_poll_at.into(),
        r.observed_at.into(),
        r.created_at.into(),
        r.queued_at.into(),
        r.started_at.into(),
        r.finished_at.into(),
        r.updated_at.into(),
        r.chain_parent.clone().into(),
        r.rerun_of.clone().into(),
        r.rerun_failed_only.into(),
        r.requested_by.clone().into(),
        r.cancel_requested.into(),
        i64::from(r.maybe_sent_count).into(),
        r.last_maybe_sent_at.into(),
        r.last_polled_at.into(),
        r.last_refresh_at.into(),
        r.sending_since.into(),
    ]
}

pub(crate) fn event_from_row(row: &dyn Row) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: row.int("id")?,
        run_id: row.text("run_id")?,
        trigger_id: row.text("trigger_id")?,
        target: row.text("target")?,
        kind: parse_kind(&row.text("kind")?)?,
        state: parse_state(&row.text("state")?)?,
        data: row.json("data")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) fn token_from_row(row: &dyn Row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        hash: row.text("hash")?,
        scopes: parse_string_list(&row.json("scopes")?, "api_tokens.scopes")?,
        expires_at: row.opt_time("expires_at")?,
        allowed_origins: parse_string_list(&row.json("allowed_origins")?, "api_tokens.allowed_origins")?,
        rate_limit_per_minute: row.opt_int("rate_limit_per_minute")?.map(|v| v as u32),
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
    })
}

pub(crate) fn session_from_row(row: &dyn Row) -> StoreResult<SessionRecord> {
    let kind = row.text("kind")?;
    Ok(SessionRecord {
        hash: row.text("hash")?,
        kind: SessionKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt { message: format!("ui_sessions.kind `{kind}`") })?,
        token_hash: row.opt_text("token_hash")?,
        run_id: row.opt_text("run_id")?,
        created_at: row.time("created_at")?,
        expires_at: row.time("expires_at")?,
    })
}

pub(crate) fn chain_from_row(row: &dyn Row) -> StoreResult<ChainFiringRecord> {
    Ok(ChainFiringRecord {
        chain: row.text("chain")?,
        upstream_run_id: row.text("upstream_run_id")?,
        fired_at: row.time("fired_at")?,
        trigger_id: row.opt_text("trigger_id")?,
    })
}

pub(crate) fn schedule_firing_from_row(row: &dyn Row) -> StoreResult<ScheduleFiringRecord> {
    Ok(ScheduleFiringRecord {
        schedule: row.text("schedule")?,
        slot: row.time("slot")?,
        fired_at: row.time("fired_at")?,
        trigger_id: row.text("trigger_id")?,
    })
}

pub(crate) fn hook_delivery_from_row(row: &dyn Row) -> StoreResult<HookDeliveryRecord> {
    let parse = |col: &str, text: String| {
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { message: format!("hook_deliveries.{col}: {e}") })
    };
    Ok(HookDeliveryRecord {
        hook: row.text("hook")?,
        delivery_id: row.text("delivery_id")?,
        received_at: row.time("received_at")?,
        expires_at: row.time("expires_at")?,
        headers: row.opt_text("headers")?.map(|t| parse("headers", t)).transpose()?,
        body: row.opt_text("body")?,
        kept: row.int("kept")? != 0,
        outcome: row.text("outcome")?,
        rule: row.opt_text("rule")?,
        status: u16::try_from(row.int("status")?).unwrap_or(500),
        response: parse("response", row.text("response")?)?,
        trigger_id: row.opt_text("trigger_id")?,
    })
}

pub(crate) fn trigger_from_row(row: &dyn Row, runs: Vec<RunRecord>) -> StoreResult<TriggerRecord> {
    Ok(TriggerRecord {
        id: row.text("id")?,
        source: row.text("source")?,
        requested_by: row.text("requested_by")?,
        request: row.json("request")?,
        labels: row.json("labels")?,
        created_at: row.time("created_at")?,
        runs,
    })
}

pub(crate) fn key_from_row(row: &dyn Row) -> StoreResult<StoredKey> {
    Ok(StoredKey {
        fingerprint: row.json("fingerprint")?,
        response: row.json("response")?,
        trigger_id: row.text("trigger_id")?,
        expires_at: row.time("expires_at")?,
    })
}

pub(crate) fn chain_link_from_row(row: &dyn Row) -> StoreResult<ChainLink> {
    Ok(ChainLink {
        trigger_id: row.text("trigger_id")?,
        chain: row.text("chain")?,
        root_trigger_id: row.text("root_trigger_id")?,
        depth: count(row.int("depth")?),
        parents: serde_json::from_value(row.json("parents")?).map_err(corrupt)?,
    })
}

pub(crate) fn join_from_row(row: &dyn Row) -> StoreResult<ChainJoinRecord> {
    let state = row.text("state")?;
    Ok(ChainJoinRecord {
        chain: row.text("chain")?,
        join_key: row.text("join_key")?,
        state: JoinState::parse(&state).ok_or_else(|| corrupt(format!("join state `{state}`")))?,
        all_of: serde_json::from_value(row.json("all_of")?).map_err(corrupt)?,
        members: serde_json::from_value(row.json("members")?).map_err(corrupt)?,
        opened_at: row.time("opened_at")?,
        expires_at: row.time("expires_at")?,
        closed_at: row.opt_time("closed_at")?,
        trigger_id: row.opt_text("trigger_id")?,
    })
}

pub(crate) fn outbox_from_row(row: &dyn Row) -> StoreResult<OutboxRecord> {
    let status = row.text("status")?;
    Ok(OutboxRecord {
        id: row.int("id")?,
        notification: row.text("notification")?,
        event_id: row.int("event_id")?,
        run_id: row.text("run_id")?,
        payload: row.json("payload")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt { message: format!("outbox.status `{status}`") })?,
        attempts: count(row.int("attempts")?),
        next_attempt_at: row.time("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
        last_status: row.opt_int("last_status")?.and_then(|s| u16::try_from(s).ok()),
        last_attempt_at: row.opt_time("last_attempt_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: row.opt_time("lease_until")?,
        created_at: row.time("created_at")?,
        finished_at: row.opt_time("finished_at")?,
    })
}
