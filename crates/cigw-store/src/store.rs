//! The `Store` trait: everything the gateway persists, backend-neutral.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::config::RetentionSettings;
use cigw_core::shared_budget::SharedBudget;
use cigw_core::{ProviderRunRef, RunState, RunStatus};
use futures::stream::BoxStream;

use crate::error::StoreResult;
use crate::model::*;

/// The gateway's persistence. Object-safe; held as `Arc<dyn Store>`.
///
/// Times are passed in by the caller (the gateway's clock), so tests can drive them. Every
/// method that changes a run's state goes through [`RunState::apply`] and writes the change and
/// its event in one transaction. Leases: a run is free when it has no lease owner or its lease
/// ended at or before `now`; operations that take an `owner` fail with
/// [`crate::StoreError::Conflict`] and change nothing when that owner no longer holds the run.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    // ---- operations ----

    /// Backend and URL with any password redacted, for logs and `/readyz`.
    fn describe(&self) -> String;

    /// Apply the pending migrations of this backend (`cigw migrate`; the gateway at start).
    async fn migrate(&self) -> StoreResult<()>;

    /// A cheap round trip (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Wake-ups for the dispatcher and tracker: the first item arrives once listening has
    /// started (sweep then), later ones after new runs, a `poll_now` or a cancel request were
    /// committed, by any replica on PostgreSQL (LISTEN/NOTIFY), by this process on SQLite. Items
    /// may be coalesced or spurious; keep a periodic sweep as well.
    fn wakeups(&self) -> BoxStream<'static, ()>;

    /// Changes to tokens and web sessions that caches of them must follow at once: created or
    /// revoked tokens and ended sessions, by any replica on PostgreSQL (LISTEN/NOTIFY, sent in
    /// the transaction that made the change), by this process on SQLite. The first item is
    /// [`AuthChange::All`] once listening has started, and again after a lost connection
    /// (changes may have been missed meanwhile).
    fn auth_changes(&self) -> BoxStream<'static, AuthChange>;

    /// The provider request budgets every replica shares (PostgreSQL); `None` on SQLite, whose
    /// single process keeps a limiter per account.
    fn shared_budget(&self) -> Option<std::sync::Arc<dyn SharedBudget>>;

    /// Remove what the retention settings no longer keep.
    async fn prune(&self, now: DateTime<Utc>, retention: &RetentionSettings) -> StoreResult<PruneReport>;

    /// Release every run and outbox lease held by `owner` (graceful shutdown); returns how many.
    async fn release_leases(&self, owner: &str) -> StoreResult<u64>;

    /// Mark, just before a trigger is sent, that `owner` is sending it (a write-ahead mark that
    /// [`Store::record_dispatch`] clears). A later claim that finds the mark knows the send may
    /// have reached the provider; one that finds none knows nothing was sent. `Conflict` when
    /// `owner` no longer holds the run: then nothing may be sent.
    async fn mark_sending(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Extend `owner`'s lease on a run to `until` while it works on it; `false` when the lease
    /// is no longer held (it ended at or before `now`, or another claimer has the run): the
    /// caller must stop working on the run.
    async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // ---- intake ----

    /// Store a trigger, its runs (pending), the idempotency key and a `created` event per run
    /// in one transaction. See [`CreateOutcome`] for repeats of a key or a chain firing.
    async fn create_trigger(&self, trigger: NewTrigger) -> StoreResult<CreateOutcome>;

    /// Add a rerun to an existing trigger: a new pending run (its `rerun_of` must be set), its
    /// `created` event and a `rerun` event on the original run.
    async fn create_rerun(&self, trigger_id: &str, run: NewRun, now: DateTime<Utc>) -> StoreResult<RunRecord>;

    // ---- dispatch ----

    /// Claim up to `limit` runs due for dispatch (`next_dispatch_at <= now`, lease free),
    /// oldest due first, skipping runs other claimers hold. Each claimed run gets the lease and
    /// its `dispatch_attempts` incremented in the same statement. A run that still names a lease
    /// owner was claimed before without an outcome being recorded (a crash, or work abandoned at
    /// the end of its lease): that attempt counts as one more possibly-sent send
    /// (`maybe_sent_count`, `last_maybe_sent_at` = its lease end). A run with
    /// `maybe_sent_count > 0` must be reconciled before anything is sent again. A claimed
    /// run can be `canceling` (its cancel arrived while an earlier dispatch attempt was in
    /// flight): reconcile it, then `set_state(canceled)` if nothing was sent, or record the build.
    async fn claim_dispatch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>>;

    /// Record what a dispatch attempt produced, with a `dispatched` (or `dispatch_retry`) event,
    /// and release the lease. `Started` enforces the unique provider build like [`Store::adopt`].
    async fn record_dispatch(
        &self,
        run_id: &str,
        owner: &str,
        outcome: DispatchOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate>;

    /// Supersede a run `owner` claimed for dispatch: when a newer run of its target and branch
    /// (or tag) exists, not a rerun and not canceled, the claimed run ends `skipped` with a
    /// `superseded` event and a message linking the newest such run, and the lease ends. A run
    /// that may have reached its provider, or is the newest, is left alone (`None`).
    async fn supersede(&self, run_id: &str, owner: &str, now: DateTime<Utc>) -> StoreResult<Option<RunUpdate>>;

    // ---- tracking ----

    /// Give the run the provider build `run_ref`, clear `unconfirmed`, and make it due for a poll
    /// at `now` (a pending run becomes queued). At most one run owns a (target, provider id,
    /// attempt): the loser gets `Conflict`. Adopting the run's own ref again is a no-op.
    async fn adopt(&self, run_id: &str, run_ref: ProviderRunRef, now: DateTime<Utc>) -> StoreResult<RunUpdate>;

    /// The run owning a provider build, if any.
    async fn provider_ref_owner(&self, target: &str, provider_id: &str, attempt: u32) -> StoreResult<Option<String>>;

    /// Claim up to `limit` dispatched, non-terminal runs (with a provider ref, or unconfirmed)
    /// due for a poll (`next_poll_at <= now`, lease free).
    async fn claim_poll(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>>;

    /// Apply one observation: only forward moves (the core state machine) and never an
    /// observation older than the stored one. A move writes a `state_changed` event with the
    /// status. Always stores `next_poll_at` (`None` stops tracking) and releases the lease.
    async fn apply_status(
        &self,
        run_id: &str,
        owner: &str,
        status: &RunStatus,
        next_poll_at: Option<DateTime<Utc>>,
    ) -> StoreResult<RunUpdate>;

    /// Make a tracked run due for a poll at `now` (callback, refresh) and wake the tracker.
    async fn poll_now(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Make a tracked run due for a read soon, coalescing repeated requests (refresh): at `now`
    /// when no request came in the `min_gap` before; during a burst of requests `min_gap` after
    /// the tracker last read it; never later than it already was. Wakes the tracker. Returns
    /// when the read is due, `None` when the run is not tracked (not dispatched yet, or finished).
    async fn poll_soon(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
        min_gap: std::time::Duration,
    ) -> StoreResult<Option<DateTime<Utc>>>;

    /// Up to `limit` unfinished runs of `target` accepted without an id and not yet matched with
    /// a provider build, oldest send first (so one provider list serves them all, in order).
    async fn unconfirmed_runs(&self, target: &str, limit: u32) -> StoreResult<Vec<RunRecord>>;

    // ---- cancel / gateway-decided ends ----

    /// A pending run that no dispatcher holds and that never may have reached its provider
    /// (`maybe_sent_count == 0`) becomes `canceled` at once; any other
    /// non-terminal run becomes `canceling` with `cancel_requested` set (the gateway cancels at
    /// the provider once the build is known); a `cancel_requested` event either way. A terminal
    /// run is a `Conflict`; a run already canceling is unchanged.
    async fn request_cancel(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<RunUpdate>;

    /// Move a run to `state` for a reason the gateway decided (timed out, target removed,
    /// accepted but never appeared), through the state machine, with an event of `kind`.
    /// A terminal state ends tracking and dispatch and releases the lease. A move the machine
    /// refuses changes nothing (`moved_from` is `None`).
    async fn set_state(
        &self,
        run_id: &str,
        state: RunState,
        message: Option<String>,
        kind: EventKind,
        now: DateTime<Utc>,
    ) -> StoreResult<RunUpdate>;

    // ---- events ----

    /// Append an event to a run's log.
    async fn append_event(&self, event: NewEvent) -> StoreResult<EventRecord>;

    /// Up to `limit` events with `id > after_id` matching `filter`, in id order.
    async fn events_after(&self, after_id: i64, filter: &EventFilter, limit: u32) -> StoreResult<Vec<EventRecord>>;

    /// The highest event id (0 when there is none): where a new live tail starts.
    async fn last_event_id(&self) -> StoreResult<i64>;

    // ---- reads ----

    /// One run.
    async fn get_run(&self, run_id: &str) -> StoreResult<RunRecord>;

    /// One trigger with its runs.
    async fn get_trigger(&self, trigger_id: &str) -> StoreResult<TriggerRecord>;

    /// Runs matching `filter`, newest first; `cursor` is a `next_cursor` from a previous page.
    async fn list_runs(&self, filter: &RunFilter, cursor: Option<&str>) -> StoreResult<RunPage>;

    /// How many runs are in each state (states with none are left out), for metrics gauges.
    /// Reads no more than the unfinished runs' index entries and one counter row per terminal
    /// state: cheap enough for every scrape, whatever the retention.
    async fn count_runs_by_state(&self) -> StoreResult<Vec<(RunState, u64)>>;

    /// When the oldest run that is due for dispatch and held by no claimer became due: how far
    /// the dispatchers of every replica are behind (`None` when nothing waits). Reads the due
    /// runs' index from its oldest entry, past the runs being dispatched right now.
    async fn oldest_due_dispatch(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// How many unfinished runs were accepted without a provider id and are not yet matched
    /// with a build (from the unfinished runs' index alone).
    async fn count_unconfirmed_runs(&self) -> StoreResult<u64>;

    // ---- tokens ----

    /// Store a token; a live token with the same name is a `Conflict`.
    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord>;

    /// The live (not revoked) token with this hash; expiry is the caller's check.
    async fn find_token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;

    /// Live tokens, by name.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revoke a live token by id (kept for the record, never found again).
    async fn revoke_token(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Record a successful use.
    async fn touch_token(&self, token_id: &str, at: DateTime<Utc>) -> StoreResult<()>;

    // ---- web UI sessions ----

    /// Store a session (only its hash), deleting the sessions expired at its `created_at`.
    async fn create_session(&self, session: NewSession) -> StoreResult<SessionRecord>;

    /// The session with this hash, unless it has expired at `now` or was deleted.
    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<SessionRecord>>;

    /// Delete a session (sign-out); deleting a missing one succeeds.
    async fn delete_session(&self, hash: &str) -> StoreResult<()>;

    // ---- hooks, callbacks, chains ----

    /// Remember a hook or callback delivery id until `expires_at`; `true` the first time
    /// (a remembered id past its expiry counts as new).
    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Remember a verified hook delivery that started no trigger (one that did is stored by
    /// [`Store::create_trigger`] with its trigger). When the same (hook, delivery id) already
    /// started a trigger and is still remembered, nothing is written and that record is
    /// returned; any other earlier record of it is replaced. Headers and bodies are kept for the
    /// hook's newest `keep` deliveries only.
    async fn record_hook_delivery(&self, delivery: NewHookDelivery) -> StoreResult<Option<HookDeliveryRecord>>;

    /// A remembered delivery with its headers and body (while kept); expired ones are not found.
    async fn get_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<HookDeliveryRecord>>;

    /// The newest `limit` remembered deliveries of a hook, without headers and bodies.
    async fn list_hook_deliveries(
        &self,
        hook: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<HookDeliveryRecord>>;

    /// Per hook with remembered deliveries: how many, how many triggered, the latest arrival.
    async fn hook_delivery_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<HookDeliveryStats>>;

    /// The latest fired slot of every schedule that ever fired, by schedule name.
    async fn latest_schedule_firings(&self) -> StoreResult<Vec<ScheduleFiringRecord>>;

    /// Store a named cursor.
    async fn save_cursor(&self, name: &str, value: i64) -> StoreResult<()>;

    /// The chain link of a trigger a chain fired (`None` for a root trigger).
    async fn chain_link(&self, trigger_id: &str) -> StoreResult<Option<ChainLink>>;

    /// The tree of triggers the trigger `trigger_id` belongs to: its root and every trigger
    /// chains fired from it, with their runs. `NotFound` for an unknown trigger.
    async fn trigger_tree(&self, trigger_id: &str) -> StoreResult<TriggerTree>;

    /// Report an upstream run's end to a fan-in join, in one transaction (see
    /// [`JoinArrival`]); returns the join as it now stands. Two arrivals for one join take turns.
    async fn record_join_arrival(&self, arrival: JoinArrival) -> StoreResult<ChainJoinRecord>;

    /// The open joins, soonest expiry first.
    async fn open_joins(&self) -> StoreResult<Vec<ChainJoinRecord>>;

    /// Expire a join still open past its expiry at `now`, appending a `join_expired` event to
    /// each member run in the same transaction; `None` when it is not (any more) due.
    async fn expire_join(
        &self,
        chain: &str,
        join_key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ChainJoinRecord>>;
    /// The value of a named cursor, if it was ever saved.
    async fn load_cursor(&self, name: &str) -> StoreResult<Option<i64>>;

    /// A named cursor for a consumer of run events: its saved value, or, the first time, the
    /// newest event id (saved, so every later event is consumed). Replicas starting together
    /// agree on one value.
    async fn start_cursor(&self, name: &str) -> StoreResult<i64>;

    // ---- notification outbox ----

    /// Insert `rows` (a row whose (notification, event id) is stored already is skipped) and move
    /// the cursor `cursor` forward to `up_to`, in one transaction: an event is either consumed
    /// with its rows or not at all. Returns how many rows were new.
    async fn enqueue_outbox(&self, cursor: &str, up_to: i64, rows: Vec<NewOutboxRow>) -> StoreResult<u64>;

    /// Claim up to `limit` pending rows due at `now` with a free lease, leasing them to `owner`
    /// until `lease_until` and counting an attempt. A row is left out while an earlier event of
    /// its run is still pending for the same notification, so each run's events are delivered
    /// (or dead-lettered) in order. On PostgreSQL rows other claimers hold are skipped.
    async fn claim_outbox(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>>;

    /// Record what an attempt came to and release the lease; `Conflict` when `owner` no longer
    /// holds the row (then nothing changes).
    async fn record_outbox(
        &self,
        id: i64,
        owner: &str,
        outcome: OutboxOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<OutboxRecord>;

    /// One outbox row.
    async fn get_outbox(&self, id: i64) -> StoreResult<OutboxRecord>;

    /// Outbox rows matching `filter`, newest first; `cursor` is a `next_cursor` from a previous page.
    async fn list_outbox(&self, filter: &OutboxFilter, cursor: Option<&str>) -> StoreResult<OutboxPage>;

    /// Send a delivered or dead-lettered row again: pending, due at `now`, attempts counted
    /// afresh. A pending row is a `Conflict`.
    async fn redeliver_outbox(&self, id: i64, now: DateTime<Utc>) -> StoreResult<OutboxRecord>;

    /// How many rows are in `status` (pending: the outbox depth).
    async fn count_outbox(&self, status: OutboxStatus) -> StoreResult<u64>;
}
