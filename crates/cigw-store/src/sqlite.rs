//! The SQLite backend: WAL, one writer task that owns the only writing connection (and may
//! group concurrent writes into one commit), and a pool of readers.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::config::{DatabaseSettings, Durability, RetentionSettings};
use cigw_core::{ProviderRunRef, RunState, RunStatus};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::columns::*;
use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::ops::{self, EventRow, StoredKey, Tx};
use crate::query;
use crate::sessions::{NewSession, SessionRecord};
use crate::store::Store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
            .pragma("secure_delete", "FAST");
        let writer = SqliteConnection::connect_with(&connect).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.statement_timeout.max(Duration::from_secs(1)))
            .connect_with(connect.clone())
            .await?;
        let (jobs, rx) = mpsc::channel(1024);
        tokio::spawn(run_writer(writer, rx, if group_commit { MAX_BATCH } else { 1 }));
        let (wake, _) = broadcast::channel(16);
        Ok(Self { url, read, jobs, wake, group_commit })
    }

    /// Run `f` inside the writer's transaction; answers after the commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let finish: Finish = Box::new(move |commit_error| {
                    let answer = match commit_error {
                        Some(reason) if ok => Err(StoreError::Unavailable { source: reason.into() }),
                        _ => result,
                    };
                    let _ = tx.send(answer);
                });
                (ok, finish)
            })
        });
        self.jobs.send(job).await.map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }

    fn wake_up(&self) {
        let _ = self.wake.send(());
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable { source: "the SQLite writer task stopped".into() }
}

/// One statement, boxed: keeps the writer future `Send` for every connection lifetime.
fn exec<'c>(conn: &'c mut SqliteConnection, sql: &'static str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::query(sql).execute(conn).await.map(|_| ()) })
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
        for job in batch.drain(..) {
            // A savepoint per write, so one failing write does not undo the others of the batch.
            let savepoint = exec(&mut conn, "SAVEPOINT job").await;
            let (ok, finish) = job(&mut conn).await;
            if savepoint.is_ok() {
                let undo = if ok { Ok(()) } else { exec(&mut conn, "ROLLBACK TO job").await };
                if let Err(e) = undo.and(exec(&mut conn, "RELEASE job").await) {
                    tracing::warn!(error = %e, "SQLite writer savepoint failed");
                }
            }
            finishes.push(finish);
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

// ---- rows ----

fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    row.try_get::<Option<i64>, _>(col)?.map(from_micros).transpose()
}

fn time(row: &SqliteRow, col: &str) -> StoreResult<DateTime<Utc>> {
    from_micros(row.try_get::<i64, _>(col)?)
}

fn json(row: &SqliteRow, col: &str) -> StoreResult<Value> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| corrupt(format!("column {col}: {e}")))
}

fn opt_json(row: &SqliteRow, col: &str) -> StoreResult<Option<Value>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("column {col}: {e}"))))
        .transpose()
}

