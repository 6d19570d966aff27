//! The engine: the dispatcher that sends pending runs to their providers and the tracker that
//! follows dispatched runs to their end (DESIGN.md §3). The API only writes intent to the
//! store; the engine does the provider work, under leases so that several replicas (and a
//! restarted process) never work on one run at once.

mod dispatch;
mod lease;
mod locks;
mod matching;
mod schedule;
mod track;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::retry::within_budget;
use cigw_store::RunRecord;
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::state::AppState;

/// Runs claimed for dispatch in one pass.
const DISPATCH_BATCH: u32 = 32;
/// Runs claimed for polling in one pass.
const POLL_BATCH: u32 = 64;
/// The first prune after start, unless `timings.prune_interval` is shorter.
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(30);
/// Runs one process handles at once.
const MAX_IN_FLIGHT: usize = 128;

/// The dispatcher and tracker of one process.
#[derive(Debug, Clone)]
pub struct Engine {
    state: AppState,
    owner: String,
    locks: Arc<locks::TargetLocks>,
}

impl Engine {
    /// An engine over `state`, holding leases under a name unique to this process.
    pub fn new(state: AppState) -> Self {
        let owner = format!("cigw-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self { state, owner, locks: Arc::default() }
    }

    /// The lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Dispatch and poll until `shutdown` turns true; then wait for the provider calls under way
    /// and release this process's leases so another replica (or the next start) picks the runs up.
    ///
    /// Each claimed run is handled in its own task, so one slow provider call never holds up the
    /// others; at most `MAX_IN_FLIGHT` runs are handled at once. Meanwhile the age of the
    /// dispatch backlog is measured for intake's pacing (`pacing.rs`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wakeups = self.state.store.wakeups();
        let timings = &self.state.settings.timings;
        let idle = timings.sweep_interval.min(timings.poll_initial).max(Duration::from_millis(10));
        // Not at once: start-up (and the first `/readyz`) never waits behind a prune.
        let mut next_prune = tokio::time::Instant::now() + timings.prune_interval.min(FIRST_PRUNE_AFTER);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let measuring = tokio::spawn(crate::pacing::measure(self.state.clone(), shutdown.clone()));
        while !*shutdown.borrow() {
            if tokio::time::Instant::now() >= next_prune {
                self.prune().await;
                next_prune = tokio::time::Instant::now() + timings.prune_interval.max(Duration::from_secs(1));
            }
            while in_flight.try_join_next().is_some() {}
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len()) as u32;
            let (to_dispatch, to_poll) = self.claim(room.min(DISPATCH_BATCH), room.min(POLL_BATCH)).await;
            let claimed = to_dispatch.len() + to_poll.len();
            for run in to_dispatch {
                let engine = self.clone();
                in_flight.spawn(async move { engine.dispatch_traced(run).await });
            }
            for run in to_poll {
                let engine = self.clone();
                in_flight.spawn(async move { engine.track_traced(run).await });
            }
            if claimed > 0 {
                continue;
            }
            tokio::select! {
                _ = self.state.wake.notified() => {}
                _ = wakeups.next() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.changed() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
        // Nothing to wait for: a measurement changes nothing but the age intake goes by.
        measuring.abort();
        match self.state.store.release_leases(&self.owner).await {
            Ok(n) => tracing::info!(released = n, "engine stopped; leases released"),
            Err(e) => tracing::warn!(error = %e, "engine stopped; releasing leases failed"),
        }
    }

    /// Remove what the retention settings no longer keep. Replicas may prune at the same time:
    /// deleting what is already gone changes nothing.
    pub async fn prune(&self) {
        match self.state.store.prune(self.state.now(), &self.state.settings.retention).await {
            Ok(report) => tracing::info!(
                runs = report.runs,
                events = report.events,
                triggers = report.triggers,
                idempotency_keys = report.idempotency_keys,
                deliveries = report.deliveries,
                outbox = report.outbox,
                "retention pruning done"
            ),
            Err(e) => tracing::warn!(error = %e, "retention pruning failed; will try again"),
        }
    }

    /// One pass: claim what is due and handle all of it before returning (tests drive the
    /// engine with this). Returns how many runs were handled.
    pub async fn tick(&self) -> usize {
        let (to_dispatch, to_poll) = self.claim(DISPATCH_BATCH, POLL_BATCH).await;
        let handled = to_dispatch.len() + to_poll.len();
        tokio::join!(
            join_all(to_dispatch.into_iter().map(|run| self.dispatch_traced(run))),
            join_all(to_poll.into_iter().map(|run| self.track_traced(run))),
        );
        handled
    }

    /// Run `work` on a claimed run while renewing the run's lease every third of the lease, so
    /// a slow provider call (a long request timeout, a retry) keeps the run instead of letting
    /// another claimer take it mid-call. When the lease cannot be confirmed (another claimer has
    /// the run, or the store has not confirmed a renewal by the time the lease may end) the work
    /// is dropped then, before anything more is sent: another claimer may take the run from that
    /// moment and reconciles the attempt. `false` then.
    async fn under_lease(
        &self,
        run_id: &str,
        lease_until: Option<DateTime<Utc>>,
        work: impl Future<Output = ()>,
    ) -> bool {
        let lease = self.state.settings.timings.lease;
        let left = lease_until.map_or(lease, |until| (until - self.state.now()).to_std().unwrap_or_default());
        let renew = lease::hold(left, lease, || {
            let now = self.state.now();
            self.state.store.renew_lease(run_id, &self.owner, now, now + cigw_core::time::span(lease))
        });
        let mut work = std::pin::pin!(work);
        tokio::select! {
            // The lease first: work must not take another step once the lease may have ended.
            biased;
            why = renew => {
                // The store also says "not yours" when the work's own last write just ended the
                // run or released its lease. Unlike a lease that ran out, a lost one lets nothing
                // more be sent (a send needs its mark, which needs the lease), so the work may
                // take one more step: if that ends it, it was done.
                if why == lease::LOST && work.as_mut().now_or_never().is_some() {
                    return true;
                }
                tracing::warn!(run_id, why, "work on a run was abandoned");
                false
            }
            () = work.as_mut() => true,
        }
    }

    /// Until when provider calls on a claimed run may wait (for a rate limit, a backoff): a
    /// quarter of the lease. A longer wait is not made: the call fails as rate limited and the
    /// run is scheduled again, so a run is never held (and its lease renewed) just to wait.
    fn wait_budget_end(&self) -> std::time::Instant {
        std::time::Instant::now() + self.state.settings.timings.lease.mul_f64(0.25)
    }

    /// Claim runs due for dispatch and for a poll.
    async fn claim(&self, dispatch_limit: u32, poll_limit: u32) -> (Vec<RunRecord>, Vec<RunRecord>) {
        let now = self.state.now();
        let lease_until = now + cigw_core::time::span(self.state.settings.timings.lease);
        let store = &self.state.store;
        let claim_dispatch = async {
            if dispatch_limit == 0 {
                return Ok(Vec::new());
            }
            store.claim_dispatch(&self.owner, now, lease_until, dispatch_limit).await
        };
        let claim_poll = async {
            if poll_limit == 0 {
                return Ok(Vec::new());
            }
            store.claim_poll(&self.owner, now, lease_until, poll_limit).await
        };
        let (to_dispatch, to_poll) = tokio::join!(claim_dispatch, claim_poll);
        let to_dispatch = to_dispatch.unwrap_or_else(|e| {
            tracing::error!(error = %e, "claiming runs to dispatch failed");
            Vec::new()
        });
        let to_poll = to_poll.unwrap_or_else(|e| {
            tracing::error!(error = %e, "claiming runs to poll failed");
            Vec::new()
        });
        (to_dispatch, to_poll)
    }

    async fn dispatch_traced(&self, run: RunRecord) {
        let span =
            tracing::info_span!("dispatch", run_id = %run.id, target = %run.target, attempt = run.dispatch_attempts);
        let (run_id, lease_until) = (run.id.clone(), run.lease_until);
        let work = within_budget(self.wait_budget_end(), self.dispatch(run).instrument(span));
        if !self.under_lease(&run_id, lease_until, work).await {
            tracing::warn!(run_id, "dispatch lost its lease and was abandoned; the next claim reconciles it");
        }
        // The run's events changed (or an attempt was made): wake the event streams.
        self.state.notify_events();
    }

    async fn track_traced(&self, run: RunRecord) {
        let attempt = run.provider_ref.as_ref().map(|r| r.attempt);
        let span = tracing::info_span!("track", run_id = %run.id, target = %run.target, attempt);
        let (run_id, lease_until) = (run.id.clone(), run.lease_until);
        let work = within_budget(self.wait_budget_end(), self.track(run).instrument(span));
        if !self.under_lease(&run_id, lease_until, work).await {
            tracing::warn!(run_id, "a poll lost its lease and was abandoned; the run is polled again");
        }
        self.state.notify_events();
    }
}
