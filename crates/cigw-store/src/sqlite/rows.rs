//! SQLite's side of the shared statements: times are microseconds since the epoch and JSON is
//! text, both ways.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};

use crate::columns::{corrupt, from_micros, micros};
use crate::error::StoreResult;
use crate::sql::{Arg, Row, plain_columns};

/// A SQLite query, bound.
pub(super) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// A statement's text with its arguments bound.
pub(super) fn query(sql: &str, args: Vec<Arg>) -> Query<'_> {
    args.into_iter().fold(sqlx::query(sql), |q, arg| match arg {
        Arg::Text(v) => q.bind(v),
        Arg::Int(v) => q.bind(v),
        Arg::Bool(v) => q.bind(v),
        Arg::Time(v) => q.bind(v.map(micros)),
        Arg::Json(v) => q.bind(v.map(|v| v.to_string())),
    })
}

fn parse_json(text: &str, col: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("column {col}: {e}")))
}

impl Row for SqliteRow {
    plain_columns!();

    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        from_micros(self.try_get(col)?)
    }

    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.try_get::<Option<i64>, _>(col)?.map(from_micros).transpose()
    }

    fn json(&self, col: &str) -> StoreResult<Value> {
        parse_json(&self.try_get::<String, _>(col)?, col)
    }

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        self.try_get::<Option<String>, _>(col)?.map(|t| parse_json(&t, col)).transpose()
    }
}
