//! The SQLite backend: WAL, one writer task that owns the only writing connection (and may
//! group concurrent writes into one commit), and a pool of readers.

mod rows;
mod tx;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use cigw_core::config::{DatabaseSettings, Durability};
use cigw_core::shared_budget::SharedBudget;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::{Access, Driver};
use crate::error::{StoreError, StoreResult};
use crate::migrations;
use crate::model::AuthChange;
use crate::sql::Tx;
use tx::{Signals, SqliteTx};

/// The embedded migrations, accepting newer ones a newer cigw applied (see [`crate::migrations`]).
static MIGRATOR: LazyLock<sqlx::migrate::Migrator> =
    LazyLock::new(|| migrations::tolerant(sqlx::migrate!("./migrations/sqlite")));

/// How many queued writes one group commit takes at most.
const MAX_BATCH: usize = 128;

/// Answers one write's caller once its batch committed (`None`) or failed to (`Some(reason)`).
type Finish = Box<dyn FnOnce(Option<String>) + Send>;
/// One write: runs inside the writer's open transaction; says whether it succeeded.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// The SQLite store.
pub struct SqliteStore {
    url: String,
    read: SqlitePool,
    jobs: mpsc::Sender<Job>,
    wake: broadcast::Sender<()>,
    auth: broadcast::Sender<AuthChange>,
    group_commit: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("url", &self.url).field("group_commit", &self.group_commit).finish()
    }
}

impl SqliteStore {
    /// Open (creating the file if missing) without migrating.
    pub async fn open(settings: &DatabaseSettings, group_commit: bool) -> StoreResult<Self> {
        let url = settings.url.clone();
        let connect = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Invalid { field: "database.url", message: format!("not a SQLite URL: {e}") })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match settings.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Fsync => SqliteSynchronous::Full,
            })
            .busy_timeout(settings.statement_timeout)
            .foreign_keys(true)
            // Zero the space a rewritten row leaves behind, so a dropped secret parameter value
            // (docs/storage.md) does not linger in the file; FAST adds no I/O.
            .pragma("secure_delete", "FAST")
            // The savepoint journal of every write in a group commit stays in memory instead of
            // a temporary file written page by page.
            .pragma("temp_store", "MEMORY");
        let writer = SqliteConnection::connect_with(&connect).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.statement_timeout.max(Duration::from_secs(1)))
            .connect_with(connect.clone())
            .await?;
        let (jobs, rx) = mpsc::channel(1024);
        tokio::spawn(run_writer(writer, rx, if group_commit { MAX_BATCH } else { 1 }));
        let (wake, _) = broadcast::channel(16);
        let (auth, _) = broadcast::channel(64);
        Ok(Self { url, read, jobs, wake, auth, group_commit })
    }

    /// Run `f` inside the writer's transaction; answers after the commit, and then wakes this
    /// process's dispatchers and trackers and tells its token caches what `f` asked for.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Tx) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<(StoreResult<T>, Signals)>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let mut writer = SqliteTx::new(conn);
                let result = f(&mut writer).await;
                let signals = writer.into_signals();
                let ok = result.is_ok();
                let finish: Finish = Box::new(move |commit_error| {
                    let answer = match commit_error {
                        Some(reason) if ok => Err(StoreError::Unavailable { source: reason.into() }),
                        _ => result,
                    };
                    let _ = tx.send((answer, signals));
                });
                (ok, finish)
            })
        });
        self.jobs.send(job).await.map_err(|_| writer_gone())?;
        let (answer, signals) = rx.await.map_err(|_| writer_gone())?;
        if answer.is_ok() {
            if signals.wake {
                let _ = self.wake.send(());
            }
            for change in signals.auth {
                let _ = self.auth.send(change);
            }
        }
        answer
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable { source: "the SQLite writer task stopped".into() }
}

/// One statement, boxed: keeps the writer future `Send` for every connection lifetime.
fn exec<'c>(conn: &'c mut SqliteConnection, sql: &'static str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::query(sql).execute(conn).await.map(|_| ()) })
}

/// Whether a savepoint statement succeeded; a failure is logged.
fn savepoint_ok(result: Result<(), sqlx::Error>) -> bool {
    result.map_err(|e| tracing::warn!(error = %e, "SQLite writer savepoint failed")).is_ok()
}

