//! Read queries built from the filters that are set, once for both backends.
//!
//! An optional filter written as `(? IS NULL OR col = ?)` is one plan for every combination of
//! filters, and SQLite's only plan for it is a full scan (reading one run's events took 76 ms
//! at 1 M events instead of 0.1 ms). Each query here names only the columns it filters on, so
//! the planner sees plain equalities and ranges that match an index (`0001`/`0003` migrations;
//! `tests/suite` checks the plans with `testing::explain`).

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

#[cfg(any(test, feature = "testing"))]
use crate::columns::{Claim, DISPATCH_CLAIM, POLL_CLAIM};
use crate::columns::{TERMINAL_SQL, micros, trunc};
#[cfg(any(test, feature = "testing"))]
use crate::error::StoreResult;
use crate::model::{EventFilter, RunFilter};
#[cfg(any(test, feature = "testing"))]
use crate::model::HotQuery;

/// How a backend binds the few value types these queries use, and writes a claim.
pub(crate) trait Dialect: sqlx::Database + Sized {
    /// Bind a text value.
    fn text(qb: &mut QueryBuilder<'static, Self>, v: String);
    /// Bind an integer.
    fn int(qb: &mut QueryBuilder<'static, Self>, v: i64);
    /// Bind a time as the backend stores it.
    fn time(qb: &mut QueryBuilder<'static, Self>, v: DateTime<Utc>);
    /// The claiming statement of `claim` (parameters: owner, now, lease end, limit).
    #[cfg(any(test, feature = "testing"))]
    fn claim_sql(claim: &Claim) -> String;
}

impl Dialect for sqlx::Sqlite {
    fn text(qb: &mut QueryBuilder<'static, Self>, v: String) {
        qb.push_bind(v);
    }
    fn int(qb: &mut QueryBuilder<'static, Self>, v: i64) {
        qb.push_bind(v);
    }
    fn time(qb: &mut QueryBuilder<'static, Self>, v: DateTime<Utc>) {
        qb.push_bind(micros(v));
    }
    #[cfg(any(test, feature = "testing"))]
    fn claim_sql(claim: &Claim) -> String {
        claim.sql(|n| format!("?{n}"), "")
    }
}

impl Dialect for sqlx::Postgres {
    fn text(qb: &mut QueryBuilder<'static, Self>, v: String) {
        qb.push_bind(v);
    }
    fn int(qb: &mut QueryBuilder<'static, Self>, v: i64) {
        qb.push_bind(v);
    }
    fn time(qb: &mut QueryBuilder<'static, Self>, v: DateTime<Utc>) {
        qb.push_bind(trunc(v));
    }
    #[cfg(any(test, feature = "testing"))]
    fn claim_sql(claim: &Claim) -> String {
        claim.sql(|n| format!("${n}"), "FOR UPDATE SKIP LOCKED")
    }
}

/// Appends `WHERE` before the first condition and `AND` before the others.
struct Conditions<'a, DB: Dialect> {
    qb: &'a mut QueryBuilder<'static, DB>,
    any: bool,
}

impl<'a, DB: Dialect> Conditions<'a, DB> {
    fn new(qb: &'a mut QueryBuilder<'static, DB>) -> Self {
        Self { qb, any: false }
    }

    /// Start the next condition; the caller pushes its SQL and binds.
    fn next(&mut self) -> &mut QueryBuilder<'static, DB> {
        self.qb.push(if self.any { " AND " } else { " WHERE " });
        self.any = true;
        self.qb
    }

    fn equals(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.next().push(column).push(" = ");
            DB::text(self.qb, v.to_string());
        }
    }
}

/// `events_after`: the events after `after_id` matching `filter`, in id order. With a run,
/// trigger or target the matching `(column, id)` index serves it; otherwise the primary key.
pub(crate) fn events_after<DB: Dialect>(
    qb: &mut QueryBuilder<'static, DB>,
    after_id: i64,
    filter: &EventFilter,
    limit: i64,
) {
    qb.push("SELECT * FROM run_events");
    let mut c = Conditions::new(qb);
    c.next().push("id > ");
    DB::int(c.qb, after_id);
    c.equals("run_id", filter.run_id.as_deref());
    c.equals("trigger_id", filter.trigger_id.as_deref());
    c.equals("target", filter.target.as_deref());
    c.equals("state", filter.state.map(|s| s.as_str()));
    qb.push(" ORDER BY id LIMIT ");
    DB::int(qb, limit);
}

