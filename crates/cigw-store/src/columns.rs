//! Column lists and conversions both backends share.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cigw_core::params::MASK;
use cigw_core::{GitRef, ParamValue, Parameters, ProviderKind, ProviderRunRef, RunState};
use serde_json::Value;

use crate::error::{StoreError, StoreResult};
use crate::model::{EventKind, RunRecord};

/// The `runs` columns in bind order (`id` first).
pub(crate) const RUN_COLUMNS: [&str; 41] = [
    "id",
    "trigger_id",
    "target",
    "provider",
    "account",
    "branch",
    "tag",
    "sha",
    "parameters",
    "state",
    "raw_status",
    "message",
    "provider_run_id",
    "provider_number",
    "provider_attempt",
    "provider_url",
    "provider_extra",
    "unconfirmed",
    "sent_at",
    "confirm_deadline",
    "dispatch_attempts",
    "lease_owner",
    "lease_until",
    "next_dispatch_at",
    "next_poll_at",
    "observed_at",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
    "updated_at",
    "chain_parent",
    "rerun_of",
    "rerun_failed_only",
    "requested_by",
    "cancel_requested",
    "maybe_sent_count",
    "last_maybe_sent_at",
    "last_polled_at",
    "last_refresh_at",
    "sending_since",
];

/// Extends the lease of a run still held by its owner (binds: run id, owner, now, new end).
/// A lease that already ended is not renewed: another claimer may hold the run by then.
pub(crate) const RENEW_LEASE: &str =
    "UPDATE runs SET lease_until = $4 WHERE id = $1 AND lease_owner = $2 AND lease_until > $3";

/// Terminal states as an SQL list, for claim queries.
pub(crate) const TERMINAL_SQL: &str = "('succeeded', 'failed', 'canceled', 'skipped', 'error')";

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { message: what.to_string() }
}

pub(crate) fn parse_state(s: &str) -> StoreResult<RunState> {
    RunState::from_str(s).map_err(corrupt)
}

pub(crate) fn parse_kind(s: &str) -> StoreResult<EventKind> {
    EventKind::parse(s).ok_or_else(|| corrupt(format!("event kind `{s}`")))
}

pub(crate) fn parse_provider(s: &str) -> StoreResult<ProviderKind> {
    ProviderKind::from_str(s).map_err(corrupt)
}

pub(crate) fn parse_parameters(v: &Value, run_id: &str) -> StoreResult<Parameters> {
    Parameters::from_storage_json(v).map_err(|e| corrupt(format!("run {run_id}: {e}")))
}

/// Whether a run still needs its secret parameter values: only while its trigger may still have
/// to be sent (pending, retried after a failed or ambiguous attempt, or accepted without an id
/// and not yet matched). A run that owns a provider build or has ended never sends a trigger
/// again (a rerun goes through the provider's own rerun, which takes no parameters).
pub(crate) fn needs_secret_values(run: &RunRecord) -> bool {
    run.provider_ref.is_none() && !run.state.is_terminal()
}

/// The run's parameters with every secret value replaced by the mask, once the run no longer
/// needs them: the values stay in the database only while the trigger may still be sent, not
/// for the whole retention (docs/storage.md, "Secret parameters at rest"). A dropped value reads back as
/// the string `***`; the type of the parameter is not kept.
pub(crate) fn forget_secret_values(run: &mut RunRecord) {
    if needs_secret_values(run) || !run.parameters.iter().any(|(_, e)| e.secret && !is_mask(&e.value)) {
        return;
    }
    let mut kept = Parameters::new();
    for (name, e) in run.parameters.iter() {
        let value = if e.secret { ParamValue::String(MASK.into()) } else { e.value.clone() };
        kept.insert(name, value, e.secret);
    }
    run.parameters = kept;
}

fn is_mask(v: &ParamValue) -> bool {
    matches!(v, ParamValue::String(s) if s == MASK)
}

/// The `parameters` column of a run: secret values only while it needs them
/// ([`forget_secret_values`]), whichever path wrote the row.
pub(crate) fn stored_parameters(run: &RunRecord) -> Value {
    if needs_secret_values(run) {
        return run.parameters.to_storage_json();
    }
    let mut masked = run.clone();
    forget_secret_values(&mut masked);
    masked.parameters.to_storage_json()
}

pub(crate) fn git_ref(branch: Option<String>, tag: Option<String>, sha: Option<String>) -> GitRef {
    GitRef { branch, tag, sha }
}

/// Rebuild a provider ref from its columns.
pub(crate) fn provider_ref(
    id: Option<String>,
    number: Option<i64>,
    attempt: Option<i64>,
    url: Option<String>,
    extra: Option<Value>,
) -> Option<ProviderRunRef> {
    id.map(|id| ProviderRunRef {
        id,
        number: number.and_then(|n| u64::try_from(n).ok()),
        attempt: attempt.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
        url,
        extra: extra.unwrap_or(Value::Null),
    })
}

