//! PostgreSQL's side of the shared statements: times are `timestamptz` (truncated to the
//! microsecond it stores) and JSON is `jsonb`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::{PgArguments, PgRow, Postgres};

use crate::columns::trunc;
use crate::error::StoreResult;
use crate::sql::{Arg, Row, plain_columns};

/// A PostgreSQL query, bound.
pub(super) type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A statement's text with its arguments bound.
pub(super) fn query(sql: &str, args: Vec<Arg>) -> Query<'_> {
    args.into_iter().fold(sqlx::query(sql), |q, arg| match arg {
        Arg::Text(v) => q.bind(v),
        Arg::Int(v) => q.bind(v),
        Arg::Bool(v) => q.bind(v),
        Arg::Time(v) => q.bind(v.map(trunc)),
        Arg::Json(v) => q.bind(v),
    })
}

impl Row for PgRow {
    plain_columns!();

    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        Ok(self.try_get(col)?)
    }

    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }

    fn json(&self, col: &str) -> StoreResult<Value> {
        Ok(self.try_get(col)?)
    }

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        Ok(self.try_get(col)?)
    }
}