/// `list_runs`: runs matching `filter`, newest first, after the cursor `(created_at, id)`.
/// The cursor is one row-value comparison, which both planners turn into an index range.
pub(crate) fn list_runs<DB: Dialect>(
    qb: &mut QueryBuilder<'static, DB>,
    filter: &RunFilter,
    after: Option<&(DateTime<Utc>, String)>,
    limit: i64,
) {
    qb.push("SELECT * FROM runs");
    let mut c = Conditions::new(qb);
    c.equals("trigger_id", filter.trigger_id.as_deref());
    c.equals("target", filter.target.as_deref());
    c.equals("state", filter.state.map(|s| s.as_str()));
    if let Some(since) = filter.since {
        c.next().push("created_at >= ");
        DB::time(c.qb, since);
    }
    if let Some((at, id)) = after {
        c.next().push("(created_at, id) < (");
        DB::time(c.qb, *at);
        c.qb.push(", ");
        DB::text(c.qb, id.clone());
        c.qb.push(")");
    }
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ");
    DB::int(qb, limit);
}

/// `count_runs_by_state`, as (state, count) rows.
///
/// Why it does not scan `runs`: non-terminal runs are counted through the partial index
/// `runs_active`, which holds only them (a few, whatever the retention); terminal runs, which
/// are nearly all of the table, are read from `run_state_totals`, kept exact by triggers in the
/// transaction that ends or prunes a run. Both halves are one statement, so one snapshot. A
/// cache refreshed every N seconds would still scan and show stale counts; counting every
/// state in a counter table would make each intake on PostgreSQL wait for the `pending` row.
pub(crate) fn count_runs_by_state<DB: Dialect>(qb: &mut QueryBuilder<'static, DB>) {
    qb.push(format!(
        "SELECT state, COUNT(*) AS n FROM runs WHERE state NOT IN {TERMINAL_SQL} GROUP BY state
         UNION ALL
         SELECT state, CAST(SUM(runs) AS BIGINT) AS n FROM run_state_totals GROUP BY state HAVING SUM(runs) > 0"
    ));
}

/// `count_unconfirmed_runs`: unfinished runs accepted without an id and not yet matched, from
/// the partial index `runs_active` alone.
pub(crate) fn count_unconfirmed<DB: Dialect>(qb: &mut QueryBuilder<'static, DB>) {
    qb.push(format!("SELECT COUNT(*) FROM runs WHERE state NOT IN {TERMINAL_SQL} AND unconfirmed"));
}

/// `find_token_by_hash`.
pub(crate) fn token_by_hash<DB: Dialect>(qb: &mut QueryBuilder<'static, DB>, hash: &str) {
    qb.push("SELECT * FROM api_tokens WHERE hash = ");
    DB::text(qb, hash.to_string());
    qb.push(" AND revoked_at IS NULL");
}

/// What [`crate::testing::explain`] plans for a query.
#[cfg(any(test, feature = "testing"))]
pub(crate) enum Explained {
    /// A statement built here (placeholder values where the query has none of its own).
    Built,
    /// A claim: its statement with positional parameters owner, now, lease end, limit.
    Claim(String),
}

/// Push the statement `query` stands for after the backend's EXPLAIN prefix.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn hot_query<DB: Dialect>(qb: &mut QueryBuilder<'static, DB>, query: &HotQuery) -> StoreResult<Explained> {
    match query {
        HotQuery::EventsAfter { after_id, filter } => events_after(qb, *after_id, filter, 100),
        HotQuery::ListRuns { filter, cursor } => {
            let after = cursor.as_deref().map(crate::ops::decode_cursor).transpose()?;
            list_runs(qb, filter, after.as_ref(), crate::ops::check_limit(filter.limit)? + 1)
        }
        HotQuery::ClaimDispatch => return Ok(Explained::Claim(DB::claim_sql(&DISPATCH_CLAIM))),
        HotQuery::ClaimPoll => return Ok(Explained::Claim(DB::claim_sql(&POLL_CLAIM))),
        HotQuery::TokenByHash => token_by_hash(qb, "0"),
        HotQuery::CountRunsByState => count_runs_by_state(qb),
        HotQuery::CountUnconfirmed => count_unconfirmed(qb),
    }
    Ok(Explained::Built)
}
