//! The store's statements, each written once for both backends (`$n` placeholders, values as
//! [`Arg`]s) and run on a [`Tx`]. The filtered reads are built in [`crate::query`]; the claims
//! are described in [`crate::columns`].

use chrono::{DateTime, Utc};
use cigw_core::config::RetentionSettings;

use crate::columns::*;
use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::ops::{EventRow, StoredKey};
use crate::records::*;
use crate::sql::{Stmt, Tx};

/// Advisory lock key serializing event inserts until commit ("cigw-evt" as bytes).
/// Advisory lock namespaces (two-integer form) for idempotency keys and chain firings.
const KEY_LOCK_SPACE: i32 = 0x6369_6701;
const CHAIN_LOCK_SPACE: i32 = 0x6369_6702;
const SCHEDULE_LOCK_SPACE: i32 = 0x6369_6703;
const JOIN_LOCK_SPACE: i32 = 0x6369_6704;
const HOOK_LOCK_SPACE: i32 = 0x6369_6705;

/// `INSERT INTO runs (...) VALUES ($1, ...)`.
static INSERT_RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values: Vec<String> = (1..=RUN_COLUMNS.len()).map(|i| format!("${i}")).collect();
    format!("INSERT INTO runs ({}) VALUES ({})", RUN_COLUMNS.join(", "), values.join(", "))
});

fn run_stmt(sql: &str, r: &RunRecord) -> Stmt {
    Stmt { sql: sql.to_string(), args: run_args(r) }
}

fn provider_conflict(r: &RunRecord) -> String {
    match &r.provider_ref {
        Some(p) => {
            format!("provider build {} (attempt {}) of target {} belongs to another run", p.id, p.attempt, r.target)
        }
        None => format!("run {} already exists", r.id),
    }
}

/// PostgreSQL: hold a transaction-level advisory lock on (`space`, `a`, `b`) until commit, so
/// two transactions on the same key take turns. SQLite's single writer already does.
async fn take_turns(tx: &mut dyn Tx, space: i32, a: &str, b: &str) -> StoreResult<()> {
    if tx.backend() == Backend::Postgres {
        let sql = format!("SELECT pg_advisory_xact_lock({space}, hashtext($1 || chr(1) || $2))");
        tx.execute(Stmt::new(sql).bind(a).bind(b)).await?;
    }
    Ok(())
}

// ---- runs ----

/// Read a run and hold it against concurrent writers until commit.
pub(crate) async fn lock_run(tx: &mut dyn Tx, id: &str) -> StoreResult<Option<RunRecord>> {
    let sql = format!("SELECT * FROM runs WHERE id = $1 {}", tx.for_update());
    tx.fetch_optional(Stmt::new(sql).bind(id)).await?.map(|r| run_from_row(&*r)).transpose()
}

/// Read a run.
pub(crate) async fn find_run(tx: &mut dyn Tx, id: &str) -> StoreResult<Option<RunRecord>> {
    tx.fetch_optional(Stmt::new("SELECT * FROM runs WHERE id = $1").bind(id))
        .await?
        .map(|r| run_from_row(&*r))
        .transpose()
}

/// Insert a run row.
pub(crate) async fn insert_run(tx: &mut dyn Tx, r: &RunRecord) -> StoreResult<()> {
    tx.execute(run_stmt(&INSERT_RUN, r)).await.map_err(|e| unique_to_conflict(e, || provider_conflict(r)))?;
    Ok(())
}

/// Write the columns of `after` that differ from `before` (the run as read under its lock); a
/// provider ref owned by another run is a `Conflict`. Only changed columns: SQLite rewrites the
/// entry of every index on a column the statement sets, changed or not, and `runs` has eleven.
pub(crate) async fn update_run(tx: &mut dyn Tx, before: &RunRecord, after: &RunRecord) -> StoreResult<()> {
    let (old, new) = (run_args(before), run_args(after));
    let mut stmt = Stmt::new("UPDATE runs SET ").bind(after.id.as_str());
    let mut changed = 0;
    for (i, (was, now)) in old.into_iter().zip(new).enumerate().skip(1) {
        if was == now {
            continue;
        }
        if changed > 0 {
            stmt.push(", ");
        }
        stmt.push(RUN_COLUMNS[i]).push(" = ").push_bind(now);
        changed += 1;
    }
    if changed == 0 {
        return Ok(());
    }
    stmt.push(" WHERE id = $1");
    tx.execute(stmt).await.map_err(|e| unique_to_conflict(e, || provider_conflict(after)))?;
    Ok(())
}

/// The run owning a provider build.
pub(crate) async fn ref_owner(tx: &mut dyn Tx, target: &str, id: &str, attempt: u32) -> StoreResult<Option<String>> {
    let stmt = Stmt::new("SELECT id FROM runs WHERE target = $1 AND provider_run_id = $2 AND provider_attempt = $3")
        .bind(target)
        .bind(id)
        .bind(i64::from(attempt));
    tx.fetch_optional(stmt).await?.map(|r| r.text("id")).transpose()
}

