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
/// The log length (pages) past which the checkpointer makes the writer start the log over.
const WAL_RESTART_PAGES: i64 = 16_384;
/// The size the log file is cut back to when it starts over (bytes): twice what it reaches
/// before a restart is asked for, so a restart reuses the file as it is. Cutting it back to
/// 64 MB from the little more it had grown to took the writer 5 ms at every restart (strace).
const WAL_SIZE_LIMIT: i64 = 2 * WAL_RESTART_PAGES * 4096;

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
        // The database file itself, only to flush what the checkpointer copied into it.
        let database = std::fs::File::open(path).map_err(|e| StoreError::Unavailable { source: Box::new(e) })?;
        let checkpointer = Checkpointer {
            conn: open(path, &options).map_err(unavailable)?,
            flush: Box::new(move || database.sync_data()),
            copied: 0,
        };
        let (committed, commits) = std::sync::mpsc::sync_channel::<()>(1);
        let long_log = Arc::new(AtomicBool::new(false));
        let told = long_log.clone();
        spawn("cigw-sqlite-checkpoint", move || checkpoint(checkpointer, &commits, &told))?;
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
/// has grown past [`WAL_RESTART_PAGES`], ask the writer to start it over (`long_log`, see
/// [`run`]) and stand aside until it has: SQLite lets one connection copy at a time, and the
/// writer's copies must not wait for this thread's.
fn checkpoint(mut checkpointer: Checkpointer, commits: &std::sync::mpsc::Receiver<()>, long_log: &AtomicBool) {
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        while commits.try_recv().is_ok() {}
        if !long_log.load(Ordering::Relaxed) {
            checkpointer.pass(long_log);
        }
    }
}

/// The log length a copy reports when another connection was copying the log.
const BUSY: i64 = -1;

/// Copy what the log holds into the database file without waiting for anyone (`PASSIVE`): the
/// log's length and how much of it is copied, in pages ([`BUSY`] both when another connection
/// was copying: SQLite lets one at a time).
fn copy_log(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))
}

/// The checkpointing connection, how it flushes the database file, and how far it had copied.
struct Checkpointer {
    conn: Connection,
    flush: Box<dyn Fn() -> std::io::Result<()> + Send>,
    copied: i64,
}

impl Checkpointer {
    /// One `PASSIVE` pass: when the log is longer than [`WAL_RESTART_PAGES`], ask the writer to
    /// start the log over (`long_log`); then flush the database file if the pass copied pages.
    ///
    /// The writer's copy before the restart ends with the database file flushed, and SQLite
    /// flushes it only when a checkpoint copies the whole log, which behind a writer that never
    /// pauses only that copy does: it flushed every page copied since the last restart, 17-23 ms
    /// with every write waiting (strace, under the intake benchmark: the p99 of all requests).
    /// Flushed here after each pass, off the writer's thread, the writer's flush finds little:
    /// 1.4 ms on average (strace).
    fn pass(&mut self, long_log: &AtomicBool) {
        let (log_pages, copied) = match copy_log(&self.conn) {
            Ok(pass) => pass,
            Err(e) => {
                tracing::warn!(error = %e, "SQLite checkpoint failed; will try again after the next commit");
                return;
            }
        };
        // The writer starts its copy at once: it has less to copy than after the flush, and
        // its own flush mostly waits for this one's writes, already under way.
        if log_pages > WAL_RESTART_PAGES {
            long_log.store(true, Ordering::Relaxed);
        }
        // Another count than last time: pages copied (or a log started over and copied).
        if copied > 0
            && copied != self.copied
            && let Err(e) = (self.flush)()
        {
            tracing::warn!(error = %e, "flushing the SQLite database file failed");
        }
        self.copied = copied;
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
/// copied yet, between two batches, and the next write starts the log over. A reader still on
/// the log keeps it from starting over; the checkpointer then finds it long again and asks
/// again.
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
        if long_log.load(Ordering::Relaxed) {
            match copy_log(conn) {
                // Another connection was copying (another process: the checkpointer stands
                // aside): copy after the next batch.
                Ok((BUSY, _)) => {}
                // Copied: the next write starts the log over, or, if a reader is still on it,
                // the checkpointer finds it long again and asks again.
                Ok(_) => long_log.store(false, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite checkpoint before starting the log over failed");
                    long_log.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A database in `dir` with a table `t`: its writing connection, and a checkpointer on it
    /// that flushes with `flush`.
    fn database(dir: &Path, flush: impl Fn() -> std::io::Result<()> + Send + 'static) -> (Connection, Checkpointer) {
        let path = dir.join("c.db");
        let options = WriterOptions { synchronous: "NORMAL", busy_timeout: Duration::from_secs(5), max_batch: 1 };
        let writer = open(&path, &options).unwrap();
        writer.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let checkpointer = Checkpointer { conn: open(&path, &options).unwrap(), flush: Box::new(flush), copied: 0 };
        (writer, checkpointer)
    }

    /// Write `rows` rows of 64 KiB in one transaction.
    fn insert(writer: &Connection, rows: u32) {
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO t (b) SELECT zeroblob(65536) FROM n"
        );
        writer.execute_batch(&sql).unwrap();
    }

    /// The checkpointer flushes the database file after each pass that copied pages, so the
    /// writer's own flush before a restart finds little left, and says when the log is long.
    #[test]
    fn the_checkpointer_flushes_what_it_copied() {
        let dir = tempfile::tempdir().unwrap();
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let (writer, mut checkpointer) = database(dir.path(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let long_log = AtomicBool::new(false);
        let flushed = || flushes.load(Ordering::SeqCst);

        insert(&writer, 10);
        checkpointer.pass(&long_log);
        assert!(!long_log.load(Ordering::SeqCst), "a log of 10 × 64 KiB is not long");
        assert_eq!(flushed(), 1, "a pass that copied pages flushes them");
        checkpointer.pass(&long_log);
        assert_eq!(flushed(), 1, "a pass with nothing new to copy flushes nothing");
        // More than 16,384 pages in the log: 1,100 × 64 KiB in one write.
        insert(&writer, 1100);
        checkpointer.pass(&long_log);
        assert!(long_log.load(Ordering::SeqCst), "a log of 1,100 × 64 KiB is long");
        assert_eq!(flushed(), 2, "the long log's pages were flushed too");
    }

    /// A flush the disk refuses is logged and the passes go on: the log is still copied and a
    /// long one still reported, so the writer still starts it over.
    #[test]
    fn a_failing_flush_stops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut checkpointer) = database(dir.path(), || Err(std::io::Error::other("the disk refused")));
        let long_log = AtomicBool::new(false);
        insert(&writer, 1100);
        checkpointer.pass(&long_log);
        assert!(long_log.load(Ordering::SeqCst), "a long log is reported though its flush failed");
        let (log_pages, copied) = copy_log(&writer).unwrap();
        assert_eq!(copied, log_pages, "the pass copied the whole log");
    }
}