async fn run_writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let mut finishes = Vec::with_capacity(batch.len());
        if let Err(e) = exec(&mut conn, "BEGIN IMMEDIATE").await {
            tracing::warn!(error = %e, "SQLite writer cannot begin a transaction");
            // Dropping the jobs drops their answer channels: callers see `Unavailable`.
            batch.clear();
            continue;
        }
        // A write alone in its batch needs no savepoint: when it fails, the whole transaction
        // is rolled back. Each statement is a round trip to sqlx's connection thread, so the
        // two saved ones count when writes come one at a time.
        let alone = batch.len() == 1;
        let mut all_ok = true;
        // Otherwise a savepoint per write, so one failing write does not undo the others; one
        // write's RELEASE and the next one's SAVEPOINT go in one round trip.
        let count = batch.len();
        let mut open = !alone && savepoint_ok(exec(&mut conn, "SAVEPOINT job").await);
        for (i, job) in batch.drain(..).enumerate() {
            let (ok, finish) = job(&mut conn).await;
            finishes.push(finish);
            let last = i + 1 == count;
            if alone {
                all_ok = ok;
            } else if !open {
                open = !last && savepoint_ok(exec(&mut conn, "SAVEPOINT job").await);
            } else {
                if !ok {
                    savepoint_ok(exec(&mut conn, "ROLLBACK TO job").await);
                }
                let release = exec(&mut conn, if last { "RELEASE job" } else { "RELEASE job; SAVEPOINT job" }).await;
                open = !last && (savepoint_ok(release) || savepoint_ok(exec(&mut conn, "SAVEPOINT job").await));
            }
        }
        if !all_ok {
            // The failed write's own error is its answer; nothing else was in the transaction.
            if let Err(e) = exec(&mut conn, "ROLLBACK").await {
                tracing::warn!(error = %e, "SQLite rollback failed");
            }
            for finish in finishes {
                finish(None);
            }
            continue;
        }
        let commit = exec(&mut conn, "COMMIT").await;
        let failure = match commit {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "SQLite commit failed");
                let _ = exec(&mut conn, "ROLLBACK").await;
                Some(format!("commit failed: {e}"))
            }
        };
        for finish in finishes {
            finish(failure.clone());
        }
    }
}

#[async_trait]
impl Driver for SqliteStore {
    fn describe(&self) -> String {
        format!(
            "sqlite {} (group commit {})",
            cigw_core::config::redact_url(&self.url),
            if self.group_commit { "on" } else { "off" }
        )
    }

    async fn migrate(&self) -> StoreResult<()> {
        // Through the reader pool: a plain connection that waits (busy timeout) for the writer.
        migrations::run(&MIGRATOR, &self.read).await?;
        let mut conn = self.read.acquire().await?;
        migrations::report_unknown(&MIGRATOR, &mut *conn, &Driver::describe(self)).await
    }

    fn wakeups(&self) -> BoxStream<'static, ()> {
        // Like PostgreSQL's, the first item says "listening now".
        let notes = tokio_stream::wrappers::BroadcastStream::new(self.wake.subscribe()).map(|_| ());
        futures::stream::once(futures::future::ready(())).chain(notes).boxed()
    }

    fn auth_changes(&self) -> BoxStream<'static, AuthChange> {
        // Only this process writes the file (an admin command's changes reach it through the
        // caches' time limits); a lagging receiver missed changes: everything.
        let notes = tokio_stream::wrappers::BroadcastStream::new(self.auth.subscribe())
            .map(|change| change.unwrap_or(AuthChange::All));
        futures::stream::once(futures::future::ready(AuthChange::All)).chain(notes).boxed()
    }

    fn shared_budget(&self) -> Option<Arc<dyn SharedBudget>> {
        // One process: the accounts keep their in-process limiters.
        None
    }

    async fn run<T, F>(&self, access: Access, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Tx) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        match access {
            // The writer is the only writer: every write, one statement or several, goes there.
            Access::Write | Access::WriteOne => self.write(job).await,
            Access::Read => {
                let mut conn = self.read.acquire().await?;
                job(&mut SqliteTx::new(&mut conn)).await
            }
            Access::Snapshot => {
                let mut conn = self.read.acquire().await?;
                let mut snapshot = conn.begin().await?;
                let out = job(&mut SqliteTx::new(&mut snapshot)).await?;
                snapshot.commit().await?;
                Ok(out)
            }
        }
    }
}
