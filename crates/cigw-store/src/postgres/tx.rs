//! A PostgreSQL connection seen as a [`Tx`]: an open transaction, or a pooled connection for
//! reads and single statements.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;

use super::AUTH_CHANNEL;
use super::rows::query;
use crate::error::StoreResult;
use crate::model::{AuthChange, Backend};
use crate::sql::{Rows, Stmt, Tx};

/// One PostgreSQL connection.
pub(super) struct PgTx<'c> {
    conn: &'c mut PgConnection,
    /// The work asked for a wake-up, sent once it has committed (see `PgStore::run`).
    pub(super) wake: bool,
}

impl<'c> PgTx<'c> {
    pub(super) fn new(conn: &'c mut PgConnection) -> Self {
        Self { conn, wake: false }
    }
}

#[async_trait]
impl Tx for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
        // Not a NOTIFY here: one inside the transaction holds the server's notify-queue lock
        // through the commit's flush, which made every trigger's commit wait for the last.
        self.wake = true;
        Ok(())
    }

    async fn notify_auth(&mut self, change: &AuthChange) -> StoreResult<()> {
        // Delivered to listeners only when (and if) this transaction commits: a cache must never
        // miss a revocation. Rare, so the notify-queue lock it holds through the commit is cheap.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(AUTH_CHANNEL)
            .bind(change.payload())
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}
