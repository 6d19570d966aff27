//! What the shared code asks of a backend: statements written once (with `$n` placeholders,
//! which sqlx accepts on SQLite as well as PostgreSQL) and backend-neutral values, bound and run
//! by the backend's [`Tx`], and result rows read through [`Row`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::StoreResult;
use crate::model::{AuthChange, Backend};

/// A value bound to a statement. The backend decides its column type: SQLite stores times as
/// microseconds and JSON as text; PostgreSQL as `timestamptz` (truncated to the microsecond) and
/// `jsonb`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// Text.
    Text(Option<String>),
    /// An integer.
    Int(Option<i64>),
    /// A flag.
    Bool(bool),
    /// A time.
    Time(Option<DateTime<Utc>>),
    /// A JSON document.
    Json(Option<Value>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Self::Time(Some(v))
    }
}

impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Self::Time(v)
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Self::Json(Some(v))
    }
}

impl From<Option<Value>> for Arg {
    fn from(v: Option<Value>) -> Self {
        Self::Json(v)
    }
}

/// One statement and its arguments; `$n` in the text is the n-th argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    pub(crate) sql: String,
    pub(crate) args: Vec<Arg>,
}

impl Stmt {
    /// A statement whose placeholders the caller numbered.
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), args: Vec::new() }
    }

    /// Add the next argument (`$1` first).
    pub(crate) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Append SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Append a placeholder for `arg`, numbered after the arguments so far.
    pub(crate) fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.sql.push_str(&format!("${}", self.args.len()));
        self
    }

    /// One PostgreSQL statement doing all of `parts` (writes without `RETURNING`): every part but
    /// the last as a data-modifying `WITH` query, so they cost one round trip. Constraints are
    /// checked once the whole statement has run, so a row may come before the one it refers to.
    pub(crate) fn chained(parts: Vec<Stmt>) -> Stmt {
        let mut out = Stmt::new("");
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            let sql = renumbered(&part.sql, out.args.len());
            out.sql.push_str(&match i {
                0 if last == 0 => sql,
                0 => format!("WITH w0 AS ({sql})"),
                i if i == last => format!(" {sql}"),
                i => format!(", w{i} AS ({sql})"),
            });
            out.args.extend(part.args);
        }
        out
    }
}

/// `sql` with every placeholder `$n` made `$(n + by)`. Our statements hold no dollar-quoted
/// text, so every `$` followed by digits is a placeholder.
fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// One result row, read by column name. Text, integers and flags decode alike on both
/// backends; times and JSON are stored differently (see [`Arg`]).
pub(crate) trait Row: Send + Sync {
    /// A text column.
    fn text(&self, col: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    /// An integer column.
    fn int(&self, col: &str) -> StoreResult<i64>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    /// A boolean column.
    fn flag(&self, col: &str) -> StoreResult<bool>;
    /// A time column.
    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>>;
    /// A nullable time column.
    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>>;
    /// A JSON column.
    fn json(&self, col: &str) -> StoreResult<Value>;
    /// A nullable JSON column.
    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>>;
}

/// Result rows.
pub(crate) type Rows = Vec<Box<dyn Row>>;

/// The [`Row`] methods whose types both backends decode alike, for a backend's `impl Row`.
macro_rules! plain_columns {
    () => {
        fn text(&self, col: &str) -> StoreResult<String> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn int(&self, col: &str) -> StoreResult<i64> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn flag(&self, col: &str) -> StoreResult<bool> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
    };
}
pub(crate) use plain_columns;

/// A connection of one backend, inside a transaction (writes) or not (reads): runs statements
/// and tells the shared code the little it must know about the backend.
#[async_trait]
pub(crate) trait Tx: Send {
    /// Which database this is: PostgreSQL needs row locks and advisory locks where SQLite's
    /// single writer already serializes.
    fn backend(&self) -> Backend;
    /// Run a statement; how many rows it changed. The raw error, so a caller can tell a
    /// unique violation.
    async fn execute(&mut self, stmt: Stmt) -> Result<u64, sqlx::Error>;
    /// Run a query; its rows.
    async fn fetch(&mut self, stmt: Stmt) -> Result<Rows, sqlx::Error>;
    /// Wake the dispatchers and trackers once this transaction commits (PostgreSQL: a NOTIFY
    /// the store sends after the commit; SQLite: the store's own broadcast after the commit).
    async fn notify_wakeup(&mut self) -> StoreResult<()>;
    /// Tell every replica's token and session caches about `change` once this transaction
    /// commits (PostgreSQL NOTIFY; SQLite: the store's own broadcast after the commit).
    async fn notify_auth(&mut self, change: &AuthChange) -> StoreResult<()>;
}

impl dyn Tx + '_ {
    /// The first row of a query, if any.
    pub(crate) async fn fetch_optional(&mut self, stmt: Stmt) -> StoreResult<Option<Box<dyn Row>>> {
        Ok(self.fetch(stmt).await?.into_iter().next())
    }

    /// The one row of a query.
    pub(crate) async fn fetch_one(&mut self, stmt: Stmt) -> StoreResult<Box<dyn Row>> {
        self.fetch_optional(stmt).await?.ok_or(crate::StoreError::NotFound { what: "row".into() })
    }

    /// `FOR UPDATE` where rows must be locked against concurrent writers (PostgreSQL).
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "FOR UPDATE",
            Backend::Sqlite => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_statements_number_their_arguments_in_turn() {
        let a = Stmt::new("INSERT INTO a (x, y) VALUES ($1, $2)").bind("a1").bind("a2");
        let b = Stmt::new("INSERT INTO b (x) VALUES ($1)").bind("b1");
        let c = Stmt::new("INSERT INTO c (x, y) VALUES ($2, $1), ($10, $1)").bind("c1").bind("c2");
        let one = Stmt::chained(vec![a, b, c]);
        assert_eq!(
            one.sql,
            "WITH w0 AS (INSERT INTO a (x, y) VALUES ($1, $2)), w1 AS (INSERT INTO b (x) VALUES ($3)) \
             INSERT INTO c (x, y) VALUES ($5, $4), ($13, $4)"
        );
        let args: Vec<Arg> = ["a1", "a2", "b1", "c1", "c2"].into_iter().map(Arg::from).collect();
        assert_eq!(one.args, args);
    }

    #[test]
    fn one_statement_chained_is_itself() {
        let a = Stmt::new("INSERT INTO a (x) VALUES ($1)").bind("a1");
        assert_eq!(Stmt::chained(vec![a.clone()]), a);
    }

    #[test]
    fn a_dollar_without_digits_is_kept() {
        assert_eq!(renumbered("SELECT '$' || $1, $", 2), "SELECT '$' || $3, $");
    }
}
