//! The writer's own connection seen as a [`Tx`]: statements run on the calling thread (the
//! writer's), prepared once and cached, with no hop to another thread per statement.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use sqlx::error::{DatabaseError, ErrorKind};

use crate::columns::{corrupt, from_micros, micros};
use crate::error::StoreResult;
use crate::model::{AuthChange, Backend};
use crate::sql::{Arg, Row, Rows, Stmt, Tx};

/// What a write asked to announce once committed.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Wake the dispatchers and trackers.
    pub(super) wake: bool,
    /// Changes for the token and session caches.
    pub(super) auth: Vec<AuthChange>,
}

/// The writer's connection inside its open transaction; remembers what the job asked to
/// announce, which the writer sends after its commit.
pub(super) struct WriterTx<'c> {
    conn: &'c mut Connection,
    signals: Signals,
}

impl<'c> WriterTx<'c> {
    pub(super) fn new(conn: &'c mut Connection) -> Self {
        Self { conn, signals: Signals::default() }
    }

    /// What the job asked to announce.
    pub(super) fn into_signals(self) -> Signals {
        self.signals
    }

    /// The statement, prepared (or taken from the cache) with its arguments bound: `$n` is the
    /// n-th argument, as sqlx binds it on SQLite.
    fn prepare(&self, stmt: Stmt) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut prepared = self.conn.prepare_cached(&stmt.sql)?;
        for (i, arg) in stmt.args.into_iter().enumerate() {
            let Some(index) = prepared.parameter_index(&format!("${}", i + 1))? else { continue };
            prepared.raw_bind_parameter(index, sql_value(arg))?;
        }
        Ok(prepared)
    }
}

/// How SQLite stores an argument: times as microseconds since the epoch, JSON as text (the
/// readers' sqlx side decodes the same way, see `rows.rs`).
fn sql_value(arg: Arg) -> SqlValue {
    let or_null = |v: Option<SqlValue>| v.unwrap_or(SqlValue::Null);
    match arg {
        Arg::Text(v) => or_null(v.map(SqlValue::Text)),
        Arg::Int(v) => or_null(v.map(SqlValue::Integer)),
        Arg::Bool(v) => SqlValue::Integer(i64::from(v)),
        Arg::Time(v) => or_null(v.map(|t| SqlValue::Integer(micros(t)))),
        Arg::Json(v) => or_null(v.map(|v| SqlValue::Text(v.to_string()))),
    }
}

#[async_trait]
impl Tx for WriterTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn execute(&mut self, stmt: Stmt) -> Result<u64, sqlx::Error> {
        let mut prepared = self.prepare(stmt).map_err(to_sqlx)?;
        // Stepped to the end like a query, so a statement that also returns rows is fine.
        let mut rows = prepared.raw_query();
        while rows.next().map_err(to_sqlx)?.is_some() {}
        Ok(self.conn.changes())
    }

    async fn fetch(&mut self, stmt: Stmt) -> Result<Rows, sqlx::Error> {
        let mut prepared = self.prepare(stmt).map_err(to_sqlx)?;
        let names: Arc<[String]> = prepared.column_names().into_iter().map(String::from).collect();
        let mut rows = prepared.raw_query();
        let mut out: Rows = Vec::new();
        while let Some(row) = rows.next().map_err(to_sqlx)? {
            let values = (0..names.len()).map(|i| row.get::<_, SqlValue>(i)).collect::<Result<_, _>>();
            out.push(Box::new(OwnedRow { names: names.clone(), values: values.map_err(to_sqlx)? }));
        }
        Ok(out)
    }

    async fn notify_wakeup(&mut self) -> StoreResult<()> {
        self.signals.wake = true;
        Ok(())
    }

    async fn notify_auth(&mut self, change: &AuthChange) -> StoreResult<()> {
        self.signals.auth.push(change.clone());
        Ok(())
    }
}

/// A result row copied out of the statement, read by column name.
struct OwnedRow {
    names: Arc<[String]>,
    values: Vec<SqlValue>,
}

impl OwnedRow {
    fn value(&self, col: &str) -> StoreResult<&SqlValue> {
        let i = self.names.iter().position(|n| n == col).ok_or_else(|| corrupt(format!("no column {col}")))?;
        Ok(&self.values[i])
    }

    fn opt_int_value(&self, col: &str) -> StoreResult<Option<i64>> {
        match self.value(col)? {
            SqlValue::Null => Ok(None),
            SqlValue::Integer(v) => Ok(Some(*v)),
            other => Err(corrupt(format!("column {col}: expected an integer, found {}", other.data_type()))),
        }
    }

