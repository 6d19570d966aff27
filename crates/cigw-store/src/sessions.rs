//! Web UI sessions and run watch links (table `ui_sessions`, migration 0004): their model and
//! the SQL of both backends, kept here in one place; `sqlite.rs` and `postgres.rs` only call it.
//!
//! Only hashes of secrets are stored. Expired rows are never returned and are deleted whenever
//! a new session is created, so the table stays as small as the number of live sessions.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::columns::{from_micros, micros, trunc};
use crate::error::{StoreError, StoreResult};

/// What a session lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A signed-in web page: acts as the token it was opened with.
    Ui,
    /// A build button's link to follow the one run it started.
    Watch,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Ui => "ui",
            SessionKind::Watch => "watch",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "ui" => Ok(SessionKind::Ui),
            "watch" => Ok(SessionKind::Watch),
            other => Err(StoreError::Corrupt { message: format!("ui_sessions.kind `{other}`") }),
        }
    }
}

/// A session to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 (hex) of the session secret.
    pub hash: String,
    /// What it allows.
    pub kind: SessionKind,
    /// `Ui`: the hash of the token it acts as (revoking that token ends the session).
    pub token_hash: Option<String>,
    /// `Watch`: the run it may read.
    pub run_id: Option<String>,
    /// Creation time (also the "now" against which older sessions are found expired).
    pub created_at: DateTime<Utc>,
    /// End of validity.
    pub expires_at: DateTime<Utc>,
}

/// A stored, unexpired session.
pub type SessionRecord = NewSession;

impl NewSession {
    fn truncated(mut self) -> Self {
        self.created_at = trunc(self.created_at);
        self.expires_at = trunc(self.expires_at);
        self
    }
}

/// SQLite statements (times as microseconds since the epoch).
pub(crate) mod sqlite {
    use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

    use super::*;

    fn from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            hash: row.try_get("hash")?,
            kind: SessionKind::parse(&row.try_get::<String, _>("kind")?)?,
            token_hash: row.try_get("token_hash")?,
            run_id: row.try_get("run_id")?,
            created_at: from_micros(row.try_get("created_at")?)?,
            expires_at: from_micros(row.try_get("expires_at")?)?,
        })
    }

    /// Delete the expired sessions and store `session` (inside the writer's transaction).
    pub(crate) async fn insert(conn: &mut SqliteConnection, session: NewSession) -> StoreResult<SessionRecord> {
        let session = session.truncated();
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= ?1")
            .bind(micros(session.created_at))
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (hash, kind, token_hash, run_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&session.hash)
        .bind(session.kind.as_str())
        .bind(&session.token_hash)
        .bind(&session.run_id)
        .bind(micros(session.created_at))
        .bind(micros(session.expires_at))
        .execute(&mut *conn)
        .await?;
        Ok(session)
    }

    /// The unexpired session with this hash.
    pub(crate) async fn find(pool: &SqlitePool, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query("SELECT * FROM ui_sessions WHERE hash = ?1 AND expires_at > ?2")
            .bind(hash)
            .bind(micros(now))
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Forget a session (sign-out); a missing one is not an error.
    pub(crate) async fn delete(conn: &mut SqliteConnection, hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE hash = ?1").bind(hash).execute(&mut *conn).await?;
        Ok(())
    }
}

/// PostgreSQL statements.
pub(crate) mod postgres {
    use sqlx::postgres::{PgPool, PgRow};

    use super::*;

    fn from_row(row: &PgRow) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            hash: row.try_get("hash")?,
            kind: SessionKind::parse(&row.try_get::<String, _>("kind")?)?,
            token_hash: row.try_get("token_hash")?,
            run_id: row.try_get("run_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }

    /// Delete the expired sessions and store `session`, in one transaction.
    pub(crate) async fn insert(pool: &PgPool, session: NewSession) -> StoreResult<SessionRecord> {
        let session = session.truncated();
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (hash, kind, token_hash, run_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.hash)
        .bind(session.kind.as_str())
        .bind(&session.token_hash)
        .bind(&session.run_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    /// The unexpired session with this hash.
    pub(crate) async fn find(pool: &PgPool, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query("SELECT * FROM ui_sessions WHERE hash = $1 AND expires_at > $2")
            .bind(hash)
            .bind(now)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Forget a session (sign-out); a missing one is not an error.
    pub(crate) async fn delete(pool: &PgPool, hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE hash = $1").bind(hash).execute(pool).await?;
        Ok(())
    }
}
