//! The PostgreSQL backend: a connection pool, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY
//! wake-ups, and event ids assigned under a transaction-level advisory lock so they follow
//! commit order.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::config::{DatabaseSettings, RetentionSettings, redact_url};
use cigw_core::{ProviderRunRef, RunState, RunStatus};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{QueryBuilder, Row};

use crate::columns::*;
use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::ops::{self, EventRow, StoredKey, Tx};
use crate::query;
use crate::sessions::{NewSession, SessionRecord};
use crate::store::Store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The NOTIFY channel the intake signals on.
const WAKEUP_CHANNEL: &str = "cigw_wakeup";
/// Advisory lock key serializing event inserts until commit ("cigw-evt" as bytes).
const EVENT_LOCK: i64 = 0x6369_6777_2d65_7674;
/// Advisory lock namespaces (two-integer form) for idempotency keys and chain firings.
const KEY_LOCK_SPACE: i32 = 0x6369_6701;
const CHAIN_LOCK_SPACE: i32 = 0x6369_6702;

/// The PostgreSQL store.
pub struct PgStore {
    url: String,
    pool: PgPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &redact_url(&self.url)).finish()
    }
}

impl PgStore {
    /// Connect a pool (TLS as `sslmode` in the URL says) without migrating.
    pub async fn open(settings: &DatabaseSettings) -> StoreResult<Self> {
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Invalid {
                field: "database.url",
                message: format!("not a PostgreSQL URL: {}", redact_url(&e.to_string())),
            })?
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(settings.statement_timeout.max(Duration::from_secs(1)))
            .connect_with(connect)
            .await?;
        Ok(Self { url: settings.url.clone(), pool })
    }

    /// Run `f` in one transaction; commit on `Ok`, roll back on `Err`.
    async fn in_tx<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send,
    {
        let mut tx = self.pool.begin().await?;
        let out = f(&mut tx).await;
        match out {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

// ---- rows ----

fn run_from_row(row: &PgRow) -> StoreResult<RunRecord> {
    let id: String = row.try_get("id")?;
    let parameters = parse_parameters(&row.try_get::<Value, _>("parameters")?, &id)?;
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
            row.try_get("provider_extra")?,
        ),
        unconfirmed: row.try_get("unconfirmed")?,
        sent_at: row.try_get("sent_at")?,
        confirm_deadline: row.try_get("confirm_deadline")?,
        dispatch_attempts: u32::try_from(row.try_get::<i64, _>("dispatch_attempts")?).unwrap_or(u32::MAX),
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        next_dispatch_at: row.try_get("next_dispatch_at")?,
        next_poll_at: row.try_get("next_poll_at")?,
        observed_at: row.try_get("observed_at")?,
        created_at: row.try_get("created_at")?,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        chain_parent: row.try_get("chain_parent")?,
        rerun_of: row.try_get("rerun_of")?,
        rerun_failed_only: row.try_get("rerun_failed_only")?,
        requested_by: row.try_get("requested_by")?,
        cancel_requested: row.try_get("cancel_requested")?,
        maybe_sent_count: u32::try_from(row.try_get::<i64, _>("maybe_sent_count")?).unwrap_or(u32::MAX),
        last_maybe_sent_at: row.try_get("last_maybe_sent_at")?,
        last_polled_at: row.try_get("last_polled_at")?,
        last_refresh_at: row.try_get("last_refresh_at")?,
        sending_since: row.try_get("sending_since")?,
        id,
    })
}

fn event_from_row(row: &PgRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        trigger_id: row.try_get("trigger_id")?,
        target: row.try_get("target")?,
        kind: row.try_get("kind")?,
        state: parse_state(row.try_get("state")?)?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}