    fn opt_text_value(&self, col: &str) -> StoreResult<Option<&str>> {
        match self.value(col)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(v) => Ok(Some(v)),
            other => Err(corrupt(format!("column {col}: expected text, found {}", other.data_type()))),
        }
    }
}

fn required<T>(v: Option<T>, col: &str) -> StoreResult<T> {
    v.ok_or_else(|| corrupt(format!("column {col} is NULL")))
}

fn parse_json(text: &str, col: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("column {col}: {e}")))
}

impl Row for OwnedRow {
    fn text(&self, col: &str) -> StoreResult<String> {
        required(self.opt_text(col)?, col)
    }

    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.opt_text_value(col)?.map(str::to_string))
    }

    fn int(&self, col: &str) -> StoreResult<i64> {
        required(self.opt_int_value(col)?, col)
    }

    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        self.opt_int_value(col)
    }

    fn flag(&self, col: &str) -> StoreResult<bool> {
        Ok(self.int(col)? != 0)
    }

    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        from_micros(self.int(col)?)
    }

    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.opt_int_value(col)?.map(from_micros).transpose()
    }

    fn json(&self, col: &str) -> StoreResult<Value> {
        parse_json(required(self.opt_text_value(col)?, col)?, col)
    }

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        self.opt_text_value(col)?.map(|t| parse_json(t, col)).transpose()
    }
}

/// A rusqlite error in sqlx's shape, so the shared code tells a unique violation and a busy
/// database the same way on the writer as on the readers.
pub(super) fn to_sqlx(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.unwrap_or_else(|| failure.to_string());
            sqlx::Error::Database(Box::new(SqliteFailure { code: failure.extended_code, message }))
        }
        other => sqlx::Error::Protocol(format!("SQLite: {other}")),
    }
}

/// A failed SQLite call: its extended result code and SQLite's message (which names tables and
/// columns, never values).
#[derive(Debug)]
struct SqliteFailure {
    code: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, at INTEGER, doc TEXT, ok INTEGER)")
            .unwrap();
        conn
    }

    #[tokio::test]
    async fn arguments_bind_by_number_and_rows_read_back_by_name() {
        let mut conn = conn();
        let mut tx = WriterTx::new(&mut conn);
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        // `$3` before `$1`, and `$1` twice: bound by number, not by position.
        let insert =
            Stmt::new("INSERT INTO t (at, id, n, doc, ok) VALUES ($3, $1, $2, $4, $5) RETURNING id || $1 AS twice")
                .bind("a")
                .bind(7i64)
                .bind(at)
                .bind(serde_json::json!({"k": [1, 2]}))
                .bind(true);
        assert_eq!(tx.execute(insert).await.unwrap(), 1);
        let rows = tx.fetch(Stmt::new("SELECT * FROM t WHERE id = $1").bind("a")).await.unwrap();
        let row = &rows[0];
        assert_eq!(row.text("id").unwrap(), "a");
        assert_eq!(row.int("n").unwrap(), 7);
        assert_eq!(row.time("at").unwrap(), at);
        assert_eq!(row.json("doc").unwrap(), serde_json::json!({"k": [1, 2]}));
        assert!(row.flag("ok").unwrap());
        assert!(row.text("missing").is_err());
    }

    #[tokio::test]
    async fn nulls_are_none_and_a_required_null_is_corrupt() {
        let mut conn = conn();
        let mut tx = WriterTx::new(&mut conn);
        let insert = Stmt::new("INSERT INTO t (id, n, at, doc) VALUES ($1, $2, $3, $4)")
            .bind("b")
            .bind(None::<i64>)
            .bind(None::<DateTime<Utc>>)
            .bind(None::<Value>);
        tx.execute(insert).await.unwrap();
        let row = tx.fetch(Stmt::new("SELECT * FROM t")).await.unwrap().remove(0);
        assert_eq!(row.opt_int("n").unwrap(), None);
        assert_eq!(row.opt_time("at").unwrap(), None);
        assert_eq!(row.opt_json("doc").unwrap(), None);
        assert!(matches!(row.int("n"), Err(crate::StoreError::Corrupt { .. })));
        assert!(matches!(row.text("n"), Err(crate::StoreError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn a_duplicate_key_is_a_unique_violation_and_busy_is_transient() {
        let mut conn = conn();
        let mut tx = WriterTx::new(&mut conn);
        tx.execute(Stmt::new("INSERT INTO t (id) VALUES ($1)").bind("c")).await.unwrap();
        let e = tx.execute(Stmt::new("INSERT INTO t (id) VALUES ($1)").bind("c")).await.unwrap_err();
        assert!(e.as_database_error().is_some_and(|db| db.is_unique_violation()), "{e}");
        let busy = to_sqlx(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None));
        assert!(crate::StoreError::from(busy).is_retryable());
    }
}
