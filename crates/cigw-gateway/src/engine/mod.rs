//! The engine: the dispatcher that sends pending runs to their providers and the tracker that
//! follows dispatched runs to their end (DESIGN.md §3). The API only writes intent to the
//! store; the engine does the provider work, under leases so that several replicas (and a
//! restarted process) never work on one run at once.

mod dispatch;
mod matching;
mod schedule;
mod track;

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::sync::watch;
use tracing::Instrument;

use crate::state::AppState;

/// Runs claimed for dispatch in one pass.
const DISPATCH_BATCH: u32 = 32;
/// Runs claimed for polling in one pass.
const POLL_BATCH: u32 = 64;

/// Event kinds the engine appends.
pub mod event_kind {
    /// An ambiguous dispatch was resolved by adopting a provider build.
    pub const RECONCILED: &str = "reconciled";
    /// The cancel was sent to the provider.
    pub const CANCEL_SENT: &str = "cancel_sent";
    /// The run exceeded its target's maximum duration.
    pub const TIMED_OUT: &str = "timed_out";
}

/// The dispatcher and tracker of one process.
#[derive(Debug, Clone)]
pub struct Engine {
    state: AppState,
    owner: String,
}

impl Engine {
    /// An engine over `state`, holding leases under a name unique to this process.
    pub fn new(state: AppState) -> Self {
        let owner = format!("cigw-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self { state, owner }
    }

    /// The lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Dispatch and poll until `shutdown` turns true; then finish the pass under way and
    /// release this process's leases so another replica (or the next start) picks the runs up.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wakeups = self.state.store.wakeups();
        let timings = &self.state.settings.timings;
        let idle = timings.sweep_interval.min(timings.poll_initial).max(Duration::from_millis(10));
        let mut next_prune = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            if tokio::time::Instant::now() >= next_prune {
                self.prune().await;
                next_prune = tokio::time::Instant::now() + timings.prune_interval.max(Duration::from_secs(1));
            }
            let handled = self.tick().await;
            if handled > 0 {
                continue;
            }
            tokio::select! {
                _ = self.state.wake.notified() => {}
                _ = wakeups.next() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.changed() => {}
            }
        }
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

    /// One pass: claim what is due and handle it. Returns how many runs were handled.
    pub async fn tick(&self) -> usize {
        let now = self.state.now();
        let lease_until = now + chrono::Duration::from_std(self.state.settings.timings.lease).unwrap_or_default();
        let store = &self.state.store;
        let (to_dispatch, to_poll) = tokio::join!(
            store.claim_dispatch(&self.owner, now, lease_until, DISPATCH_BATCH),
            store.claim_poll(&self.owner, now, lease_until, POLL_BATCH),
        );
        let to_dispatch = to_dispatch.unwrap_or_else(|e| {
            tracing::error!(error = %e, "claiming runs to dispatch failed");
            Vec::new()
        });
        let to_poll = to_poll.unwrap_or_else(|e| {
            tracing::error!(error = %e, "claiming runs to poll failed");
            Vec::new()
        });
        let handled = to_dispatch.len() + to_poll.len();
        tokio::join!(
            join_all(to_dispatch.into_iter().map(|run| {
                let attempt = run.dispatch_attempts;
                let span = tracing::info_span!("dispatch", run_id = %run.id, target = %run.target, attempt);
                self.dispatch(run).instrument(span)
            })),
            join_all(to_poll.into_iter().map(|run| {
                let attempt = run.provider_ref.as_ref().map(|r| r.attempt);
                let span = tracing::info_span!("track", run_id = %run.id, target = %run.target, attempt);
                self.track(run).instrument(span)
            })),
        );
        if handled > 0 {
            // Every handled run appended events (or tried to): wake the event streams.
            self.state.notify_events();
        }
        handled
    }
}