fn token_from_row(row: &PgRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        scopes: parse_string_list(&row.try_get("scopes")?, "api_tokens.scopes")?,
        expires_at: row.try_get("expires_at")?,
        allowed_origins: parse_string_list(&row.try_get("allowed_origins")?, "api_tokens.allowed_origins")?,
        rate_limit_per_minute: row.try_get::<Option<i64>, _>("rate_limit_per_minute")?.map(|v| v as u32),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn outbox_from_row(row: &PgRow) -> StoreResult<OutboxRecord> {
    let status: String = row.try_get("status")?;
    Ok(OutboxRecord {
        id: row.try_get("id")?,
        notification: row.try_get("notification")?,
        event_id: row.try_get("event_id")?,
        payload: row.try_get("payload")?,
        status: OutboxStatus::parse(&status).ok_or_else(|| corrupt(format!("outbox status `{status}`")))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn chain_from_row(row: &PgRow) -> StoreResult<ChainFiringRecord> {
    Ok(ChainFiringRecord {
        chain: row.try_get("chain")?,
        upstream_run_id: row.try_get("upstream_run_id")?,
        fired_at: row.try_get("fired_at")?,
        trigger_id: row.try_get("trigger_id")?,
    })
}

fn bind_run<'q>(sql: &'q str, r: &RunRecord) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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
        .bind(stored_parameters(r))
        .bind(r.state.as_str())
        .bind(r.raw_status.clone())
        .bind(r.message.clone())
        .bind(pr.map(|p| p.id.clone()))
        .bind(pr.and_then(|p| p.number).map(|n| n as i64))
        .bind(pr.map(|p| i64::from(p.attempt)))
        .bind(pr.and_then(|p| p.url.clone()))
        .bind(pr.filter(|p| !p.extra.is_null()).map(|p| p.extra.clone()))
        .bind(r.unconfirmed)
        .bind(r.sent_at)
        .bind(r.confirm_deadline)
        .bind(i64::from(r.dispatch_attempts))
        .bind(r.lease_owner.clone())
        .bind(r.lease_until)
        .bind(r.next_dispatch_at)
        .bind(r.next_poll_at)
        .bind(r.observed_at)
        .bind(r.created_at)
        .bind(r.queued_at)
        .bind(r.started_at)
        .bind(r.finished_at)
        .bind(r.updated_at)
        .bind(r.chain_parent.clone())
        .bind(r.rerun_of.clone())
        .bind(r.rerun_failed_only)
        .bind(r.requested_by.clone())
        .bind(r.cancel_requested)
        .bind(i64::from(r.maybe_sent_count))
        .bind(r.last_maybe_sent_at)
        .bind(r.last_polled_at)
        .bind(r.last_refresh_at)
        .bind(r.sending_since)
}

fn provider_conflict(r: &RunRecord) -> String {
    match &r.provider_ref {
        Some(p) => {
            format!("provider build {} (attempt {}) of target {} belongs to another run", p.id, p.attempt, r.target)
        }
        None => format!("run {} already exists", r.id),
    }
}

/// One open transaction, seen through the shared primitives.
struct PgTx<'c>(&'c mut PgConnection);

#[async_trait]
impl Tx for PgTx<'_> {
    async fn lock_run(&mut self, id: &str) -> StoreResult<Option<RunRecord>> {
        let row =
            sqlx::query("SELECT * FROM runs WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *self.0).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn insert_trigger(&mut self, t: &NewTrigger) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO triggers (id, source, requested_by, request, labels, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.source)
        .bind(&t.requested_by)
        .bind(&t.request)
        .bind(&t.labels)
        .bind(trunc(t.created_at))
        .execute(&mut *self.0)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("trigger {} already exists", t.id)))?;
        Ok(())
    }

    async fn trigger_exists(&mut self, id: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM triggers WHERE id = $1").bind(id).fetch_optional(&mut *self.0).await?.is_some())
    }

    async fn insert_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        bind_run(&PG_INSERT_RUN, r)
            .execute(&mut *self.0)
            .await
            .map_err(|e| unique_to_conflict(e, || provider_conflict(r)))?;
        Ok(())
    }

    async fn update_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        bind_run(&PG_UPDATE_RUN, r)
            .execute(&mut *self.0)
            .await
            .map_err(|e| unique_to_conflict(e, || provider_conflict(r)))?;
        Ok(())
    }

    async fn insert_event(&mut self, e: EventRow<'_>) -> StoreResult<EventRecord> {
        // Held until commit: the next transaction draws its id only after this one is visible.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENT_LOCK).execute(&mut *self.0).await?;
        let row = sqlx::query(
            "INSERT INTO run_events (run_id, trigger_id, target, kind, state, data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(&e.run.id)
        .bind(&e.run.trigger_id)
        .bind(&e.run.target)
        .bind(e.kind)
        .bind(e.run.state.as_str())
        .bind(&e.data)
        .bind(trunc(e.created_at))
        .fetch_one(&mut *self.0)
        .await?;
        event_from_row(&row)
    }

    async fn get_key(&mut self, scope: &str, key: &str) -> StoreResult<Option<StoredKey>> {
        // Two intakes with the same new key: the second waits and then sees the first's key.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || chr(1) || $3))")
            .bind(KEY_LOCK_SPACE)
            .bind(scope)
            .bind(key)
            .execute(&mut *self.0)
            .await?;
        let row = sqlx::query("SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *self.0)
            .await?;
        row.map(|row| {
            Ok(StoredKey {
                fingerprint: row.try_get("fingerprint")?,
                response: row.try_get("response")?,
                trigger_id: row.try_get("trigger_id")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_key(&mut self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_key(&mut self, k: &IdempotencyKey, trigger_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, trigger_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.scope)
        .bind(&k.key)
        .bind(&k.fingerprint)
        .bind(&k.response)
        .bind(trigger_id)
        .bind(now)
        .bind(trunc(k.expires_at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn get_chain_firing(&mut self, chain: &str, upstream: &str) -> StoreResult<Option<ChainFiringRecord>> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || chr(1) || $3))")
            .bind(CHAIN_LOCK_SPACE)
            .bind(chain)
            .bind(upstream)
            .execute(&mut *self.0)
            .await?;
        let row = sqlx::query("SELECT * FROM chain_firings WHERE chain = $1 AND upstream_run_id = $2")
            .bind(chain)
            .bind(upstream)
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(chain_from_row).transpose()
    }

    async fn put_chain_firing(&mut self, f: &ChainFiring, now: DateTime<Utc>, trigger_id: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chain_firings (chain, upstream_run_id, fired_at, trigger_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (chain, upstream_run_id) DO UPDATE SET trigger_id = EXCLUDED.trigger_id",
        )
        .bind(&f.chain)
        .bind(&f.upstream_run_id)
        .bind(now)
        .bind(trigger_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn ref_owner(&mut self, target: &str, id: &str, attempt: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE target = $1 AND provider_run_id = $2 AND provider_attempt = $3",
        )
        .bind(target)
        .bind(id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *self.0)
        .await?)
    }

    async fn notify_wakeup(&mut self) -> StoreResult<()> {
        // Delivered to listeners only when (and if) this transaction commits.
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKEUP_CHANNEL).execute(&mut *self.0).await?;
        Ok(())
    }
}

impl PgStore {
    /// Take up to `limit` runs `claim` finds due, skipping rows other claimers hold.
    async fn claim(
        &self,
        claim: &Claim,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        let limit = ops::check_limit(limit)?;
        let rows = sqlx::query(&claim.sql(|n| format!("${n}"), "FOR UPDATE SKIP LOCKED"))
            .bind(owner)
            .bind(trunc(now))
            .bind(trunc(lease_until))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        sorted_runs(rows, claim.key)
    }
}

fn sorted_runs(rows: Vec<PgRow>, key: fn(&RunRecord) -> Option<DateTime<Utc>>) -> StoreResult<Vec<RunRecord>> {
    let mut runs = rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?;
    runs.sort_by(|a, b| (key(a), &a.id).cmp(&(key(b), &b.id)));
    Ok(runs)
}

async fn listen(pool: &PgPool) -> PgListener {
    loop {
        let attempt = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(WAKEUP_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn describe(&self) -> String {
        format!("postgres {}", redact_url(&self.url))
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Migration { source: Box::new(e) })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn wakeups(&self) -> BoxStream<'static, ()> {
        let pool = self.pool.clone();
        // The first item says "listening now"; later ones are notifications. After a lost
        // connection the stream re-listens and yields once, since notifications may be missed.
        futures::stream::unfold((pool, None::<PgListener>), |(pool, listener)| async move {
            match listener {
                None => {
                    let l = listen(&pool).await;
                    Some(((), (pool, Some(l))))
                }
                Some(mut l) => match l.recv().await {
                    Ok(_) => Some(((), (pool, Some(l)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up listener failed; re-listening");
                        Some(((), (pool, None)))
                    }
                },
            }
        })
        .boxed()
    }

    async fn prune(&self, now: DateTime<Utc>, retention: &RetentionSettings) -> StoreResult<PruneReport> {
        let runs_cutoff = now - retention.runs;
        let keys_cutoff = now - retention.idempotency_keys;
        let deliveries_cutoff = now - retention.deliveries;
        let outbox_cutoff = now - retention.outbox;
        self.in_tx(move |conn| {
            Box::pin(async move {
                let old = format!(
                    "SELECT id FROM runs WHERE state IN {TERMINAL_SQL} AND finished_at IS NOT NULL AND finished_at < $1"
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
                    sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1 OR created_at < $2")
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
                let deliveries = sqlx::query("DELETE FROM deliveries WHERE expires_at <= $1 OR received_at < $2")
                    .bind(now)
                    .bind(deliveries_cutoff)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let outbox =
                    sqlx::query("DELETE FROM outbox WHERE status IN ('delivered', 'abandoned') AND finished_at < $1")
                        .bind(outbox_cutoff)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                Ok(PruneReport { runs, events, triggers, idempotency_keys, deliveries, outbox, chain_firings })
            })
        })
        .await
    }

    async fn mark_sending(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let marked = sqlx::query(&mark_sending_sql(|n| format!("${n}")))
            .bind(run_id)
            .bind(owner)
            .bind(trunc(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        ops::marked(run_id, owner, marked)
    }

    async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let renewed = sqlx::query(&renew_lease_sql(|n| format!("${n}")))
            .bind(run_id)
            .bind(owner)
            .bind(trunc(now))
            .bind(trunc(until))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(renewed == 1)
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_string();
        self.in_tx(move |conn| {
            Box::pin(async move {
                let runs = sqlx::query("UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let outbox =
                    sqlx::query("UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                        .bind(&owner)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                Ok(runs + outbox)
            })
        })
        .await
    }

    async fn create_trigger(&self, trigger: NewTrigger) -> StoreResult<CreateOutcome> {
        self.in_tx(move |conn| Box::pin(async move { ops::create_trigger(&mut PgTx(conn), &trigger).await })).await
    }

    async fn create_rerun(&self, trigger_id: &str, run: NewRun, now: DateTime<Utc>) -> StoreResult<RunRecord> {
        let (trigger_id, now) = (trigger_id.to_string(), trunc(now));
        self.in_tx(move |conn| {
            Box::pin(async move { ops::create_rerun(&mut PgTx(conn), &trigger_id, &run, now).await })
        })
        .await
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
        self.in_tx(move |conn| {
            Box::pin(async move { ops::record_dispatch(&mut PgTx(conn), &run_id, &owner, &outcome, now).await })
        })
        .await
    }

    async fn adopt(&self, run_id: &str, run_ref: ProviderRunRef, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.in_tx(move |conn| Box::pin(async move { ops::adopt(&mut PgTx(conn), &run_id, &run_ref, now).await })).await
    }

    async fn provider_ref_owner(&self, target: &str, provider_id: &str, attempt: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE target = $1 AND provider_run_id = $2 AND provider_attempt = $3",
        )
        .bind(target)
        .bind(provider_id)
        .bind(i64::from(attempt))
        .fetch_optional(&self.pool)
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
        let now = trunc(status.observed_at);
        let (run_id, owner, status) = (run_id.to_string(), owner.to_string(), status.clone());
        self.in_tx(move |conn| {
            Box::pin(
                async move { ops::apply_status(&mut PgTx(conn), &run_id, &owner, &status, next_poll_at, now).await },
            )
        })
        .await
    }

    async fn poll_now(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.in_tx(move |conn| {
            Box::pin(async move {
                let run_id = run_id.as_str();
                let exists =
                    sqlx::query("SELECT 1 FROM runs WHERE id = $1").bind(run_id).fetch_optional(&mut *conn).await?;
                if exists.is_none() {
                    return Err(StoreError::run_not_found(run_id));
                }
                sqlx::query(&format!(
                    "UPDATE runs SET next_poll_at = $2
                     WHERE id = $1 AND state NOT IN {TERMINAL_SQL} AND next_dispatch_at IS NULL"
                ))
                .bind(run_id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                PgTx(conn).notify_wakeup().await
            })
        })
        .await
    }

    async fn poll_soon(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.in_tx(move |conn| Box::pin(async move { ops::poll_soon(&mut PgTx(conn), &run_id, now, min_gap).await }))
            .await
    }

    async fn unconfirmed_runs(&self, target: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let limit = ops::check_limit(limit)?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM runs WHERE target = $1 AND unconfirmed AND state NOT IN {TERMINAL_SQL}
             ORDER BY sent_at, id LIMIT $2"
        ))
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ops::by_send_order(rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?))
    }

    async fn request_cancel(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.in_tx(move |conn| {
            Box::pin(async move {
                let update = ops::request_cancel(&mut PgTx(conn), &run_id, now).await?;
                PgTx(conn).notify_wakeup().await?;
                Ok(update)
            })
        })
        .await
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
        self.in_tx(move |conn| {
            Box::pin(
                async move { ops::set_state(&mut PgTx(conn), &run_id, state, message.as_deref(), &kind, now).await },
            )
        })
        .await
    }

    async fn append_event(&self, event: NewEvent) -> StoreResult<EventRecord> {
        self.in_tx(move |conn| Box::pin(async move { ops::append_event(&mut PgTx(conn), &event).await })).await
    }

    async fn events_after(&self, after_id: i64, filter: &EventFilter, limit: u32) -> StoreResult<Vec<EventRecord>> {
        let limit = ops::check_limit(limit)?;
        let mut qb = QueryBuilder::new("");
        query::events_after(&mut qb, after_id, filter, limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM run_events")
            .fetch_one(&self.pool)
            .await?
            .unwrap_or(0))
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<RunRecord> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1").bind(run_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(run_from_row).transpose()?.ok_or_else(|| StoreError::run_not_found(run_id))
    }

    async fn get_trigger(&self, trigger_id: &str) -> StoreResult<TriggerRecord> {
        let trigger_id = trigger_id.to_string();
        self.in_tx(move |conn| {
            Box::pin(async move {
                let trigger_id = trigger_id.as_str();
                let row = sqlx::query("SELECT * FROM triggers WHERE id = $1")
                    .bind(trigger_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { what: format!("trigger {trigger_id}") })?;
                let runs = sqlx::query("SELECT * FROM runs WHERE trigger_id = $1 ORDER BY created_at, id")
                    .bind(trigger_id)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(TriggerRecord {
                    id: row.try_get("id")?,
                    source: row.try_get("source")?,
                    requested_by: row.try_get("requested_by")?,
                    request: row.try_get("request")?,
                    labels: row.try_get("labels")?,
                    created_at: row.try_get("created_at")?,
                    runs: runs.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?,
                })
            })
        })
        .await
    }

    async fn runs_of_trigger(&self, trigger_id: &str) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE trigger_id = $1 ORDER BY created_at, id")
            .bind(trigger_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn list_runs(&self, filter: &RunFilter, cursor: Option<&str>) -> StoreResult<RunPage> {
        let limit = ops::check_limit(filter.limit)?;
        let after = cursor.map(ops::decode_cursor).transpose()?;
        let mut qb = QueryBuilder::new("");
        query::list_runs(&mut qb, filter, after.as_ref(), limit + 1);
        let rows = qb.build().fetch_all(&self.pool).await?;
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
        let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
        let mut counts =
            rows.into_iter().map(|(s, n)| Ok((parse_state(&s)?, n as u64))).collect::<StoreResult<Vec<_>>>()?;
        counts.sort_by_key(|(s, _)| s.as_str());
        Ok(counts)
    }

    async fn count_unconfirmed_runs(&self) -> StoreResult<u64> {
        let mut qb = QueryBuilder::new("");
        query::count_unconfirmed(&mut qb);
        let n: i64 = qb.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn explain(&self, hot: &HotQuery) -> StoreResult<Vec<String>> {
        let mut qb = QueryBuilder::new("EXPLAIN ");
        let rows = match query::hot_query(&mut qb, hot)? {
            query::Explained::Built => qb.build().fetch_all(&self.pool).await?,
            query::Explained::Claim(sql) => {
                let now = trunc(Utc::now());
                sqlx::query(&format!("EXPLAIN {sql}"))
                    .bind("explain")
                    .bind(now)
                    .bind(now)
                    .bind(1_i64)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        if token.name.is_empty() {
            return Err(StoreError::Invalid { field: "name", message: "must not be empty".into() });
        }
        let row = sqlx::query(
            "INSERT INTO api_tokens (id, name, hash, scopes, expires_at, allowed_origins, rate_limit_per_minute,
                created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.hash)
        .bind(string_list(&token.scopes))
        .bind(token.expires_at)
        .bind(string_list(&token.allowed_origins))
        .bind(token.rate_limit_per_minute.map(i64::from))
        .bind(token.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("a token named `{}` already exists", token.name)))?;
        token_from_row(&row)
    }

    async fn find_token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let mut qb = QueryBuilder::new("");
        query::token_by_hash(&mut qb, hash);
        let row = qb.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM api_tokens WHERE revoked_at IS NULL ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let n = sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(token_id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound { what: format!("token {token_id}") });
        }
        Ok(())
    }

    async fn touch_token(&self, token_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(token_id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionRecord> {
        crate::sessions::postgres::insert(&self.pool, session).await
    }

    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>> {
        crate::sessions::postgres::find(&self.pool, hash, now).await
    }

    async fn delete_session(&self, hash: &str) -> StoreResult<()> {
        crate::sessions::postgres::delete(&self.pool, hash).await
    }

    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "INSERT INTO deliveries (source, delivery_id, received_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, delivery_id) DO UPDATE
                SET received_at = EXCLUDED.received_at, expires_at = EXCLUDED.expires_at
                WHERE deliveries.expires_at <= EXCLUDED.received_at",
        )
        .bind(source)
        .bind(delivery_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn record_chain_firing(&self, chain: &str, upstream_run_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n = sqlx::query(
            "INSERT INTO chain_firings (chain, upstream_run_id, fired_at) VALUES ($1, $2, $3)
             ON CONFLICT (chain, upstream_run_id) DO NOTHING",
        )
        .bind(chain)
        .bind(upstream_run_id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn chain_firing(&self, chain: &str, upstream_run_id: &str) -> StoreResult<Option<ChainFiringRecord>> {
        let row = sqlx::query("SELECT * FROM chain_firings WHERE chain = $1 AND upstream_run_id = $2")
            .bind(chain)
            .bind(upstream_run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(chain_from_row).transpose()
    }

    async fn load_cursor(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT value FROM cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn save_cursor(&self, name: &str, value: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enqueue_notification(&self, n: NewNotification) -> StoreResult<bool> {
        let rows = sqlx::query(
            "INSERT INTO outbox (notification, event_id, payload, status, next_attempt_at, created_at)
             VALUES ($1, $2, $3, 'pending', $4, $5) ON CONFLICT (notification, event_id) DO NOTHING",
        )
        .bind(&n.notification)
        .bind(n.event_id)
        .bind(&n.payload)
        .bind(n.next_attempt_at)
        .bind(n.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(rows == 1)
    }

    async fn claim_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let limit = ops::check_limit(limit)?;
        let rows = sqlx::query(
            "UPDATE outbox SET lease_owner = $1, lease_until = $3, attempts = attempts + 1
             WHERE id IN (
                SELECT id FROM outbox
                WHERE status = 'pending' AND next_attempt_at <= $2
                  AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $2)
                ORDER BY next_attempt_at, id LIMIT $4
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(owner)
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(outbox_from_row).collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|o| (o.next_attempt_at, o.id));
        Ok(out)
    }

    async fn mark_delivered(&self, id: i64, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let n = sqlx::query(
            "UPDATE outbox SET status = 'delivered', finished_at = $3, lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.outbox_check(n, id, owner).await
    }

    async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let n = sqlx::query(
            "UPDATE outbox SET last_error = $3, lease_owner = NULL, lease_until = NULL,
                status = CASE WHEN $4::timestamptz IS NULL THEN 'abandoned' ELSE 'pending' END,
                next_attempt_at = COALESCE($4, next_attempt_at),
                finished_at = CASE WHEN $4::timestamptz IS NULL THEN $5 ELSE NULL END
             WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(error)
        .bind(retry_at)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.outbox_check(n, id, owner).await
    }
}

impl PgStore {
    async fn outbox_check(&self, updated: u64, id: i64, owner: &str) -> StoreResult<()> {
        if updated == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM outbox WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Err(match exists {
            None => StoreError::NotFound { what: format!("outbox row {id}") },
            Some(_) => StoreError::Conflict { what: format!("outbox row {id} is not leased by `{owner}`") },
        })
    }
}