fn run_from_row(row: &SqliteRow) -> StoreResult<RunRecord> {
    let id: String = row.try_get("id")?;
    let parameters = parse_parameters(&json(row, "parameters")?, &id)?;
    Ok(RunRecord {
        trigger_id: row.try_get("trigger_id")?,
        target: row.try_get("target")?,
        provider: parse_provider(row.try_get("provider")?)?,
        account: row.try_get("account")?,
        git_ref: git_ref(row.try_get("branch")?, row.try_get("tag")?, row.try_get("sha")?),
        parameters,
        state: parse_state(row.try_get("state")?)?,
        raw_status: row.try_get("raw_status")?,
        message: row.try_get("message")?,
        provider_ref: provider_ref(
            row.try_get("provider_run_id")?,
            row.try_get("provider_number")?,
            row.try_get("provider_attempt")?,
            row.try_get("provider_url")?,
            opt_json(row, "provider_extra")?,
        ),
        unconfirmed: row.try_get("unconfirmed")?,
        sent_at: opt_time(row, "sent_at")?,
        confirm_deadline: opt_time(row, "confirm_deadline")?,
        dispatch_attempts: u32::try_from(row.try_get::<i64, _>("dispatch_attempts")?).unwrap_or(u32::MAX),
        lease_owner: row.try_get("lease_owner")?,
        lease_until: opt_time(row, "lease_until")?,
        next_dispatch_at: opt_time(row, "next_dispatch_at")?,
        next_poll_at: opt_time(row, "next_poll_at")?,
        observed_at: opt_time(row, "observed_at")?,
        created_at: time(row, "created_at")?,
        queued_at: opt_time(row, "queued_at")?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        updated_at: time(row, "updated_at")?,
        chain_parent: row.try_get("chain_parent")?,
        rerun_of: row.try_get("rerun_of")?,
        rerun_failed_only: row.try_get("rerun_failed_only")?,
        requested_by: row.try_get("requested_by")?,
        cancel_requested: row.try_get("cancel_requested")?,
        maybe_sent_count: u32::try_from(row.try_get::<i64, _>("maybe_sent_count")?).unwrap_or(u32::MAX),
        last_maybe_sent_at: opt_time(row, "last_maybe_sent_at")?,
        last_polled_at: opt_time(row, "last_polled_at")?,
        last_refresh_at: opt_time(row, "last_refresh_at")?,
        sending_since: opt_time(row, "sending_since")?,
        id,
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        trigger_id: row.try_get("trigger_id")?,
        target: row.try_get("target")?,
        kind: row.try_get("kind")?,
        state: parse_state(row.try_get("state")?)?,
        data: json(row, "data")?,
        created_at: time(row, "created_at")?,
    })
}

fn token_from_row(row: &SqliteRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        scopes: parse_string_list(&json(row, "scopes")?, "api_tokens.scopes")?,
        expires_at: opt_time(row, "expires_at")?,
        allowed_origins: parse_string_list(&json(row, "allowed_origins")?, "api_tokens.allowed_origins")?,
        rate_limit_per_minute: row.try_get::<Option<i64>, _>("rate_limit_per_minute")?.map(|v| v as u32),
        created_at: time(row, "created_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
    })
}

fn outbox_from_row(row: &SqliteRow) -> StoreResult<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        notification: row.try_get("notification")?,
        event_id: row.try_get("event_id")?,
        payload: json(row, "payload")?,
        status: OutboxStatus::parse(&status).ok_or_else(|| corrupt(format!("outbox status `{status}`")))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: time(row, "next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: opt_time(row, "lease_until")?,
        created_at: time(row, "created_at")?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

fn trigger_from_row(row: &SqliteRow, runs: Vec<RunRecord>) -> StoreResult<TriggerRecord> {
    Ok(TriggerRecord {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        requested_by: row.try_get("requested_by")?,
        request: json(row, "request")?,
        labels: json(row, "labels")?,
        created_at: time(row, "created_at")?,
        runs,
    })
}

fn to_text(v: &Value) -> String {
    v.to_string()
}

fn bind_run<'q>(
    sql: &'q str,
    r: &RunRecord,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let pr = r.provider_ref.as_ref();
    sqlx::query(sql)
        .bind(r.id.clone())
        .bind(r.trigger_id.clone())
        .bind(r.target.clone())
        .bind(r.provider.as_str())
        .bind(r.account.clone())
        .bind(r.git_ref.branch.clone())
        .bind(r.git_ref.tag.clone())
        .bind(r.git_ref.sha.clone())
        .bind(to_text(&stored_parameters(r)))
        .bind(r.state.as_str())
        .bind(r.raw_status.clone())
        .bind(r.message.clone())
        .bind(pr.map(|p| p.id.clone()))
        .bind(pr.and_then(|p| p.number).map(|n| n as i64))
        .bind(pr.map(|p| i64::from(p.attempt)))
        .bind(pr.and_then(|p| p.url.clone()))
        .bind(pr.filter(|p| !p.extra.is_null()).map(|p| to_text(&p.extra)))
        .bind(r.unconfirmed)
        .bind(r.sent_at.map(micros))
        .bind(r.confirm_deadline.map(micros))
        .bind(i64::from(r.dispatch_attempts))
        .bind(r.lease_owner.clone())
        .bind(r.lease_until.map(micros))
        .bind(r.next_dispatch_at.map(micros))
        .bind(r.next_poll_at.map(micros))
        .bind(r.observed_at.map(micros))
        .bind(micros(r.created_at))
        .bind(r.queued_at.map(micros))
        .bind(r.started_at.map(micros))
        .bind(r.finished_at.map(micros))
        .bind(micros(r.updated_at))
        .bind(r.chain_parent.clone())
        .bind(r.rerun_of.clone())
        .bind(r.rerun_failed_only)
        .bind(r.requested_by.clone())
        .bind(r.cancel_requested)
        .bind(i64::from(r.maybe_sent_count))
        .bind(r.last_maybe_sent_at.map(micros))
        .bind(r.last_polled_at.map(micros))
        .bind(r.last_refresh_at.map(micros))
        .bind(r.sending_since.map(micros))
}

