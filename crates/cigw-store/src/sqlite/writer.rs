//! The one writing connection, on its own thread: it takes the queued writes, runs a group of
//! them in one transaction (a savepoint each, so one failing write undoes only itself) and
//! commits once. Statements run on this thread directly; only a write's arrival and its answer
//! cross threads. A second thread checkpoints the log after commits, so no commit waits for one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::writer_tx::to_sqlx;
use crate::error::{StoreError, StoreResult};

/// Answers one write's caller once its batch committed (`None`) or failed to (`Some(reason)`).
pub(super) type Finish = Box<dyn FnOnce(Option<String>) + Send>;
/// One write: runs inside the writer's open transaction; says whether it succeeded.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Finish) + Send>;

/// Prepared statements kept per connection: every statement the store writes with, and room
/// for the ones built per call (filters, batches).
const STATEMENT_CACHE: usize = 512;

/// How long the checkpointer lets commits accumulate before it copies them into the database.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(25);
/// The size the log file is cut back to once checkpointed (bytes).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// The log length (pages) past which the checkpointer makes the writer start the log over.
const WAL_RESTART_PAGES: i64 = 16_384;

/// How the writer's connection is set up; the readers get the same from sqlx's options.
#[derive(Debug, Clone)]
pub(super) struct WriterOptions {
    /// `synchronous`: `NORMAL` or `FULL`.
    pub(super) synchronous: &'static str,
    /// How long a statement waits for a lock another process holds.
    pub(super) busy_timeout: Duration,
    /// How many queued writes one commit takes at most.
    pub(super) max_batch: usize,
}

/// The handle writes are queued through; the thread stops when every handle is gone.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Open the database file's writing connection and start its thread.
    pub(super) fn start(path: &Path, options: WriterOptions) -> StoreResult<Self> {
        let unavailable = |e: rusqlite::Error| StoreError::from(to_sqlx(e));
        let mut conn = open(path, &options).map_err(unavailable)?;
        let checkpointer = open(path, &options).map_err(unavailable)?;
        let (committed, commits) = std::sync::mpsc::sync_channel::<()>(1);
        let long_log = Arc::new(AtomicBool::new(false));
        let told = long_log.clone();
        spawn("cigw-sqlite-checkpoint", move || checkpoint(&checkpointer, &commits, &told))?;
        let (jobs, rx) = mpsc::channel(1024);
        // A job may await a timer (none does on SQLite today): the runtime it was queued from
        // serves it.
        let runtime = tokio::runtime::Handle::try_current().ok();
        spawn("cigw-sqlite-writer", move || {
            let _entered = runtime.as_ref().map(|r| r.enter());
            run(&mut conn, rx, options.max_batch.max(1), &committed, &long_log);
        })?;
        Ok(Self { jobs })
    }

    /// Queue `job`; waits while the queue is full.
    pub(super) async fn send(&self, job: Job) -> StoreResult<()> {
        self.jobs.send(job).await.map_err(|_| writer_gone())
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> StoreResult<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable { source: Box::new(e) })
}

/// Copy committed pages from the log into the database file after commits, on this thread and
/// connection, without blocking the writer (`PASSIVE`); ends when the writer does. When the log
/// has grown past [`WAL_RESTART_PAGES`], ask the writer to start it over (see [`run`]).
fn checkpoint(conn: &Connection, commits: &std::sync::mpsc::Receiver<()>, long_log: &AtomicBool) {
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        while commits.try_recv().is_ok() {}
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
            Ok(log_pages) => long_log.store(log_pages > WAL_RESTART_PAGES, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; will try again after the next commit"),
        }
    }
}

/// The error a caller sees when the writer thread is gone.
pub(super) fn writer_gone() -> StoreError {
    StoreError::Unavailable { source: "the SQLite writer stopped".into() }
}

fn open(path: &Path, options: &WriterOptions) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The checkpointer thread moves the log into the database file: a commit that checkpoints
    // itself waits for that copy and an fsync, and every write queued behind it waits too.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "synchronous", options.synchronous)?;
    // The readers' settings (`SqliteStore::open` says why each is there).
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "FAST")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// Whether a transaction-control statement succeeded; a failure is logged.
fn control(conn: &Connection, sql: &str) -> bool {
    conn.execute_batch(sql).map_err(|e| tracing::warn!(error = %e, sql, "SQLite writer statement failed")).is_ok()
}

/// Run the queued writes, as many at a time as are waiting (up to `max_batch`), each batch in
/// one transaction.
///
/// SQLite starts the log over only when a write begins with every page of it copied into the
/// database, which never happens while another connection checkpoints behind a writer that
/// never pauses: under the dispatch benchmark's load the log grew to 400 MB within seconds,
/// and one 10 s slice had a p99 of 0.8-1 s where the others had 20 ms. So when the checkpointer
/// says the log is long (`long_log`), this thread copies the little the checkpointer has not
/// copied yet, between two batches, and the next write starts the log over.
fn run(
    conn: &mut Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    committed: &std::sync::mpsc::SyncSender<()>,
    long_log: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !control(conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs drops their answer channels: callers see `Unavailable`.
            batch.clear();
            continue;
        }
        // A write alone in its batch needs no savepoint: when it fails, the whole transaction
        // is rolled back and its own error is its answer.
        let alone = batch.len() == 1;
        // Set when the transaction must be rolled back instead of committed: `None` leaves
        // every answer as it is (the one write failed), `Some(reason)` turns successes into
        // `Unavailable`.
        let mut roll_back: Option<Option<String>> = None;
        let mut finishes = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            if alone {
                let (ok, finish) = job(&mut *conn);
                finishes.push(finish);
                if !ok {
                    roll_back = Some(None);
                }
                continue;
            }
            if !control(conn, "SAVEPOINT job") {
                // Not run: dropping it drops its answer channel, and its caller sees
                // `Unavailable`.
                continue;
            }
            let (ok, finish) = job(&mut *conn);
            finishes.push(finish);
            if !ok && !control(conn, "ROLLBACK TO job") {
                roll_back = Some(Some("a failed write could not be undone".into()));
            }
            control(conn, "RELEASE job");
        }
        let failure = match roll_back {
            Some(reason) => {
                control(conn, "ROLLBACK");
                reason
            }
            None => match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    // Full means a checkpoint is already due.
                    let _ = committed.try_send(());
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite commit failed");
                    control(conn, "ROLLBACK");
                    Some(format!("commit failed: {e}"))
                }
            },
        };
        for finish in finishes {
            finish(failure.clone());
        }
        if long_log.swap(false, Ordering::Relaxed) {
            let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(e) = done {
                tracing::warn!(error = %e, "SQLite checkpoint before starting the log over failed");
            }
        }
    }
}
