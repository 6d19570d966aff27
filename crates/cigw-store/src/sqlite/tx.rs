//! A SQLite connection seen as a [`Tx`]: the writer's open transaction, or a reader.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

use super::rows::query;
use crate::error::StoreResult;
use crate::model::{AuthChange, Backend};
use crate::sql::{Rows, Stmt, Tx};

/// What a write asked to announce once committed.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Wake the dispatchers and trackers.
    pub(super) wake: bool,
    /// Changes for the token and session caches.
    pub(super) auth: Vec<AuthChange>,
}

/// One SQLite connection; remembers what the job asked to announce, which the writer sends
/// after its commit.
pub(super) struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
    signals: Signals,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn new(conn: &'c mut SqliteConnection) -> Self {
        Self { conn, signals: Signals::default() }
    }

    /// What the job asked to announce.
    pub(super) fn into_signals(self) -> Signals {
        self.signals
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
        self.signals.wake = true;
        Ok(())
    }

    async fn notify_auth(&mut self, change: &AuthChange) -> StoreResult<()> {
        self.signals.auth.push(change.clone());
        Ok(())
    }
}