fn provider_conflict(r: &RunRecord) -> String {
    match &r.provider_ref {
        Some(p) => {
            format!("provider build {} (attempt {}) of target {} belongs to another run", p.id, p.attempt, r.target)
        }
        None => format!("run {} already exists", r.id),
    }
}

/// The writer's transaction, seen through the shared primitives.
struct SqliteTx<'c>(&'c mut SqliteConnection);

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn lock_run(&mut self, id: &str) -> StoreResult<Option<RunRecord>> {
        // The writer is the only writer: reading inside its transaction is enough.
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?1").bind(id).fetch_optional(&mut *self.0).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn insert_trigger(&mut self, t: &NewTrigger) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO triggers (id, source, requested_by, request, labels, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&t.id)
        .bind(&t.source)
        .bind(&t.requested_by)
        .bind(to_text(&t.request))
        .bind(to_text(&t.labels))
        .bind(micros(t.created_at))
        .execute(&mut *self.0)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("trigger {} already exists", t.id)))?;
        Ok(())
    }

    async fn trigger_exists(&mut self, id: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM triggers WHERE id = ?1").bind(id).fetch_optional(&mut *self.0).await?.is_some())
    }

    async fn insert_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        bind_run(&SQLITE_INSERT_RUN, r)
            .execute(&mut *self.0)
            .await
            .map_err(|e| unique_to_conflict(e, || provider_conflict(r)))?;
        Ok(())
    }

    async fn update_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        bind_run(&SQLITE_UPDATE_RUN, r)
            .execute(&mut *self.0)
            .await
            .map_err(|e| unique_to_conflict(e, || provider_conflict(r)))?;
        Ok(())
    }

    async fn insert_event(&mut self, e: EventRow<'_>) -> StoreResult<EventRecord> {
        let row = sqlx::query(
            "INSERT INTO run_events (run_id, trigger_id, target, kind, state, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING *",
        )
        .bind(&e.run.id)
        .bind(&e.run.trigger_id)
        .bind(&e.run.target)
        .bind(e.kind)
        .bind(e.run.state.as_str())
        .bind(to_text(&e.data))
        .bind(micros(e.created_at))
        .fetch_one(&mut *self.0)
        .await?;
        event_from_row(&row)
    }

    async fn get_key(&mut self, scope: &str, key: &str) -> StoreResult<Option<StoredKey>> {
        let row = sqlx::query("SELECT * FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *self.0)
            .await?;
        row.map(|row| {
            Ok(StoredKey {
                fingerprint: json(&row, "fingerprint")?,
                response: json(&row, "response")?,
                trigger_id: row.try_get("trigger_id")?,
                expires_at: time(&row, "expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_key(&mut self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
            .bind(scope)
            .bind(key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_key(&mut self, k: &IdempotencyKey, trigger_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, trigger_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&k.scope)
        .bind(&k.key)
        .bind(to_text(&k.fingerprint))
        .bind(to_text(&k.response))
        .bind(trigger_id)
        .bind(micros(now))
        .bind(micros(k.expires_at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn get_chain_firing(&mut self, chain: &str, upstream: &str) -> StoreResult<Option<ChainFiringRecord>> {
        let row = sqlx::query("SELECT * FROM chain_firings WHERE chain = ?1 AND upstream_run_id = ?2")
            .bind(chain)
            .bind(upstream)
            .fetch_optional(&mut *self.0)
            .await?;
        row.map(|r| chain_from_row(&r)).transpose()
    }

    async fn put_chain_firing(&mut self, f: &ChainFiring, now: DateTime<Utc>, trigger_id: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chain_firings (chain, upstream_run_id, fired_at, trigger_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (chain, upstream_run_id) DO UPDATE SET trigger_id = excluded.trigger_id",
        )
        .bind(&f.chain)
        .bind(&f.upstream_run_id)
        .bind(micros(now))
        .bind(trigger_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn ref_owner(&mut self, target: &str, id: &str, attempt: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE target = ?1 AND provider_run_id = ?2 AND provider_attempt = ?3",
        )
        .bind(target)
        .bind(id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *self.0)
        .await?)
    }

    async fn notify_wakeup(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

fn chain_from_row(row: &SqliteRow) -> StoreResult<ChainFiringRecord> {
    Ok(ChainFiringRecord {
        chain: row.try_get("chain")?,
        upstream_run_id: row.try_get("upstream_run_id")?,
        fired_at: time(row, "fired_at")?,
        trigger_id: row.try_get("trigger_id")?,
    })
}

impl SqliteStore {
    /// Take up to `limit` runs `claim` finds due (the single writer makes claims exclusive).
    async fn claim(
        &self,
        claim: &'static Claim,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        let limit = ops::check_limit(limit)?;
        let owner = owner.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(&claim.sql(|n| format!("?{n}"), ""))
                    .bind(&owner)
                    .bind(micros(now))
                    .bind(micros(lease_until))
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?;
                sorted_runs(rows, claim.key)
            })
        })
        .await
    }
}

fn sorted_runs(rows: Vec<SqliteRow>, key: fn(&RunRecord) -> Option<DateTime<Utc>>) -> StoreResult<Vec<RunRecord>> {
    let mut runs = rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?;
    runs.sort_by(|a, b| (key(a), &a.id).cmp(&(key(b), &b.id)));
    Ok(runs)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn describe(&self) -> String {
        format!(
            "sqlite {} (group commit {})",
            cigw_core::config::redact_url(&self.url),
            if self.group_commit { "on" } else { "off" }
        )
    }

    async fn migrate(&self) -> StoreResult<()> {
        // Through the reader pool: a plain connection that waits (busy timeout) for the writer.
        MIGRATOR.run(&self.read).await.map_err(|e| StoreError::Migration { source: Box::new(e) })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn wakeups(&self) -> BoxStream<'static, ()> {
        // Like PostgreSQL's, the first item says "listening now".
        let notes = tokio_stream::wrappers::BroadcastStream::new(self.wake.subscribe()).map(|_| ());
        futures::stream::once(futures::future::ready(())).chain(notes).boxed()
    }

    async fn prune(&self, now: DateTime<Utc>, retention: &RetentionSettings) -> StoreResult<PruneReport> {
        let runs_cutoff = micros(now - retention.runs);
        let keys_cutoff = micros(now - retention.idempotency_keys);
        let deliveries_cutoff = micros(now - retention.deliveries);
        let outbox_cutoff = micros(now - retention.outbox);
        let now = micros(now);
        self.write(move |conn| {
            Box::pin(async move {
                let old = format!(
                    "SELECT id FROM runs WHERE state IN {TERMINAL_SQL} AND finished_at IS NOT NULL AND finished_at < ?1"
                );
                let events = sqlx::query(&format!("DELETE FROM run_events WHERE run_id IN ({old})"))
                    .bind(runs_cutoff)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let chain_firings = sqlx::query(&format!("DELETE FROM chain_firings WHERE upstream_run_id IN ({old})"))
                    .bind(runs_cutoff)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let runs = sqlx::query(&format!("DELETE FROM runs WHERE id IN ({old})"))
                    .bind(runs_cutoff)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let idempotency_keys =
                    sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?1 OR created_at < ?2")
                        .bind(now)
                        .bind(keys_cutoff)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                let triggers = sqlx::query(
                    "DELETE FROM triggers WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runs.trigger_id = triggers.id)",
                )
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let deliveries = sqlx::query("DELETE FROM deliveries WHERE expires_at <= ?1 OR received_at < ?2")
                    .bind(now)
                    .bind(deliveries_cutoff)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let outbox =
                    sqlx::query("DELETE FROM outbox WHERE status IN ('delivered', 'abandoned') AND finished_at < ?1")
                        .bind(outbox_cutoff)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                Ok(PruneReport { runs, events, triggers, idempotency_keys, deliveries, outbox, chain_firings })
            })
        })
        .await
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let runs = sqlx::query("UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1")
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let outbox =
                    sqlx::query("UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1")
                        .bind(&owner)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                Ok(runs + outbox)
            })
        })
        .await
    }

    async fn mark_sending(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (id, owner_name) = (run_id.to_string(), owner.to_string());
        let marked = self
            .write(move |conn| {
                Box::pin(async move {
                    let n = sqlx::query(&mark_sending_sql(|n| format!("?{n}")))
                        .bind(&id)
                        .bind(&owner_name)
                        .bind(micros(now))
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok(n)
                })
            })
            .await?;
        ops::marked(run_id, owner, marked)
    }

    async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let renewed = sqlx::query(&renew_lease_sql(|n| format!("?{n}")))
                    .bind(&run_id)
                    .bind(&owner)
                    .bind(micros(now))
                    .bind(micros(until))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                Ok(renewed == 1)
            })
        })
        .await
    }

    async fn create_trigger(&self, trigger: NewTrigger) -> StoreResult<CreateOutcome> {
        let outcome = self
            .write(move |conn| Box::pin(async move { ops::create_trigger(&mut SqliteTx(conn), &trigger).await }))
            .await?;
        if matches!(outcome, CreateOutcome::Created(_)) {
            self.wake_up();
        }
        Ok(outcome)
    }

    async fn create_rerun(&self, trigger_id: &str, run: NewRun, now: DateTime<Utc>) -> StoreResult<RunRecord> {
        let trigger_id = trigger_id.to_string();
        let now = trunc(now);
        let run = self
            .write(move |conn| {
                Box::pin(async move { ops::create_rerun(&mut SqliteTx(conn), &trigger_id, &run, now).await })
            })
            .await?;
        self.wake_up();
        Ok(run)
    }

    async fn claim_dispatch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        self.claim(&DISPATCH_CLAIM, owner, now, lease_until, limit).await
    }

    async fn record_dispatch(
        &self,
        run_id: &str,
        owner: &str,
        outcome: DispatchOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate> {
        let (run_id, owner, now) = (run_id.to_string(), owner.to_string(), trunc(now));
        self.write(move |conn| {
            Box::pin(async move { ops::record_dispatch(&mut SqliteTx(conn), &run_id, &owner, &outcome, now).await })
        })
        .await
    }

    async fn adopt(&self, run_id: &str, run_ref: ProviderRunRef, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.write(move |conn| Box::pin(async move { ops::adopt(&mut SqliteTx(conn), &run_id, &run_ref, now).await }))
            .await
    }

    async fn provider_ref_owner(&self, target: &str, provider_id: &str, attempt: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE target = ?1 AND provider_run_id = ?2 AND provider_attempt = ?3",
        )
        .bind(target)
        .bind(provider_id)
        .bind(i64::from(attempt))
        .fetch_optional(&self.read)
        .await?)
    }

    async fn claim_poll(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        self.claim(&POLL_CLAIM, owner, now, lease_until, limit).await
    }

    async fn apply_status(
        &self,
        run_id: &str,
        owner: &str,
        status: &RunStatus,
        next_poll_at: Option<DateTime<Utc>>,
    ) -> StoreResult<RunUpdate> {
        let (run_id, owner, status) = (run_id.to_string(), owner.to_string(), status.clone());
        self.write(move |conn| {
            Box::pin(async move {
                let now = trunc(status.observed_at);
                ops::apply_status(&mut SqliteTx(conn), &run_id, &owner, &status, next_poll_at, now).await
            })
        })
        .await
    }

    async fn poll_now(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let run_id = run_id.to_string();
        let found = self
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "UPDATE runs SET next_poll_at = ?2
                         WHERE id = ?1 AND state NOT IN {TERMINAL_SQL} AND next_dispatch_at IS NULL"
                    ))
                    .bind(&run_id)
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await?;
                    let exists = sqlx::query("SELECT 1 FROM runs WHERE id = ?1")
                        .bind(&run_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if exists.is_none() {
                        return Err(StoreError::run_not_found(&run_id));
                    }
                    Ok(())
                })
            })
            .await;
        self.wake_up();
        found
    }

    async fn poll_soon(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        let due = self
            .write(move |conn| {
                Box::pin(async move { ops::poll_soon(&mut SqliteTx(conn), &run_id, now, min_gap).await })
            })
            .await?;
        if due.is_some() {
            self.wake_up();
        }
        Ok(due)
    }

    async fn unconfirmed_runs(&self, target: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let limit = ops::check_limit(limit)?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM runs WHERE target = ?1 AND unconfirmed AND state NOT IN {TERMINAL_SQL}
             ORDER BY sent_at, id LIMIT ?2"
        ))
        .bind(target)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(ops::by_send_order(rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?))
    }

    async fn request_cancel(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        let update = self
            .write(move |conn| Box::pin(async move { ops::request_cancel(&mut SqliteTx(conn), &run_id, now).await }))
            .await?;
        self.wake_up();
        Ok(update)
    }

    async fn set_state(
        &self,
        run_id: &str,
        state: RunState,
        message: Option<String>,
        event_kind: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate> {
        let (run_id, kind, now) = (run_id.to_string(), event_kind.to_string(), trunc(now));
        self.write(move |conn| {
            Box::pin(async move {
                ops::set_state(&mut SqliteTx(conn), &run_id, state, message.as_deref(), &kind, now).await
            })
        })
        .await
    }

    async fn append_event(&self, event: NewEvent) -> StoreResult<EventRecord> {
        self.write(move |conn| Box::pin(async move { ops::append_event(&mut SqliteTx(conn), &event).await })).await
    }

    async fn events_after(&self, after_id: i64, filter: &EventFilter, limit: u32) -> StoreResult<Vec<EventRecord>> {
        let limit = ops::check_limit(limit)?;
        let mut qb = QueryBuilder::new("");
        query::events_after(&mut qb, after_id, filter, limit);
        let rows = qb.build().fetch_all(&self.read).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM run_events")
            .fetch_one(&self.read)
            .await?
            .unwrap_or(0))
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<RunRecord> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?1").bind(run_id).fetch_optional(&self.read).await?;
        row.as_ref().map(run_from_row).transpose()?.ok_or_else(|| StoreError::run_not_found(run_id))
    }

    async fn get_trigger(&self, trigger_id: &str) -> StoreResult<TriggerRecord> {
        let mut conn = self.read.acquire().await?;
        let mut tx = conn.begin().await?;
        let row = sqlx::query("SELECT * FROM triggers WHERE id = ?1")
            .bind(trigger_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("trigger {trigger_id}") })?;
        let runs = sqlx::query("SELECT * FROM runs WHERE trigger_id = ?1 ORDER BY created_at, id")
            .bind(trigger_id)
            .fetch_all(&mut *tx)
            .await?;
        let runs = runs.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        trigger_from_row(&row, runs)
    }

    async fn runs_of_trigger(&self, trigger_id: &str) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE trigger_id = ?1 ORDER BY created_at, id")
            .bind(trigger_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn list_runs(&self, filter: &RunFilter, cursor: Option<&str>) -> StoreResult<RunPage> {
        let limit = ops::check_limit(filter.limit)?;
        let after = cursor.map(ops::decode_cursor).transpose()?;
        let mut qb = QueryBuilder::new("");
        query::list_runs(&mut qb, filter, after.as_ref(), limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let mut runs = rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(ops::encode_cursor)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    async fn count_runs_by_state(&self) -> StoreResult<Vec<(RunState, u64)>> {
        let mut qb = QueryBuilder::new("");
        query::count_runs_by_state(&mut qb);
        let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.read).await?;
        let mut counts =
            rows.into_iter().map(|(s, n)| Ok((parse_state(&s)?, n as u64))).collect::<StoreResult<Vec<_>>>()?;
        counts.sort_by_key(|(s, _)| s.as_str());
        Ok(counts)
    }

    async fn count_unconfirmed_runs(&self) -> StoreResult<u64> {
        let mut qb = QueryBuilder::new("");
        query::count_unconfirmed(&mut qb);
        let n: i64 = qb.build_query_scalar().fetch_one(&self.read).await?;
        Ok(n as u64)
    }

    async fn explain(&self, hot: &HotQuery) -> StoreResult<Vec<String>> {
        let mut qb = QueryBuilder::new("EXPLAIN QUERY PLAN ");
        let rows = match query::hot_query(&mut qb, hot)? {
            query::Explained::Built => qb.build().fetch_all(&self.read).await?,
            query::Explained::Claim(sql) => {
                let now = micros(Utc::now());
                sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind("explain")
                    .bind(now)
                    .bind(now)
                    .bind(1_i64)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(|r| Ok(r.try_get::<String, _>("detail")?)).collect()
    }

    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        let record = TokenRecord {
            id: token.id.clone(),
            name: token.name.clone(),
            hash: token.hash.clone(),
            scopes: token.scopes.clone(),
            expires_at: token.expires_at.map(trunc),
            allowed_origins: token.allowed_origins.clone(),
            rate_limit_per_minute: token.rate_limit_per_minute,
            created_at: trunc(token.created_at),
            last_used_at: None,
        };
        if token.name.is_empty() {
            return Err(StoreError::Invalid { field: "name", message: "must not be empty".into() });
        }
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO api_tokens (id, name, hash, scopes, expires_at, allowed_origins,
                        rate_limit_per_minute, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .bind(&token.id)
                .bind(&token.name)
                .bind(&token.hash)
                .bind(to_text(&string_list(&token.scopes)))
                .bind(token.expires_at.map(micros))
                .bind(to_text(&string_list(&token.allowed_origins)))
                .bind(token.rate_limit_per_minute.map(i64::from))
                .bind(micros(token.created_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| unique_to_conflict(e, || format!("a token named `{}` already exists", token.name)))?;
                Ok(())
            })
        })
        .await?;
        Ok(record)
    }

    async fn find_token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let mut qb = QueryBuilder::new("");
        query::token_by_hash(&mut qb, hash);
        let row = qb.build().fetch_optional(&self.read).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM api_tokens WHERE revoked_at IS NULL ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let token_id = token_id.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                    .bind(&token_id)
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound { what: format!("token {token_id}") });
                }
                Ok(())
            })
        })
        .await
    }

    async fn touch_token(&self, token_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let token_id = token_id.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1")
                    .bind(&token_id)
                    .bind(micros(at))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionRecord> {
        self.write(move |conn| Box::pin(crate::sessions::sqlite::insert(conn, session))).await
    }

    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>> {
        crate::sessions::sqlite::find(&self.read, hash, now).await
    }

    async fn delete_session(&self, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.write(move |conn| Box::pin(async move { crate::sessions::sqlite::delete(conn, &hash).await })).await
    }

    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (source, delivery_id) = (source.to_string(), delivery_id.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO deliveries (source, delivery_id, received_at, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (source, delivery_id) DO UPDATE
                        SET received_at = excluded.received_at, expires_at = excluded.expires_at
                        WHERE deliveries.expires_at <= excluded.received_at",
                )
                .bind(&source)
                .bind(&delivery_id)
                .bind(micros(now))
                .bind(micros(expires_at))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        })
        .await
    }

    async fn record_chain_firing(&self, chain: &str, upstream_run_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (chain, upstream) = (chain.to_string(), upstream_run_id.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO chain_firings (chain, upstream_run_id, fired_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (chain, upstream_run_id) DO NOTHING",
                )
                .bind(&chain)
                .bind(&upstream)
                .bind(micros(now))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        })
        .await
    }

    async fn chain_firing(&self, chain: &str, upstream_run_id: &str) -> StoreResult<Option<ChainFiringRecord>> {
        let row = sqlx::query("SELECT * FROM chain_firings WHERE chain = ?1 AND upstream_run_id = ?2")
            .bind(chain)
            .bind(upstream_run_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(chain_from_row).transpose()
    }

    async fn load_cursor(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT value FROM cursors WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn save_cursor(&self, name: &str, value: i64) -> StoreResult<()> {
        let name = name.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO cursors (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(&name)
                .bind(value)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn enqueue_notification(&self, n: NewNotification) -> StoreResult<bool> {
        self.write(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "INSERT INTO outbox (notification, event_id, payload, status, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5) ON CONFLICT (notification, event_id) DO NOTHING",
                )
                .bind(&n.notification)
                .bind(n.event_id)
                .bind(to_text(&n.payload))
                .bind(micros(n.next_attempt_at))
                .bind(micros(n.created_at))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(rows == 1)
            })
        })
        .await
    }

    async fn claim_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let limit = ops::check_limit(limit)?;
        let owner = owner.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "UPDATE outbox SET lease_owner = ?1, lease_until = ?3, attempts = attempts + 1
                     WHERE id IN (
                        SELECT id FROM outbox
                        WHERE status = 'pending' AND next_attempt_at <= ?2
                          AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?2)
                        ORDER BY next_attempt_at, id LIMIT ?4)
                     RETURNING *",
                )
                .bind(&owner)
                .bind(micros(now))
                .bind(micros(lease_until))
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
                let mut out = rows.iter().map(outbox_from_row).collect::<StoreResult<Vec<_>>>()?;
                out.sort_by_key(|o| (o.next_attempt_at, o.id));
                Ok(out)
            })
        })
        .await
    }

    async fn mark_delivered(&self, id: i64, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let owner = owner.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE outbox SET status = 'delivered', finished_at = ?3, lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                )
                .bind(id)
                .bind(&owner)
                .bind(micros(now))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                outbox_check(conn, n, id, &owner).await
            })
        })
        .await
    }

    async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (owner, error) = (owner.to_string(), error.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE outbox SET last_error = ?3, lease_owner = NULL, lease_until = NULL,
                        status = CASE WHEN ?4 IS NULL THEN 'abandoned' ELSE 'pending' END,
                        next_attempt_at = COALESCE(?4, next_attempt_at),
                        finished_at = CASE WHEN ?4 IS NULL THEN ?5 ELSE NULL END
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                )
                .bind(id)
                .bind(&owner)
                .bind(&error)
                .bind(retry_at.map(micros))
                .bind(micros(now))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                outbox_check(conn, n, id, &owner).await
            })
        })
        .await
    }
}

async fn outbox_check(conn: &mut SqliteConnection, updated: u64, id: i64, owner: &str) -> StoreResult<()> {
    if updated == 1 {
        return Ok(());
    }
    let exists = sqlx::query("SELECT 1 FROM outbox WHERE id = ?1").bind(id).fetch_optional(&mut *conn).await?;
    Err(match exists {
        None => StoreError::NotFound { what: format!("outbox row {id}") },
        Some(_) => StoreError::Conflict { what: format!("outbox row {id} is not leased by `{owner}`") },
    })
}
