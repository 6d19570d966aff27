//! The [`Store`], implemented once for any [`Driver`]: each method names how it reaches the
//! database ([`Access`]) and runs shared code ([`crate::ops`], [`crate::statements`],
//! [`crate::query`]) on the [`Tx`] the backend hands it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::config::RetentionSettings;
use cigw_core::shared_budget::SharedBudget;
use cigw_core::{ProviderRunRef, RunState, RunStatus};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::columns::{Claim, DISPATCH_CLAIM, POLL_CLAIM, parse_state, trunc};
use crate::error::{StoreError, StoreResult};
use crate::model::*;
use crate::records::{event_from_row, outbox_from_row, run_from_row, token_from_row};
use crate::sql::Tx;
use crate::statements as st;
use crate::store::Store;
use crate::{ops, query};

/// How a store call reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Statements that write, in one transaction (SQLite: through the writer thread, answered
    /// after its commit).
    Write,
    /// One statement that writes (PostgreSQL: on its own, without BEGIN and COMMIT; SQLite:
    /// through the writer thread like any write).
    WriteOne,
    /// Statements that read, on a pooled connection.
    Read,
    /// Statements that read and must see one snapshot: in a read transaction.
    Snapshot,
}

/// What a backend provides: connections, transactions, migrations and wake-ups.
#[async_trait]
pub(crate) trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// See [`Store::describe`].
    fn describe(&self) -> String;
    /// See [`Store::migrate`].
    async fn migrate(&self) -> StoreResult<()>;
    /// See [`Store::wakeups`].
    fn wakeups(&self) -> BoxStream<'static, ()>;
    /// See [`Store::auth_changes`].
    fn auth_changes(&self) -> BoxStream<'static, AuthChange>;
    /// See [`Store::shared_budget`].
    fn shared_budget(&self) -> Option<Arc<dyn SharedBudget>>;
    /// Run `job` on one of the backend's connections as `access` says; a write answers only
    /// once committed.
    async fn run<T, F>(&self, access: Access, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Tx) -> BoxFuture<'c, StoreResult<T>> + Send + 'static;
}

#[async_trait]
impl<D: Driver> Store for D {
    fn describe(&self) -> String {
        Driver::describe(self)
    }

    async fn migrate(&self) -> StoreResult<()> {
        Driver::migrate(self).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(Access::Read, |tx| {
            Box::pin(async move { Ok(tx.execute(crate::sql::Stmt::new("SELECT 1")).await.map(|_| ())?) })
        })
        .await
    }

