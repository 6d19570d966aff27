//! A reader's SQLite connection (from sqlx's pool) seen as a [`Tx`].

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

use super::rows::query;
use crate::error::{StoreError, StoreResult};
use crate::model::{AuthChange, Backend};
use crate::sql::{Rows, Stmt, Tx};

/// One pooled reading connection, or a read transaction on one.
pub(super) struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn new(conn: &'c mut SqliteConnection) -> Self {
        Self { conn }
    }
}

/// Announcements go out after a commit, which only the writer makes.
fn read_only() -> StoreError {
    StoreError::Database { source: "a read cannot announce changes; only a write can".into() }
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn execute(&mut self, stmt: Stmt) -> Result<u64, sqlx::Error> {
        let Stmt { sql, args } = stmt;
        Ok(query(&sql, args).execute(&mut *self.conn).await?.rows_affected())
    }

    async fn fetch(&mut self, stmt: Stmt) -> Result<Rows, sqlx::Error> {
        let Stmt { sql, args } = stmt;
        let rows = query(&sql, args).fetch_all(&mut *self.conn).await?;
        Ok(rows.into_iter().map(|r| Box::new(r) as _).collect())
    }

    async fn notify_wakeup(&mut self) -> StoreResult<()> {
        Err(read_only())
    }

    async fn notify_auth(&mut self, _change: &AuthChange) -> StoreResult<()> {
        Err(read_only())
    }
}