/// Take up to `limit` runs `claim` finds due, skipping rows other claimers hold (PostgreSQL;
/// on SQLite the single writer makes claims exclusive); returned in due order.
pub(crate) async fn claim(
    tx: &mut dyn Tx,
    claim: &Claim,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<RunRecord>> {
    let stmt = claim_stmt(tx, claim, owner, now, lease_until, limit);
    let rows = tx.fetch(stmt).await?;
    let mut runs = rows.iter().map(|r| run_from_row(&**r)).collect::<StoreResult<Vec<_>>>()?;
    runs.sort_by(|a, b| ((claim.key)(a), &a.id).cmp(&((claim.key)(b), &b.id)));
    Ok(runs)
}

/// The row lock a claim takes: PostgreSQL skips rows another claimer holds; SQLite's single
/// writer needs none.
fn skip_locked(tx: &dyn Tx) -> &'static str {
    match tx.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

/// The claiming statement of `claim` on this backend.
pub(crate) fn claim_stmt(
    tx: &dyn Tx,
    claim: &Claim,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Stmt {
    let lock = skip_locked(tx);
    Stmt::new(claim.sql(lock)).bind(owner).bind(now).bind(lease_until).bind(limit)
}

/// Mark a send in progress on a run still leased by `owner`.
pub(crate) async fn mark_sending(tx: &mut dyn Tx, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let marked = tx.execute(Stmt::new(MARK_SENDING).bind(run_id).bind(owner).bind(now)).await?;
    crate::ops::marked(run_id, owner, marked)
}

/// Extend the lease of a run still held by `owner`; whether it was.
pub(crate) async fn renew_lease(
    tx: &mut dyn Tx,
    run_id: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    Ok(tx.execute(Stmt::new(RENEW_LEASE).bind(run_id).bind(owner).bind(now).bind(until)).await? == 1)
}

/// Release every run and outbox lease held by `owner`.
pub(crate) async fn release_leases(tx: &mut dyn Tx, owner: &str) -> StoreResult<u64> {
    let mut released = 0;
    for table in ["runs", "outbox"] {
        let sql = format!("UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1");
        released += tx.execute(Stmt::new(sql).bind(owner)).await?;
    }
    Ok(released)
}

/// Make a tracked run due for a poll at `now`; `NotFound` for an unknown run.
pub(crate) async fn poll_now(tx: &mut dyn Tx, run_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    if tx.fetch_optional(Stmt::new("SELECT 1 FROM runs WHERE id = $1").bind(run_id)).await?.is_none() {
        return Err(StoreError::run_not_found(run_id));
    }
    let sql = format!(
        "UPDATE runs SET next_poll_at = $2 WHERE id = $1 AND state NOT IN {TERMINAL_SQL} AND next_dispatch_at IS NULL"
    );
    tx.execute(Stmt::new(sql).bind(run_id).bind(now)).await?;
    tx.notify_wakeup().await
}

/// Unfinished runs of `target` accepted without an id, oldest send first.
pub(crate) async fn unconfirmed_runs(tx: &mut dyn Tx, target: &str, limit: i64) -> StoreResult<Vec<RunRecord>> {
    let sql = format!(
        "SELECT * FROM runs WHERE target = $1 AND unconfirmed AND state NOT IN {TERMINAL_SQL}
         ORDER BY sent_at, id LIMIT $2"
    );
    let rows = tx.fetch(Stmt::new(sql).bind(target).bind(limit)).await?;
    Ok(crate::ops::by_send_order(rows.iter().map(|r| run_from_row(&**r)).collect::<StoreResult<Vec<_>>>()?))
}

/// Remove what the retention settings no longer keep.
pub(crate) async fn prune(
    tx: &mut dyn Tx,
    now: DateTime<Utc>,
    retention: &RetentionSettings,
) -> StoreResult<PruneReport> {
    // `state || ''` keeps SQLite off the state index, which holds nearly every row of a long-lived
    // database (a scan of 100,000 runs held the writer, and start-up, for 100 ms per statement);
    // the finish-time index holds only what is old enough.
    let old = format!(
        "SELECT id FROM runs WHERE state || '' IN {TERMINAL_SQL} AND finished_at IS NOT NULL AND finished_at < $1"
    );
    let mut removed = [0; 3];
    for (n, table) in
        ["run_events WHERE run_id", "chain_firings WHERE upstream_run_id", "runs WHERE id"].iter().enumerate()
    {
        removed[n] =
            tx.execute(Stmt::new(format!("DELETE FROM {table} IN ({old})")).bind(now - retention.runs)).await?;
    }
    let [events, chain_firings, runs] = removed;
    let chain_joins = tx
        .execute(
            Stmt::new("DELETE FROM chain_joins WHERE closed_at IS NOT NULL AND closed_at < $1")
                .bind(now - retention.runs),
        )
        .await?;
    let idempotency_keys = tx
        .execute(
            Stmt::new("DELETE FROM idempotency_keys WHERE expires_at <= $1 OR created_at < $2")
                .bind(now)
                .bind(now - retention.idempotency_keys),
        )
        .await?;
    let triggers = tx
        .execute(
            // Only a trigger older than the runs' retention can have lost every run (its runs,
            // reruns included, were created after it), so younger ones are not looked at.
            Stmt::new(
                "DELETE FROM triggers WHERE created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.trigger_id = triggers.id)",
            )
            .bind(now - retention.runs),
        )
        .await?;
    let deliveries = tx
        .execute(
            Stmt::new("DELETE FROM deliveries WHERE expires_at <= $1 OR received_at < $2")
                .bind(now)
                .bind(now - retention.deliveries),
        )
        .await?;
    let outbox = tx
        .execute(
            Stmt::new("DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND finished_at < $1")
                .bind(now - retention.outbox),
        )
        .await?;
    // A schedule's latest firing stays: the scheduler resumes from it.
    let schedule_firings = tx
        .execute(
            Stmt::new(
                "DELETE FROM schedule_firings WHERE fired_at < $1 AND slot < (SELECT MAX(latest.slot) \
                 FROM schedule_firings latest WHERE latest.schedule = schedule_firings.schedule)",
            )
            .bind(now - retention.runs),
        )
        .await?;
    let hook_deliveries = tx.execute(Stmt::new("DELETE FROM hook_deliveries WHERE expires_at <= $1").bind(now)).await?;
    Ok(PruneReport {
        runs,
        events,
        triggers,
        idempotency_keys,
        deliveries,
        outbox,
        chain_firings,
        schedule_firings,
        chain_joins,
        hook_deliveries,
    })
}

// ---- triggers ----

/// Insert a trigger row (not its runs).
fn trigger_stmt(t: &NewTrigger) -> Stmt {
    Stmt::new(
        "INSERT INTO triggers (id, source, requested_by, request, labels, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&t.id)
    .bind(&t.source)
    .bind(&t.requested_by)
    .bind(t.request.clone())
    .bind(t.labels.clone())
    .bind(t.created_at)
}

/// Insert a new trigger with its runs, their `created` events and its idempotency key: one
/// round trip on PostgreSQL (where a trigger's commit rate is bound by its round trips), each
/// statement in turn on SQLite (whose writer has none to save). A duplicate id is a `Conflict`.
pub(crate) async fn insert_new_trigger(
    tx: &mut dyn Tx,
    t: &NewTrigger,
    runs: &[RunRecord],
    created: &[EventRow<'_>],
    key: Option<(&IdempotencyKey, DateTime<Utc>)>,
) -> StoreResult<()> {
    let mut parts = vec![trigger_stmt(t)];
    parts.extend(runs.iter().map(|r| run_stmt(&INSERT_RUN, r)));
    parts.extend(key.map(|(k, now)| key_stmt(k, &t.id, now)));
    // Last: the main statement of a chained one, so its event ids are drawn in run order.
    parts.push(events_stmt(tx.backend(), created));
    let conflict = |e| unique_to_conflict(e, || format!("trigger {}, one of its runs or its key already exists", t.id));
    match tx.backend() {
        Backend::Postgres => {
            tx.execute(Stmt::chained(parts)).await.map_err(conflict)?;
        }
        Backend::Sqlite => {
            for part in parts {
                tx.execute(part).await.map_err(conflict)?;
            }
        }
    }
    Ok(())
}

/// Whether a trigger exists.
pub(crate) async fn trigger_exists(tx: &mut dyn Tx, id: &str) -> StoreResult<bool> {
    Ok(tx.fetch_optional(Stmt::new("SELECT 1 FROM triggers WHERE id = $1").bind(id)).await?.is_some())
}

/// One trigger with its runs, oldest first (call it in one snapshot).
pub(crate) async fn get_trigger(tx: &mut dyn Tx, id: &str) -> StoreResult<TriggerRecord> {
    let row = tx
        .fetch_optional(Stmt::new("SELECT * FROM triggers WHERE id = $1").bind(id))
        .await?
        .ok_or_else(|| StoreError::NotFound { what: format!("trigger {id}") })?;
    let runs = tx.fetch(Stmt::new("SELECT * FROM runs WHERE trigger_id = $1 ORDER BY created_at, id").bind(id)).await?;
    trigger_from_row(&*row, runs.iter().map(|r| run_from_row(&**r)).collect::<StoreResult<Vec<_>>>()?)
}

// ---- events ----

/// Append an event. On PostgreSQL its id comes from `cigw_next_event_id()` (migration 0009),
/// which marks it as in progress until this transaction ends, so readers stop below it instead
/// of every writer waiting for the previous one's commit. SQLite's single writer commits in id
/// order anyway.
pub(crate) async fn insert_event(tx: &mut dyn Tx, e: EventRow<'_>) -> StoreResult<EventRecord> {
    let mut stmt = events_stmt(tx.backend(), std::slice::from_ref(&e));
    stmt.push(" RETURNING *");
    event_from_row(&*tx.fetch_one(stmt).await?)
}

/// Append events, their ids in the order given.
fn events_stmt(backend: Backend, events: &[EventRow<'_>]) -> Stmt {
    let (mut stmt, id) = match backend {
        Backend::Postgres => (
            Stmt::new(
                "INSERT INTO run_events (id, run_id, trigger_id, target, kind, state, data, created_at)
                 OVERRIDING SYSTEM VALUE VALUES ",
            ),
            "cigw_next_event_id(), ",
        ),
        Backend::Sqlite => (
            Stmt::new("INSERT INTO run_events (run_id, trigger_id, target, kind, state, data, created_at) VALUES "),
            "",
        ),
    };
    for (i, e) in events.iter().enumerate() {
        stmt.push(if i == 0 { "(" } else { ", (" }).push(id);
        stmt.push_bind(e.run.id.as_str()).push(", ").push_bind(e.run.trigger_id.as_str()).push(", ");
        stmt.push_bind(e.run.target.as_str()).push(", ").push_bind(e.kind.as_str()).push(", ");
        stmt.push_bind(e.run.state.as_str()).push(", ").push_bind(e.data.clone()).push(", ");
        stmt.push_bind(e.created_at).push(")");
    }
    stmt
}

/// The highest event id that no transaction in progress can still fall under: readers return
/// events up to it, so a late commit is never skipped. `None` (no bound) on SQLite. Call it in
/// its own statement before the read that uses it, so the read's snapshot sees every commit
/// below it.
pub(crate) async fn event_horizon(tx: &mut dyn Tx) -> StoreResult<Option<i64>> {
    if tx.backend() != Backend::Postgres {
        return Ok(None);
    }
    // NULL means a writer is between drawing its id and locking it: one PL/pgSQL call, so
    // microseconds. Look again briefly; a horizon unknown for long means something is stuck.
    for attempt in 1..=50u64 {
        let row = tx.fetch_one(Stmt::new("SELECT cigw_event_horizon() AS h")).await?;
        if let Some(h) = row.opt_int("h")? {
            return Ok(Some(h));
        }
        tokio::time::sleep(std::time::Duration::from_micros(100 * attempt)).await;
    }
    Err(StoreError::Unavailable { source: "the event horizon stayed unknown for 0.1 s (a writer is stuck)".into() })
}

/// The highest event id a reader may start after (0 when there is none): below the horizon, so
/// a stream started "from now" cannot miss an earlier id that commits later.
pub(crate) async fn last_event_id(tx: &mut dyn Tx) -> StoreResult<i64> {
    let stmt = match event_horizon(tx).await? {
        Some(h) => Stmt::new("SELECT MAX(id) AS id FROM run_events WHERE id <= $1").bind(h),
        None => Stmt::new("SELECT MAX(id) AS id FROM run_events"),
    };
    Ok(tx.fetch_one(stmt).await?.opt_int("id")?.unwrap_or(0))
}

// ---- idempotency keys and chain firings ----

/// An idempotency key; two intakes with the same new key take turns, so the second sees the
/// first's key.
pub(crate) async fn get_key(tx: &mut dyn Tx, scope: &str, key: &str) -> StoreResult<Option<StoredKey>> {
    let stmt = match tx.backend() {
        // Its turn and the read in one round trip (migration 0011).
        Backend::Postgres => Stmt::new(format!("SELECT * FROM cigw_locked_key({KEY_LOCK_SPACE}, $1, $2)")),
        Backend::Sqlite => Stmt::new("SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2"),
    };
    tx.fetch_optional(stmt.bind(scope).bind(key)).await?.map(|r| key_from_row(&*r)).transpose()
}

/// Remove an idempotency key.
pub(crate) async fn delete_key(tx: &mut dyn Tx, scope: &str, key: &str) -> StoreResult<()> {
    tx.execute(Stmt::new("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2").bind(scope).bind(key)).await?;
    Ok(())
}

/// Insert an idempotency key.
fn key_stmt(k: &IdempotencyKey, trigger_id: &str, now: DateTime<Utc>) -> Stmt {
    Stmt::new(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, response, trigger_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.scope)
    .bind(&k.key)
    .bind(k.fingerprint.clone())
    .bind(k.response.clone())
    .bind(trigger_id)
    .bind(now)
    .bind(k.expires_at)
}

/// A chain firing; two intakes of the same firing take turns.
pub(crate) async fn get_chain_firing(
    tx: &mut dyn Tx,
    chain: &str,
    upstream: &str,
) -> StoreResult<Option<ChainFiringRecord>> {
    take_turns(tx, CHAIN_LOCK_SPACE, chain, upstream).await?;
    let stmt =
        Stmt::new("SELECT * FROM chain_firings WHERE chain = $1 AND upstream_run_id = $2").bind(chain).bind(upstream);
    tx.fetch_optional(stmt).await?.map(|r| chain_from_row(&*r)).transpose()
}

/// The trigger a schedule slot fired, if it did; two intakes of the same slot take turns.
pub(crate) async fn get_schedule_firing(tx: &mut dyn Tx, slot: &ScheduleSlot) -> StoreResult<Option<String>> {
    let at = trunc(slot.slot);
    take_turns(tx, SCHEDULE_LOCK_SPACE, &slot.schedule, &at.to_rfc3339()).await?;
    let stmt = Stmt::new("SELECT trigger_id FROM schedule_firings WHERE schedule = $1 AND slot = $2")
        .bind(&slot.schedule)
        .bind(at);
    tx.fetch_optional(stmt).await?.map(|r| r.text("trigger_id")).transpose()
}

/// Record a fired schedule slot with its trigger.
pub(crate) async fn insert_schedule_firing(
    tx: &mut dyn Tx,
    slot: &ScheduleSlot,
    now: DateTime<Utc>,
    trigger_id: &str,
) -> StoreResult<()> {
    let stmt = Stmt::new("INSERT INTO schedule_firings (schedule, slot, fired_at, trigger_id) VALUES ($1, $2, $3, $4)")
        .bind(&slot.schedule)
        .bind(trunc(slot.slot))
        .bind(now)
        .bind(trigger_id);
    tx.execute(stmt).await?;
    Ok(())
}

/// The latest fired slot of every schedule that fired.
pub(crate) async fn latest_schedule_firings(tx: &mut dyn Tx) -> StoreResult<Vec<ScheduleFiringRecord>> {
    let stmt = Stmt::new(
        "SELECT f.* FROM schedule_firings f
         JOIN (SELECT schedule, MAX(slot) AS slot FROM schedule_firings GROUP BY schedule) l
           ON l.schedule = f.schedule AND l.slot = f.slot
         ORDER BY f.schedule",
    );
    tx.fetch(stmt).await?.iter().map(|r| schedule_firing_from_row(&**r)).collect()
}

/// Insert or complete a chain firing with its trigger.
pub(crate) async fn put_chain_firing(
    tx: &mut dyn Tx,
    f: &ChainFiring,
    now: DateTime<Utc>,
    trigger_id: &str,
) -> StoreResult<()> {
    let stmt = Stmt::new(
        "INSERT INTO chain_firings (chain, upstream_run_id, fired_at, trigger_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chain, upstream_run_id) DO UPDATE SET trigger_id = excluded.trigger_id",
    )
    .bind(&f.chain)
    .bind(&f.upstream_run_id)
    .bind(now)
    .bind(trigger_id);
    tx.execute(stmt).await?;
    Ok(())
}

// ---- tokens ----

/// Store a token; a live token with the same name is a `Conflict`.
pub(crate) async fn create_token(tx: &mut dyn Tx, token: &NewToken) -> StoreResult<TokenRecord> {
    let stmt = Stmt::new(
        "INSERT INTO api_tokens (id, name, hash, scopes, expires_at, allowed_origins, rate_limit_per_minute,
            created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(&token.id)
    .bind(&token.name)
    .bind(&token.hash)
    .bind(string_list(&token.scopes))
    .bind(token.expires_at)
    .bind(string_list(&token.allowed_origins))
    .bind(token.rate_limit_per_minute.map(i64::from))
    .bind(token.created_at);
    let rows = tx
        .fetch(stmt)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("a token named `{}` already exists", token.name)))?;
    let row = rows.first().ok_or(StoreError::NotFound { what: "row".into() })?;
    let record = token_from_row(&**row)?;
    // Its allowed origins join the CORS set of every replica.
    tx.notify_auth(&AuthChange::Token { id: record.id.clone() }).await?;
    Ok(record)
}

/// Live tokens, by name.
pub(crate) async fn list_tokens(tx: &mut dyn Tx) -> StoreResult<Vec<TokenRecord>> {
    let rows = tx.fetch(Stmt::new("SELECT * FROM api_tokens WHERE revoked_at IS NULL ORDER BY name")).await?;
    rows.iter().map(|r| token_from_row(&**r)).collect()
}

/// Revoke a live token; `NotFound` when there is none with this id.
pub(crate) async fn revoke_token(tx: &mut dyn Tx, token_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let stmt = Stmt::new("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(token_id)
        .bind(now);
    if tx.execute(stmt).await? == 0 {
        return Err(StoreError::NotFound { what: format!("token {token_id}") });
    }
    tx.notify_auth(&AuthChange::Token { id: token_id.to_string() }).await
}

/// Record a successful use of a token.
pub(crate) async fn touch_token(tx: &mut dyn Tx, token_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
    tx.execute(Stmt::new("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1").bind(token_id).bind(at)).await?;
    Ok(())
}

// ---- web UI sessions ----

/// Delete the sessions expired at `session.created_at` and store `session`.
pub(crate) async fn create_session(tx: &mut dyn Tx, session: &NewSession) -> StoreResult<SessionRecord> {
    tx.execute(Stmt::new("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(session.created_at)).await?;
    let stmt = Stmt::new(
        "INSERT INTO ui_sessions (hash, kind, token_hash, run_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
    )
    .bind(&session.hash)
    .bind(session.kind.as_str())
    .bind(session.token_hash.clone())
    .bind(session.run_id.clone())
    .bind(session.created_at)
    .bind(session.expires_at);
    session_from_row(&*tx.fetch_one(stmt).await?)
}

/// The session with this hash, unless it has expired at `now`.
pub(crate) async fn find_session(
    tx: &mut dyn Tx,
    hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<SessionRecord>> {
    let stmt = Stmt::new("SELECT * FROM ui_sessions WHERE hash = $1 AND expires_at > $2").bind(hash).bind(now);
    tx.fetch_optional(stmt).await?.map(|r| session_from_row(&*r)).transpose()
}

/// Forget a session (sign-out); a missing one is not an error.
pub(crate) async fn delete_session(tx: &mut dyn Tx, hash: &str) -> StoreResult<()> {
    if tx.execute(Stmt::new("DELETE FROM ui_sessions WHERE hash = $1").bind(hash)).await? > 0 {
        tx.notify_auth(&AuthChange::Session { hash: hash.to_string() }).await?;
    }
    Ok(())
}

// ---- hook deliveries ----

/// The columns of a delivery read one by one (headers and body included).
const HOOK_DELIVERY_FULL: &str = "hook, delivery_id, received_at, expires_at, headers, body, \
     CAST(CASE WHEN body IS NULL THEN 0 ELSE 1 END AS BIGINT) AS kept, outcome, rule, status, response, trigger_id";
/// The columns of a delivery in a listing (no headers, no body).
const HOOK_DELIVERY_LISTED: &str = "hook, delivery_id, received_at, expires_at, NULL AS headers, NULL AS body, \
     CAST(CASE WHEN body IS NULL THEN 0 ELSE 1 END AS BIGINT) AS kept, outcome, rule, status, response, trigger_id";

/// A remembered delivery (expired or not); two intakes of the same delivery take turns.
pub(crate) async fn lock_hook_delivery(
    tx: &mut dyn Tx,
    hook: &str,
    delivery_id: &str,
) -> StoreResult<Option<HookDeliveryRecord>> {
    take_turns(tx, HOOK_LOCK_SPACE, hook, delivery_id).await?;
    find_hook_delivery(tx, hook, delivery_id).await
}

/// A remembered delivery (expired or not).
pub(crate) async fn find_hook_delivery(
    tx: &mut dyn Tx,
    hook: &str,
    delivery_id: &str,
) -> StoreResult<Option<HookDeliveryRecord>> {
    let sql = format!("SELECT {HOOK_DELIVERY_FULL} FROM hook_deliveries WHERE hook = $1 AND delivery_id = $2");
    tx.fetch_optional(Stmt::new(sql).bind(hook).bind(delivery_id))
        .await?
        .map(|r| hook_delivery_from_row(&*r))
        .transpose()
}

/// Forget a delivery.
pub(crate) async fn delete_hook_delivery(tx: &mut dyn Tx, hook: &str, delivery_id: &str) -> StoreResult<()> {
    let stmt =
        Stmt::new("DELETE FROM hook_deliveries WHERE hook = $1 AND delivery_id = $2").bind(hook).bind(delivery_id);
    tx.execute(stmt).await?;
    Ok(())
}

/// Store a delivery with the trigger it started, then drop the headers and bodies of the
/// hook's deliveries older than its newest `keep`.
pub(crate) async fn insert_hook_delivery(
    tx: &mut dyn Tx,
    d: &NewHookDelivery,
    trigger_id: Option<&str>,
) -> StoreResult<()> {
    let stmt = Stmt::new(
        "INSERT INTO hook_deliveries (hook, delivery_id, received_at, expires_at, headers, body, outcome, rule,
            status, response, trigger_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&d.hook)
    .bind(&d.delivery_id)
    .bind(trunc(d.received_at))
    .bind(trunc(d.expires_at))
    .bind(d.headers.to_string())
    .bind(&d.body)
    .bind(&d.outcome)
    .bind(d.rule.clone())
    .bind(i64::from(d.status))
    .bind(d.response.to_string())
    .bind(trigger_id.map(str::to_string));
    tx.execute(stmt).await?;
    let trim = Stmt::new(
        "UPDATE hook_deliveries SET headers = NULL, body = NULL
         WHERE hook = $1 AND body IS NOT NULL AND delivery_id NOT IN (
            SELECT delivery_id FROM hook_deliveries WHERE hook = $1 AND body IS NOT NULL
            ORDER BY received_at DESC, delivery_id DESC LIMIT $2)",
    )
    .bind(&d.hook)
    .bind(i64::from(d.keep));
    tx.execute(trim).await?;
    Ok(())
}

/// The newest `limit` remembered deliveries of a hook (without headers and bodies).
pub(crate) async fn list_hook_deliveries(
    tx: &mut dyn Tx,
    hook: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<HookDeliveryRecord>> {
    let sql = format!(
        "SELECT {HOOK_DELIVERY_LISTED} FROM hook_deliveries WHERE hook = $1 AND expires_at > $2
         ORDER BY received_at DESC, delivery_id DESC LIMIT $3"
    );
    let rows = tx.fetch(Stmt::new(sql).bind(hook).bind(now).bind(limit)).await?;
    rows.iter().map(|r| hook_delivery_from_row(&**r)).collect()
}

/// Per hook: remembered deliveries, how many triggered, and the latest arrival.
pub(crate) async fn hook_delivery_stats(tx: &mut dyn Tx, now: DateTime<Utc>) -> StoreResult<Vec<HookDeliveryStats>> {
    let stmt = Stmt::new(
        "SELECT hook, COUNT(*) AS n, COUNT(trigger_id) AS triggered, MAX(received_at) AS last_received_at
         FROM hook_deliveries WHERE expires_at > $1 GROUP BY hook ORDER BY hook",
    )
    .bind(now);
    let rows = tx.fetch(stmt).await?;
    rows.iter()
        .map(|r| {
            Ok(HookDeliveryStats {
                hook: r.text("hook")?,
                deliveries: r.int("n")? as u64,
                triggered: r.int("triggered")? as u64,
                last_received_at: r.opt_time("last_received_at")?,
            })
        })
        .collect()
}

// ---- deliveries and cursors ----

/// Remember a delivery id until `expires_at`; `true` the first time (or once expired).
pub(crate) async fn record_delivery(
    tx: &mut dyn Tx,
    source: &str,
    delivery_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> StoreResult<bool> {
    let stmt = Stmt::new(
        "INSERT INTO deliveries (source, delivery_id, received_at, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, delivery_id) DO UPDATE
            SET received_at = excluded.received_at, expires_at = excluded.expires_at
            WHERE deliveries.expires_at <= excluded.received_at",
    )
    .bind(source)
    .bind(delivery_id)
    .bind(now)
    .bind(expires_at);
    Ok(tx.execute(stmt).await? == 1)
}

/// Store a named cursor.
pub(crate) async fn save_cursor(tx: &mut dyn Tx, name: &str, value: i64) -> StoreResult<()> {
    let stmt = Stmt::new(
        "INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value);
    tx.execute(stmt).await?;
    Ok(())
}

/// The value of a named cursor, if it was ever saved.
pub(crate) async fn load_cursor(tx: &mut dyn Tx, name: &str) -> StoreResult<Option<i64>> {
    tx.fetch_optional(Stmt::new("SELECT value FROM cursors WHERE name = $1").bind(name))
        .await?
        .map(|r| r.int("value"))
        .transpose()
}

// ---- supersede ----

/// The newest run of `run`'s target on the same branch and tag created after it (by creation
/// time, then id), not a rerun and not canceled: what replaces it under supersede.
pub(crate) async fn newest_replacement(tx: &mut dyn Tx, run: &RunRecord) -> StoreResult<Option<String>> {
    let same = match tx.backend() {
        Backend::Postgres => "IS NOT DISTINCT FROM",
        Backend::Sqlite => "IS",
    };
    let sql = format!(
        "SELECT id FROM runs WHERE target = $1 AND branch {same} $2 AND tag {same} $3 AND rerun_of IS NULL
           AND state <> 'canceled' AND (created_at > $4 OR (created_at = $4 AND id > $5))
         ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    let stmt = Stmt::new(sql)
        .bind(&run.target)
        .bind(run.git_ref.branch.clone())
        .bind(run.git_ref.tag.clone())
        .bind(run.created_at)
        .bind(&run.id);
    tx.fetch_optional(stmt).await?.map(|r| r.text("id")).transpose()
}

// ---- chain links and joins ----

/// Record where a chain-fired trigger sits in its tree.
pub(crate) async fn insert_chain_link(tx: &mut dyn Tx, link: &ChainLink) -> StoreResult<()> {
    let stmt = Stmt::new(
        "INSERT INTO chain_triggers (trigger_id, chain, root_trigger_id, depth, parents) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&link.trigger_id)
    .bind(&link.chain)
    .bind(&link.root_trigger_id)
    .bind(i64::from(link.depth))
    .bind(string_list(&link.parents));
    tx.execute(stmt).await?;
    Ok(())
}

/// The chain link of a trigger (none for a root trigger).
pub(crate) async fn get_chain_link(tx: &mut dyn Tx, trigger_id: &str) -> StoreResult<Option<ChainLink>> {
    let stmt = Stmt::new("SELECT * FROM chain_triggers WHERE trigger_id = $1").bind(trigger_id);
    tx.fetch_optional(stmt).await?.map(|r| chain_link_from_row(&*r)).transpose()
}

/// Every chain link of a tree, oldest trigger first.
pub(crate) async fn chain_links_of_root(tx: &mut dyn Tx, root: &str) -> StoreResult<Vec<ChainLink>> {
    let stmt = Stmt::new(
        "SELECT c.* FROM chain_triggers c JOIN triggers t ON t.id = c.trigger_id
         WHERE c.root_trigger_id = $1 ORDER BY c.depth, t.created_at, t.id",
    )
    .bind(root);
    tx.fetch(stmt).await?.iter().map(|r| chain_link_from_row(&**r)).collect()
}

/// A join, locked until commit; two transactions on the same join take turns.
pub(crate) async fn lock_join(tx: &mut dyn Tx, chain: &str, key: &str) -> StoreResult<Option<ChainJoinRecord>> {
    take_turns(tx, JOIN_LOCK_SPACE, chain, key).await?;
    let sql = format!("SELECT * FROM chain_joins WHERE chain = $1 AND join_key = $2 {}", tx.for_update());
    tx.fetch_optional(Stmt::new(sql).bind(chain).bind(key)).await?.map(|r| join_from_row(&*r)).transpose()
}

/// Insert or replace a join.
pub(crate) async fn put_join(tx: &mut dyn Tx, j: &ChainJoinRecord) -> StoreResult<()> {
    let members = serde_json::to_value(&j.members).map_err(|e| corrupt(format!("join members: {e}")))?;
    let stmt = Stmt::new(
        "INSERT INTO chain_joins (chain, join_key, state, all_of, members, opened_at, expires_at, closed_at, trigger_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (chain, join_key) DO UPDATE SET state = excluded.state, all_of = excluded.all_of,
            members = excluded.members, opened_at = excluded.opened_at, expires_at = excluded.expires_at,
            closed_at = excluded.closed_at, trigger_id = excluded.trigger_id",
    )
    .bind(&j.chain)
    .bind(&j.join_key)
    .bind(j.state.as_str())
    .bind(string_list(&j.all_of))
    .bind(members)
    .bind(j.opened_at)
    .bind(j.expires_at)
    .bind(j.closed_at)
    .bind(j.trigger_id.clone());
    tx.execute(stmt).await?;
    Ok(())
}

/// The open joins, soonest expiry first.
pub(crate) async fn open_joins(tx: &mut dyn Tx) -> StoreResult<Vec<ChainJoinRecord>> {
    let stmt = Stmt::new("SELECT * FROM chain_joins WHERE state = 'open' ORDER BY expires_at, chain, join_key");
    tx.fetch(stmt).await?.iter().map(|r| join_from_row(&**r)).collect()
}

/// Move a named cursor forward to `value`; never back (two replicas may consume the same events
/// and save their positions in any order).
pub(crate) async fn advance_cursor(tx: &mut dyn Tx, name: &str, value: i64) -> StoreResult<()> {
    let stmt = Stmt::new(
        "INSERT INTO cursors (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE cursors.value < excluded.value",
    )
    .bind(name)
    .bind(value);
    tx.execute(stmt).await?;
    Ok(())
}

/// A named cursor, created at the newest event when it does not exist yet.
pub(crate) async fn start_cursor(tx: &mut dyn Tx, name: &str) -> StoreResult<i64> {
    if let Some(value) = load_cursor(tx, name).await? {
        return Ok(value);
    }
    let head = last_event_id(tx).await?;
    let stmt = Stmt::new("INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(head);
    tx.execute(stmt).await?;
    // Another replica may have created it first: its value counts.
    Ok(load_cursor(tx, name).await?.unwrap_or(head))
}

// ---- notification outbox ----

/// Insert an outbox row unless (notification, event id) is there already; whether it was new.
pub(crate) async fn insert_outbox(tx: &mut dyn Tx, row: &NewOutboxRow) -> StoreResult<bool> {
    let stmt = Stmt::new(
        "INSERT INTO outbox (notification, event_id, run_id, payload, status, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)
         ON CONFLICT (notification, event_id) DO NOTHING",
    )
    .bind(&row.notification)
    .bind(row.event_id)
    .bind(&row.run_id)
    .bind(row.payload.clone())
    .bind(trunc(row.created_at));
    Ok(tx.execute(stmt).await? == 1)
}

/// Takes up to `$4` pending rows due at `$2` whose lease is free, each only when no earlier
/// event of its run is still pending for the same notification (so a run's events go out in
/// order), leasing them to `$1` until `$3` and counting an attempt.
const OUTBOX_CLAIM: &str = "UPDATE outbox SET lease_owner = $1, lease_until = $3, attempts = attempts + 1
     WHERE id IN (
        SELECT o.id FROM outbox o
        WHERE o.status = 'pending' AND o.next_attempt_at <= $2
          AND (o.lease_owner IS NULL OR o.lease_until IS NULL OR o.lease_until <= $2)
          AND NOT EXISTS (
              SELECT 1 FROM outbox e
              WHERE e.run_id = o.run_id AND e.notification = o.notification
                AND e.event_id < o.event_id AND e.status = 'pending')
        ORDER BY o.next_attempt_at, o.id LIMIT $4 {lock})
     RETURNING *";

/// The outbox claiming statement on this backend.
pub(crate) fn outbox_claim_stmt(
    tx: &dyn Tx,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Stmt {
    let lock = skip_locked(tx);
    Stmt::new(OUTBOX_CLAIM.replace("{lock}", lock)).bind(owner).bind(now).bind(lease_until).bind(limit)
}

/// Claim due outbox rows, oldest due first.
pub(crate) async fn claim_outbox(
    tx: &mut dyn Tx,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<OutboxRecord>> {
    let rows = tx.fetch(outbox_claim_stmt(tx, owner, now, lease_until, limit)).await?;
    let mut claimed = rows.iter().map(|r| outbox_from_row(&**r)).collect::<StoreResult<Vec<_>>>()?;
    claimed.sort_by_key(|r| (r.next_attempt_at, r.id));
    Ok(claimed)
}

/// Record an attempt's outcome on a row `owner` still holds and release it; `Conflict` when it
/// does not (its lease ended and another worker took it, or it was redelivered meanwhile).
pub(crate) async fn record_outbox(
    tx: &mut dyn Tx,
    id: i64,
    owner: &str,
    outcome: &OutboxOutcome,
    now: DateTime<Utc>,
) -> StoreResult<OutboxRecord> {
    let held = "WHERE id = $1 AND lease_owner = $2 AND status = 'pending' RETURNING *";
    let release = "lease_owner = NULL, lease_until = NULL, last_attempt_at = $3";
    let stmt = match outcome {
        OutboxOutcome::Delivered { status } => Stmt::new(format!(
            "UPDATE outbox SET status = 'delivered', finished_at = $3, last_status = $4, {release} {held}"
        ))
        .bind(id)
        .bind(owner)
        .bind(now)
        .bind(i64::from(*status)),
        OutboxOutcome::Retry { at, status, error } => Stmt::new(format!(
            "UPDATE outbox SET next_attempt_at = $4, last_status = COALESCE($5, last_status), last_error = $6, \
             {release} {held}"
        ))
        .bind(id)
        .bind(owner)
        .bind(now)
        .bind(trunc(*at))
        .bind(status.map(i64::from))
        .bind(error.as_str()),
        OutboxOutcome::Dead { status, error } => Stmt::new(format!(
            "UPDATE outbox SET status = 'dead', finished_at = $3, last_status = COALESCE($4, last_status), \
             last_error = $5, {release} {held}"
        ))
        .bind(id)
        .bind(owner)
        .bind(now)
        .bind(status.map(i64::from))
        .bind(error.as_str()),
    };
    match tx.fetch_optional(stmt).await? {
        Some(row) => outbox_from_row(&*row),
        None => {
            get_outbox(tx, id).await?;
            Err(StoreError::Conflict { what: format!("delivery {id} is not leased by {owner}") })
        }
    }
}

/// One outbox row; `NotFound` when there is none.
pub(crate) async fn get_outbox(tx: &mut dyn Tx, id: i64) -> StoreResult<OutboxRecord> {
    tx.fetch_optional(Stmt::new("SELECT * FROM outbox WHERE id = $1").bind(id))
        .await?
        .map(|r| outbox_from_row(&*r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound { what: format!("delivery {id}") })
}

/// Make a delivered or dead-lettered row pending again, due at `now`, with its attempts
/// counted afresh; a pending row is a `Conflict`.
pub(crate) async fn redeliver_outbox(tx: &mut dyn Tx, id: i64, now: DateTime<Utc>) -> StoreResult<OutboxRecord> {
    let stmt = Stmt::new(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, finished_at = NULL,
            lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND status IN ('delivered', 'dead') RETURNING *",
    )
    .bind(id)
    .bind(now);
    match tx.fetch_optional(stmt).await? {
        Some(row) => outbox_from_row(&*row),
        None => {
            let row = get_outbox(tx, id).await?;
            Err(StoreError::Conflict { what: format!("delivery {id} is {} already", row.status.as_str()) })
        }
    }
}
