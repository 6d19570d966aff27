//! A SQLite connection seen as a [`Tx`]: the writer's open transaction, or a reader.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

use super::rows::query;
use crate::error::StoreResult;
use crate::model::Backend;
use crate::sql::{Rows, Stmt, Tx};

/// One SQLite connection; remembers whether a wake-up was asked for, which the writer sends
/// after its commit.
pub(super) struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
    woke: bool,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn new(conn: &'c mut SqliteConnection) -> Self {
        Self { conn, woke: false }
    }

    /// Whether the job asked to wake the dispatchers and trackers.
    pub(super) fn woke(&self) -> bool {
        self.woke
    }
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
        self.woke = true;
        Ok(())
    }
}
