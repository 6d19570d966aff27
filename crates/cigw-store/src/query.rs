//! Read queries built from the filters that are set, once for both backends.
//!
//! An optional filter written as `(? IS NULL OR col = ?)` is one plan for every combination of
//! filters, and SQLite's only plan for it is a full scan (reading one run's events took 76 ms
//! at 1 M events instead of 0.1 ms). Each query here names only the columns it filters on, so
//! the planner sees plain equalities and ranges that match an index (`0001`/`0003` migrations;
//! `tests/suite` checks the plans with `testing::explain`).

use chrono::{DateTime, Utc};

use crate::columns::TERMINAL_SQL;
use crate::model::{EventFilter, OutboxFilter, OutboxStatus, RunFilter};
use crate::sql::Stmt;

/// Appends `WHERE` before the first condition and `AND` before the others.
struct Conditions<'a> {
    stmt: &'a mut Stmt,
    any: bool,
}

impl<'a> Conditions<'a> {
    fn new(stmt: &'a mut Stmt) -> Self {
        Self { stmt, any: false }
    }

    /// Start the next condition; the caller pushes its SQL and binds.
    fn next(&mut self) -> &mut Stmt {
        self.stmt.push(if self.any { " AND " } else { " WHERE " });
        self.any = true;
        self.stmt
    }

    fn equals(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.next().push(column).push(" = ").push_bind(v);
        }
    }
}

/// `events_after`: the events after `after_id` matching `filter`, in id order. With a run,
/// trigger or target the matching `(column, id)` index serves it; otherwise the primary key.
pub(crate) fn events_after(after_id: i64, up_to: Option<i64>, filter: &EventFilter, limit: i64) -> Stmt {
    let mut stmt = Stmt::new("SELECT * FROM run_events");
    let mut c = Conditions::new(&mut stmt);
    c.next().push("id > ").push_bind(after_id);
    if let Some(h) = up_to {
        c.next().push("id <= ").push_bind(h);
    }
    c.equals("run_id", filter.run_id.as_deref());
    c.equals("trigger_id", filter.trigger_id.as_deref());
    c.equals("target", filter.target.as_deref());
    c.equals("state", filter.state.map(|s| s.as_str()));
    stmt.push(" ORDER BY id LIMIT ").push_bind(limit);
    stmt
}

/// `list_runs`: runs matching `filter`, newest first, after the cursor `(created_at, id)`.
/// The cursor is one row-value comparison, which both planners turn into an index range.
pub(crate) fn list_runs(filter: &RunFilter, after: Option<&(DateTime<Utc>, String)>, limit: i64) -> Stmt {
    let mut stmt = Stmt::new("SELECT * FROM runs");
    let mut c = Conditions::new(&mut stmt);
    c.equals("trigger_id", filter.trigger_id.as_deref());
    c.equals("target", filter.target.as_deref());
    c.equals("state", filter.state.map(|s| s.as_str()));
    if let Some(since) = filter.since {
        c.next().push("created_at >= ").push_bind(since);
    }
    if let Some((at, id)) = after {
        c.next().push("(created_at, id) < (").push_bind(*at).push(", ").push_bind(id.as_str()).push(")");
    }
    stmt.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
    stmt
}

/// `count_runs_by_state`, as (state, count) rows.
///
/// Why it does not scan `runs`: non-terminal runs are counted through the partial index
/// `runs_active`, which holds only them (a few, whatever the retention); terminal runs, which
/// are nearly all of the table, are read from `run_state_totals`, kept exact by triggers in the
/// transaction that ends or prunes a run. Both halves are one statement, so one snapshot. A
/// cache refreshed every N seconds would still scan and show stale counts; counting every
/// state in a counter table would make each intake on PostgreSQL wait for the `pending` row.
pub(crate) fn count_runs_by_state() -> Stmt {
    Stmt::new(format!(
        "SELECT state, COUNT(*) AS n FROM runs WHERE state NOT IN {TERMINAL_SQL} GROUP BY state
         UNION ALL
         SELECT state, CAST(SUM(runs) AS BIGINT) AS n FROM run_state_totals GROUP BY state HAVING SUM(runs) > 0"
    ))
}

/// `count_unconfirmed_runs`: unfinished runs accepted without an id and not yet matched, from
/// the partial index `runs_active` alone.
pub(crate) fn count_unconfirmed() -> Stmt {
    Stmt::new(format!("SELECT COUNT(*) AS n FROM runs WHERE state NOT IN {TERMINAL_SQL} AND unconfirmed"))
}

/// `oldest_due_dispatch`: the due time of the oldest unclaimed run due for dispatch, in the
/// dispatch claim's own terms (the first row its index scan would take).
pub(crate) fn oldest_due_dispatch(now: DateTime<Utc>) -> Stmt {
    Stmt::new(crate::columns::DISPATCH_CLAIM.oldest_sql()).bind(now)
}

/// `list_outbox`: rows matching `filter`, newest first, before the cursor id. With a status the
/// `(status, id)` index serves it; with a run the `(run_id, ...)` one; otherwise the primary key.
pub(crate) fn list_outbox(filter: &OutboxFilter, before: Option<i64>, limit: i64) -> Stmt {
    let mut stmt = Stmt::new("SELECT * FROM outbox");
    let mut c = Conditions::new(&mut stmt);
    c.equals("notification", filter.notification.as_deref());
    c.equals("status", filter.status.map(|s| s.as_str()));
    c.equals("run_id", filter.run_id.as_deref());
    if let Some(id) = before {
        c.next().push("id < ").push_bind(id);
    }
    stmt.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    stmt
}

/// `count_outbox`: rows in one status, from the `(status, id)` index.
pub(crate) fn count_outbox(status: OutboxStatus) -> Stmt {
    Stmt::new("SELECT COUNT(*) AS n FROM outbox WHERE status = $1").bind(status.as_str())
}

/// `find_token_by_hash`.
pub(crate) fn token_by_hash(hash: &str) -> Stmt {
    Stmt::new("SELECT * FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL").bind(hash)
}

/// The statement `query` stands for, with placeholder values where it has none of its own.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn hot_query(tx: &dyn crate::sql::Tx, query: &crate::model::HotQuery) -> crate::StoreResult<Stmt> {
    use crate::model::HotQuery;
    let claim = |c| crate::statements::claim_stmt(tx, c, "explain", Utc::now(), Utc::now(), 1);
    Ok(match query {
        HotQuery::EventsAfter { after_id, filter } => events_after(*after_id, Some(i64::MAX), filter, 100),
        HotQuery::ListRuns { filter, cursor } => {
            let after = cursor.as_deref().map(crate::ops::decode_cursor).transpose()?;
            list_runs(filter, after.as_ref(), crate::ops::check_limit(filter.limit)? + 1)
        }
        HotQuery::ClaimDispatch => claim(&crate::columns::DISPATCH_CLAIM),
        HotQuery::ClaimPoll => claim(&crate::columns::POLL_CLAIM),
        HotQuery::TokenByHash => token_by_hash("0"),
        HotQuery::CountRunsByState => count_runs_by_state(),
        HotQuery::CountUnconfirmed => count_unconfirmed(),
        HotQuery::OldestDueDispatch => oldest_due_dispatch(Utc::now()),
        HotQuery::ClaimOutbox => crate::statements::outbox_claim_stmt(tx, "explain", Utc::now(), Utc::now(), 1),
        HotQuery::CountOutboxPending => count_outbox(OutboxStatus::Pending),
    })
}