    fn wakeups(&self) -> BoxStream<'static, ()> {
        Driver::wakeups(self)
    }

    fn auth_changes(&self) -> BoxStream<'static, AuthChange> {
        Driver::auth_changes(self)
    }

    fn shared_budget(&self) -> Option<Arc<dyn SharedBudget>> {
        Driver::shared_budget(self)
    }

    async fn prune(&self, now: DateTime<Utc>, retention: &RetentionSettings) -> StoreResult<PruneReport> {
        let retention = retention.clone();
        self.run(Access::Write, move |tx| Box::pin(async move { st::prune(tx, now, &retention).await })).await
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_string();
        self.run(Access::Write, move |tx| Box::pin(async move { st::release_leases(tx, &owner).await })).await
    }

    async fn mark_sending(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (run_id, owner, now) = (run_id.to_string(), owner.to_string(), trunc(now));
        self.run(Access::WriteOne, move |tx| Box::pin(async move { st::mark_sending(tx, &run_id, &owner, now).await }))
            .await
    }

    async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        self.run(Access::WriteOne, move |tx| {
            Box::pin(async move { st::renew_lease(tx, &run_id, &owner, now, until).await })
        })
        .await
    }

    async fn create_trigger(&self, trigger: NewTrigger) -> StoreResult<CreateOutcome> {
        self.run(Access::Write, move |tx| Box::pin(async move { ops::create_trigger(tx, &trigger).await })).await
    }

    async fn create_rerun(&self, trigger_id: &str, run: NewRun, now: DateTime<Utc>) -> StoreResult<RunRecord> {
        let (trigger_id, now) = (trigger_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| Box::pin(async move { ops::create_rerun(tx, &trigger_id, &run, now).await }))
            .await
    }

    async fn claim_dispatch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        claim(self, &DISPATCH_CLAIM, owner, now, lease_until, limit).await
    }

    async fn record_dispatch(
        &self,
        run_id: &str,
        owner: &str,
        outcome: DispatchOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate> {
        let (run_id, owner, now) = (run_id.to_string(), owner.to_string(), trunc(now));
        self.run(Access::Write, move |tx| {
            Box::pin(async move { ops::record_dispatch(tx, &run_id, &owner, &outcome, now).await })
        })
        .await
    }

    async fn supersede(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<Option<RunUpdate>> {
        let (run_id, owner, now) = (run_id.to_string(), owner.to_string(), trunc(now));
        self.run(Access::Write, move |tx| Box::pin(async move { ops::supersede(tx, &run_id, &owner, now).await })).await
    }

    async fn adopt(&self, run_id: &str, run_ref: ProviderRunRef, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| Box::pin(async move { ops::adopt(tx, &run_id, &run_ref, now).await })).await
    }

    async fn provider_ref_owner(&self, target: &str, provider_id: &str, attempt: u32) -> StoreResult<Option<String>> {
        let (target, provider_id) = (target.to_string(), provider_id.to_string());
        self.run(Access::Read, move |tx| {
            Box::pin(async move { st::ref_owner(tx, &target, &provider_id, attempt).await })
        })
        .await
    }

    async fn claim_poll(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        claim(self, &POLL_CLAIM, owner, now, lease_until, limit).await
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
        self.run(Access::Write, move |tx| {
            Box::pin(async move { ops::apply_status(tx, &run_id, &owner, &status, next_poll_at, now).await })
        })
        .await
    }

    async fn poll_now(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| Box::pin(async move { st::poll_now(tx, &run_id, now).await })).await
    }

    async fn poll_soon(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
        min_gap: std::time::Duration,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| Box::pin(async move { ops::poll_soon(tx, &run_id, now, min_gap).await }))
            .await
    }

    async fn unconfirmed_runs(&self, target: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let (limit, target) = (ops::check_limit(limit)?, target.to_string());
        self.run(Access::Read, move |tx| Box::pin(async move { st::unconfirmed_runs(tx, &target, limit).await })).await
    }

    async fn request_cancel(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| {
            Box::pin(async move {
                let update = ops::request_cancel(tx, &run_id, now).await?;
                tx.notify_wakeup().await?;
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
        kind: EventKind,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate> {
        let (run_id, now) = (run_id.to_string(), trunc(now));
        self.run(Access::Write, move |tx| {
            Box::pin(async move { ops::set_state(tx, &run_id, state, message.as_deref(), kind, now).await })
        })
        .await
    }

    async fn append_event(&self, event: NewEvent) -> StoreResult<EventRecord> {
        self.run(Access::Write, move |tx| Box::pin(async move { ops::append_event(tx, &event).await })).await
    }

    async fn events_after(&self, after_id: i64, filter: &EventFilter, limit: u32) -> StoreResult<Vec<EventRecord>> {
        let (filter, limit) = (filter.clone(), ops::check_limit(limit)?);
        self.run(Access::Read, move |tx| {
            Box::pin(async move {
                let up_to = st::event_horizon(tx).await?;
                let stmt = query::events_after(after_id, up_to, &filter, limit);
                tx.fetch(stmt).await?.iter().map(|r| event_from_row(&**r)).collect()
            })
        })
        .await
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        self.run(Access::Read, |tx| Box::pin(async move { st::last_event_id(tx).await })).await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<RunRecord> {
        let run_id = run_id.to_string();
        self.run(Access::Read, move |tx| {
            Box::pin(async move { st::find_run(tx, &run_id).await?.ok_or_else(|| StoreError::run_not_found(&run_id)) })
        })
        .await
    }

    async fn get_trigger(&self, trigger_id: &str) -> StoreResult<TriggerRecord> {
        let trigger_id = trigger_id.to_string();
        self.run(Access::Snapshot, move |tx| Box::pin(async move { st::get_trigger(tx, &trigger_id).await })).await
    }

    async fn list_runs(&self, filter: &RunFilter, cursor: Option<&str>) -> StoreResult<RunPage> {
        let limit = ops::check_limit(filter.limit)?;
        let after = cursor.map(ops::decode_cursor).transpose()?;
        let stmt = query::list_runs(filter, after.as_ref(), limit + 1);
        let rows = self
            .run(Access::Read, move |tx| {
                Box::pin(async move { tx.fetch(stmt).await?.iter().map(|r| run_from_row(&**r)).collect() })
            })
            .await;
        let mut runs: Vec<RunRecord> = rows?;
        let next_cursor = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(ops::encode_cursor)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    async fn count_runs_by_state(&self) -> StoreResult<Vec<(RunState, u64)>> {
        let mut counts = self
            .run(Access::Read, |tx| {
                Box::pin(async move {
                    let rows = tx.fetch(query::count_runs_by_state()).await?;
                    rows.iter()
                        .map(|r| Ok((parse_state(&r.text("state")?)?, r.int("n")? as u64)))
                        .collect::<StoreResult<Vec<_>>>()
                })
            })
            .await?;
        counts.sort_by_key(|(s, _)| s.as_str());
        Ok(counts)
    }

    async fn oldest_due_dispatch(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        let now = trunc(now);
        self.run(Access::Read, move |tx| {
            Box::pin(async move {
                let row = tx.fetch_optional(query::oldest_due_dispatch(now)).await?;
                row.map(|r| r.time("next_dispatch_at")).transpose()
            })
        })
        .await
    }

    async fn count_unconfirmed_runs(&self) -> StoreResult<u64> {
        self.run(Access::Read, |tx| {
            Box::pin(async move { Ok(tx.fetch_one(query::count_unconfirmed()).await?.int("n")? as u64) })
        })
        .await
    }

    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord> {
        if token.name.is_empty() {
            return Err(StoreError::Invalid { field: "name", message: "must not be empty".into() });
        }
        // With its NOTIFY, in one transaction.
        self.run(Access::Write, move |tx| Box::pin(async move { st::create_token(tx, &token).await })).await
    }

    async fn find_token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let stmt = query::token_by_hash(hash);
        self.run(Access::Read, move |tx| {
            Box::pin(async move { tx.fetch_optional(stmt).await?.map(|r| token_from_row(&*r)).transpose() })
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.run(Access::Read, |tx| Box::pin(async move { st::list_tokens(tx).await })).await
    }

    async fn revoke_token(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let token_id = token_id.to_string();
        self.run(Access::Write, move |tx| Box::pin(async move { st::revoke_token(tx, &token_id, now).await })).await
    }

    async fn touch_token(&self, token_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let token_id = token_id.to_string();
        self.run(Access::WriteOne, move |tx| Box::pin(async move { st::touch_token(tx, &token_id, at).await })).await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionRecord> {
        self.run(Access::Write, move |tx| Box::pin(async move { st::create_session(tx, &session).await })).await
    }

    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>> {
        let hash = hash.to_string();
        self.run(Access::Read, move |tx| Box::pin(async move { st::find_session(tx, &hash, now).await })).await
    }

    async fn delete_session(&self, hash: &str) -> StoreResult<()> {
        let hash = hash.to_string();
        self.run(Access::Write, move |tx| Box::pin(async move { st::delete_session(tx, &hash).await })).await
    }

    async fn record_hook_delivery(&self, delivery: NewHookDelivery) -> StoreResult<Option<HookDeliveryRecord>> {
        self.run(Access::Write, move |tx| Box::pin(async move { ops::record_hook_delivery(tx, &delivery).await })).await
    }

    async fn get_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<HookDeliveryRecord>> {
        let (hook, delivery_id) = (hook.to_string(), delivery_id.to_string());
        self.run(Access::Read, move |tx| {
            Box::pin(async move {
                Ok(st::find_hook_delivery(tx, &hook, &delivery_id).await?.filter(|d| d.expires_at > now))
            })
        })
        .await
    }

    async fn list_hook_deliveries(
        &self,
        hook: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<HookDeliveryRecord>> {
        let (limit, hook) = (ops::check_limit(limit)?, hook.to_string());
        self.run(Access::Read, move |tx| Box::pin(async move { st::list_hook_deliveries(tx, &hook, now, limit).await }))
            .await
    }

    async fn hook_delivery_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<HookDeliveryStats>> {
        self.run(Access::Read, move |tx| Box::pin(async move { st::hook_delivery_stats(tx, now).await })).await
    }

    async fn latest_schedule_firings(&self) -> StoreResult<Vec<ScheduleFiringRecord>> {
        self.run(Access::Read, |tx| Box::pin(async move { st::latest_schedule_firings(tx).await })).await
    }

    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (source, delivery_id) = (source.to_string(), delivery_id.to_string());
        self.run(Access::WriteOne, move |tx| {
            Box::pin(async move { st::record_delivery(tx, &source, &delivery_id, now, expires_at).await })
        })
        .await
    }

    async fn save_cursor(&self, name: &str, value: i64) -> StoreResult<()> {
        let name = name.to_string();
        self.run(Access::WriteOne, move |tx| Box::pin(async move { st::save_cursor(tx, &name, value).await })).await
    }

    async fn load_cursor(&self, name: &str) -> StoreResult<Option<i64>> {
        let name = name.to_string();
        self.run(Access::Read, move |tx| Box::pin(async move { st::load_cursor(tx, &name).await })).await
    }

    async fn chain_link(&self, trigger_id: &str) -> StoreResult<Option<ChainLink>> {
        let trigger_id = trigger_id.to_string();
        self.run(Access::Read, move |tx| Box::pin(async move { st::get_chain_link(tx, &trigger_id).await })).await
    }

    async fn trigger_tree(&self, trigger_id: &str) -> StoreResult<TriggerTree> {
        let trigger_id = trigger_id.to_string();
        self.run(Access::Snapshot, move |tx| Box::pin(async move { ops::trigger_tree(tx, &trigger_id).await })).await
    }

    async fn record_join_arrival(&self, arrival: JoinArrival) -> StoreResult<ChainJoinRecord> {
        self.run(Access::Write, move |tx| Box::pin(async move { ops::record_join_arrival(tx, &arrival).await })).await
    }

    async fn open_joins(&self) -> StoreResult<Vec<ChainJoinRecord>> {
        self.run(Access::Read, |tx| Box::pin(async move { st::open_joins(tx).await })).await
    }

    async fn expire_join(
        &self,
        chain: &str,
        join_key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ChainJoinRecord>> {
        let (chain, join_key) = (chain.to_string(), join_key.to_string());
        self.run(Access::Write, move |tx| Box::pin(async move { ops::expire_join(tx, &chain, &join_key, now).await }))
            .await
    }

    async fn start_cursor(&self, name: &str) -> StoreResult<i64> {
        let name = name.to_string();
        self.run(Access::Write, move |tx| Box::pin(async move { st::start_cursor(tx, &name).await })).await
    }

    async fn enqueue_outbox(&self, cursor: &str, up_to: i64, rows: Vec<NewOutboxRow>) -> StoreResult<u64> {
        let cursor = cursor.to_string();
        self.run(Access::Write, move |tx| {
            Box::pin(async move {
                let mut inserted = 0;
                for row in &rows {
                    inserted += u64::from(st::insert_outbox(tx, row).await?);
                }
                st::advance_cursor(tx, &cursor, up_to).await?;
                Ok(inserted)
            })
        })
        .await
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let (limit, owner, now, lease_until) =
            (ops::check_limit(limit)?, owner.to_string(), trunc(now), trunc(lease_until));
        self.run(Access::WriteOne, move |tx| {
            Box::pin(async move { st::claim_outbox(tx, &owner, now, lease_until, limit).await })
        })
        .await
    }

    async fn record_outbox(
        &self,
        id: i64,
        owner: &str,
        outcome: OutboxOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<OutboxRecord> {
        let (owner, now) = (owner.to_string(), trunc(now));
        self.run(Access::Write, move |tx| {
            Box::pin(async move { st::record_outbox(tx, id, &owner, &outcome, now).await })
        })
        .await
    }

    async fn get_outbox(&self, id: i64) -> StoreResult<OutboxRecord> {
        self.run(Access::Read, move |tx| Box::pin(async move { st::get_outbox(tx, id).await })).await
    }

    async fn list_outbox(&self, filter: &OutboxFilter, cursor: Option<&str>) -> StoreResult<OutboxPage> {
        let limit = ops::check_limit(filter.limit)?;
        let before = cursor
            .map(|c| {
                c.parse::<i64>().ok().filter(|id| *id > 0).ok_or(StoreError::Invalid {
                    field: "cursor",
                    message: "not a cursor returned by a previous page".into(),
                })
            })
            .transpose()?;
        let stmt = query::list_outbox(filter, before, limit + 1);
        let mut rows: Vec<OutboxRecord> = self
            .run(Access::Read, move |tx| {
                Box::pin(async move { tx.fetch(stmt).await?.iter().map(|r| outbox_from_row(&**r)).collect() })
            })
            .await?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(OutboxPage { rows, next_cursor })
    }

    async fn redeliver_outbox(&self, id: i64, now: DateTime<Utc>) -> StoreResult<OutboxRecord> {
        let now = trunc(now);
        self.run(Access::Write, move |tx| Box::pin(async move { st::redeliver_outbox(tx, id, now).await })).await
    }

    async fn count_outbox(&self, status: OutboxStatus) -> StoreResult<u64> {
        self.run(Access::Read, move |tx| {
            Box::pin(async move { Ok(tx.fetch_one(query::count_outbox(status)).await?.int("n")? as u64) })
        })
        .await
    }
}

/// Take up to `limit` runs `what` finds due, in one statement.
async fn claim(
    driver: &impl Driver,
    what: &'static Claim,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<RunRecord>> {
    let (limit, owner) = (ops::check_limit(limit)?, owner.to_string());
    driver
        .run(Access::WriteOne, move |tx| {
            Box::pin(async move { st::claim(tx, what, &owner, now, lease_until, limit).await })
        })
        .await
}

/// The plan of `hot` on `driver`'s database, one line per step.
#[cfg(any(test, feature = "testing"))]
pub(crate) async fn explain(driver: &impl Driver, hot: &HotQuery) -> StoreResult<Vec<String>> {
    let hot = hot.clone();
    driver
        .run(Access::Read, move |tx| {
            Box::pin(async move {
                let mut stmt = query::hot_query(tx, &hot)?;
                let (prefix, column) = match tx.backend() {
                    Backend::Sqlite => ("EXPLAIN QUERY PLAN ", "detail"),
                    Backend::Postgres => ("EXPLAIN ", "QUERY PLAN"),
                };
                stmt.sql.insert_str(0, prefix);
                tx.fetch(stmt).await?.iter().map(|r| r.text(column)).collect()
            })
        })
        .await
}