/// Microseconds since the epoch (SQLite's time representation).
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`micros`].
pub(crate) fn from_micros(v: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(format!("time {v} is out of range")))
}

/// A time truncated to the microsecond precision both backends store.
pub(crate) fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Map a unique-constraint violation to `Conflict`, anything else through `From<sqlx::Error>`.
pub(crate) fn unique_to_conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict { what: what() };
    }
    e.into()
}

/// Serialize a list of strings to JSON text.
pub(crate) fn string_list(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::String).collect())
}

/// Parse a JSON list of strings.
pub(crate) fn parse_string_list(v: &Value, what: &str) -> StoreResult<Vec<String>> {
    serde_json::from_value(v.clone()).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// One kind of claim: which runs are due and what claiming records, written once for both
/// backends (they differ only in placeholder syntax and row locking).
pub(crate) struct Claim {
    /// Extra assignments made while claiming.
    also_set: &'static str,
    /// What makes a run due, besides being unfinished with a free lease (`{now}` is the time).
    due: &'static str,
    /// The due-time column, oldest first.
    order_by: &'static str,
    /// The same column read from a record, to return the claimed runs in that order.
    pub(crate) key: fn(&RunRecord) -> Option<DateTime<Utc>>,
}

/// Runs due for dispatch; each claim counts an attempt. A run whose send mark is still set was
/// being sent by a claimer that never recorded the outcome (the process died, or lost its lease
/// mid-call): that send may have reached the provider, so it counts as a possibly-sent send,
/// made no later than the end of the lease it was made under. A claimer that died before
/// sending left no mark, and nothing is counted (SET reads the row's values from before the
/// update).
pub(crate) const DISPATCH_CLAIM: Claim = Claim {
    also_set: ", dispatch_attempts = dispatch_attempts + 1, \
               maybe_sent_count = maybe_sent_count + CASE WHEN sending_since IS NOT NULL THEN 1 ELSE 0 END, \
               last_maybe_sent_at = CASE WHEN sending_since IS NOT NULL THEN COALESCE(lease_until, sending_since) \
                                    ELSE last_maybe_sent_at END, \
               sending_since = NULL",
    due: "next_dispatch_at IS NOT NULL AND next_dispatch_at <= {now}",
    order_by: "next_dispatch_at",
    key: |r| r.next_dispatch_at,
};

/// Marks a send in progress on a run still leased by its owner (binds: run id, owner, now).
pub(crate) const MARK_SENDING: &str =
    "UPDATE runs SET sending_since = $3 WHERE id = $1 AND lease_owner = $2 AND lease_until > $3";

/// Dispatched runs (with a provider build, or accepted without an id) due for a poll; the claim
/// time is kept as the run's last provider read (refreshes are coalesced against it).
pub(crate) const POLL_CLAIM: Claim = Claim {
    also_set: ", last_polled_at = {now}",
    due: "next_poll_at IS NOT NULL AND next_poll_at <= {now} AND next_dispatch_at IS NULL \
          AND (provider_run_id IS NOT NULL OR unconfirmed)",
    order_by: "next_poll_at",
    key: |r| r.next_poll_at,
};

impl Claim {
    /// The claiming statement. Parameters: $1 owner, $2 now, $3 lease end, $4 limit; `lock`
    /// follows the inner SELECT (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    pub(crate) fn sql(&self, lock: &str) -> String {
        let (owner, now, lease, limit) = ("$1", "$2", "$3", "$4");
        format!(
            "UPDATE runs SET lease_owner = {owner}, lease_until = {lease}, updated_at = {now}{also_set}
             WHERE id IN (
                SELECT id FROM runs WHERE {waiting} ORDER BY {order_by}, id LIMIT {limit} {lock})
             RETURNING *",
            also_set = self.also_set.replace("{now}", now),
            waiting = self.waiting(now),
            order_by = self.order_by,
        )
    }

    /// The due time of the oldest run this claim would take first. Parameter: $1 now.
    pub(crate) fn oldest_sql(&self) -> String {
        let order_by = self.order_by;
        format!("SELECT {order_by} FROM runs WHERE {} ORDER BY {order_by} LIMIT 1", self.waiting("$1"))
    }

    /// What makes a run claimable at `now` (a placeholder): due, unfinished, its lease free.
    fn waiting(&self, now: &str) -> String {
        format!(
            "{due} AND state NOT IN {TERMINAL_SQL} AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= {now})",
            due = self.due.replace("{now}", now)
        )
    }
}
