//! Following dispatched runs: polling status on an adaptive schedule, correlating runs
//! accepted without an id, sending requested cancels, and ending runs that outlive their
//! target's maximum duration. Runs of a target removed from the configuration are followed
//! through their account's follow-only target while the account exists, else end in `error`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cigw_core::{CiTarget, ProviderRunRef, RecentQuery, RunState, RunStatus};
use cigw_store::{EventFilter, EventKind, NewEvent, RunRecord, StoreError};
use serde_json::json;

use super::Engine;
use super::matching::{CLOCK_SKEW, Waiting, assign};
use super::schedule::Pace;
use crate::instrumented::InstrumentedTarget;

/// Most unconfirmed runs of one target one correlation pass matches.
const MAX_UNCONFIRMED_PER_PASS: u32 = 500;

impl Engine {
    /// Handle one run claimed for polling.
    pub(super) async fn track(&self, run: RunRecord) {
        let run_id = run.id.clone();
        if let Err(e) = self.track_inner(run).await {
            match e {
                StoreError::Conflict { .. } => tracing::info!(run_id, error = %e, "tracking lost its lease"),
                e => tracing::error!(run_id, error = %e, "recording a poll failed"),
            }
        }
    }

    async fn track_inner(&self, run: RunRecord) -> Result<(), StoreError> {
        let now = self.state.now();
        let (target, max_duration) = match self.state.target(&run.target) {
            Some(configured) => (configured.target.clone(), configured.spec.max_duration),
            None => match self.follower(&run) {
                Ok(follower) => (follower, None),
                Err(message) => {
                    self.state.store.set_state(&run.id, RunState::Error, Some(message), EventKind::Error, now).await?;
                    return Ok(());
                }
            },
        };
        if run.unconfirmed {
            return self.correlate(&run, target.as_ref(), now).await;
        }
        let Some(run_ref) = run.provider_ref.clone() else {
            // Claimed without a build to look at: nothing to poll; stop tracking it.
            return self.reschedule(&run, None).await.map(drop);
        };
        if run.state == RunState::Canceling && run.cancel_requested && !self.cancel_sent(&run).await? {
            self.send_cancel(&run, target.as_ref(), &run_ref, now).await?;
        }
        if let Some(max) = max_duration {
            let limit = run.queued_at.unwrap_or(run.created_at) + cigw_core::time::span(max);
            if now > limit && !run.state.is_terminal() {
                if let Err(e) = target.cancel(&run_ref).await {
                    tracing::warn!(run_id = run.id, error = %e, "canceling a timed-out run failed");
                }
                let message = format!("timed out after {}", humanize(max));
                self.state.store.set_state(&run.id, RunState::Error, Some(message), EventKind::TimedOut, now).await?;
                return Ok(());
            }
        }
        let after = match target.status(&run_ref).await {
            Ok(status) => {
                let next = (!status.state.is_terminal()).then(|| self.next_poll_for(&run, now));
                let update = self.state.store.apply_status(&run.id, &self.owner, &status, next).await?;
                // The run's end at INFO; the steps on the way (also in its events) at DEBUG.
                match update.moved_from {
                    Some(from) if update.run.state.is_terminal() => {
                        tracing::info!(from = %from, to = %update.run.state, "run ended");
                    }
                    Some(from) => tracing::debug!(from = %from, to = %update.run.state, "run state changed"),
                    None => {}
                }
                update.run
            }
            Err(e) => {
                tracing::warn!(run_id = run.id, error = %e, "status poll failed; will try again");
                self.reschedule(&run, Some(self.next_poll_for(&run, now))).await?
            }
        };
        self.read_again_if_asked_meanwhile(&run, &after).await
    }

    /// A read asked for while this one was under way (a callback, a refresh) was overwritten by
    /// this read's schedule, and this read's answer may predate what made the asker ask (the
    /// provider answered before the workflow ended, its callback came while the answer was on
    /// its way): ask again, coalesced like any refresh (`poll_initial` after this read).
    async fn read_again_if_asked_meanwhile(&self, claimed: &RunRecord, after: &RunRecord) -> Result<(), StoreError> {
        let asked_meanwhile =
            after.last_refresh_at.is_some_and(|asked| claimed.last_polled_at.is_none_or(|read| asked >= read));
        if asked_meanwhile && !after.state.is_terminal() {
            let timings = &self.state.settings.timings;
            self.state.store.poll_soon(&after.id, self.state.now(), timings.poll_initial).await?;
        }
        Ok(())
    }

    /// Match a run accepted without an id with a provider build, or give up at its deadline.
    ///
    /// One pass serves every unconfirmed run of the target: one provider list, matched one to
    /// one in the order the triggers were sent ([`assign`]). Passes of a target run one at a
    /// time and at most about twice per `poll_initial`; a run whose pass just happened waits for
    /// the next one.
    async fn correlate(&self, run: &RunRecord, target: &dyn CiTarget, now: DateTime<Utc>) -> Result<(), StoreError> {
        let step = self.state.settings.timings.poll_initial;
        {
            let lock = self.locks.correlate_lock(&run.target);
            let mut last_pass = lock.lock().await;
            let fresh = self.state.store.get_run(&run.id).await?;
            if fresh.state.is_terminal() {
                return Ok(());
            }
            if !fresh.unconfirmed {
                return self.release(run).await;
            }
            if last_pass.is_none_or(|t| t.elapsed() >= step / 2) {
                *last_pass = Some(tokio::time::Instant::now());
                self.correlation_pass(&run.target, target, now).await?;
            }
        }
        let fresh = self.state.store.get_run(&run.id).await?;
        if !fresh.unconfirmed {
            return self.release(run).await;
        }
        if fresh.confirm_deadline.is_some_and(|d| now >= d) {
            let sent_at = fresh.sent_at.unwrap_or(fresh.created_at);
            let waited = humanize((now - sent_at).to_std().unwrap_or_default());
            let (state, kind, message) = if fresh.cancel_requested {
                let message = format!("canceled; no build of this run appeared at the provider within {waited}");
                (RunState::Canceled, EventKind::StateChanged, message)
            } else {
                let message = format!("accepted by the provider but no build appeared within {waited}");
                (RunState::Error, EventKind::Error, message)
            };
            self.state.store.set_state(&run.id, state, Some(message), kind, now).await?;
            crate::metrics::record_unconfirmed("expired");
            return Ok(());
        }
        let step = cigw_core::time::span(step);
        self.reschedule(run, Some(now + step)).await.map(drop)
    }

    /// List the target's recent builds once and give each unconfirmed run of it its build.
    async fn correlation_pass(
        &self,
        target_name: &str,
        target: &dyn CiTarget,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let runs = self.state.store.unconfirmed_runs(target_name, MAX_UNCONFIRMED_PER_PASS).await?;
        let Some(first) = runs.first() else { return Ok(()) };
        let shared = |get: fn(&RunRecord) -> &Option<String>| {
            let value = get(first);
            runs.iter().all(|r| get(r) == value).then(|| value.clone()).flatten()
        };
        let query = RecentQuery {
            since: runs.iter().map(|r| r.sent_at.unwrap_or(r.created_at)).min().unwrap_or(now) - CLOCK_SKEW,
            branch: shared(|r| &r.git_ref.branch),
            tag: shared(|r| &r.git_ref.tag),
            sha: shared(|r| &r.git_ref.sha),
        };
        let candidates = match target.find_recent(&query).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target = target_name, error = %e, "listing recent builds failed");
                return Ok(());
            }
        };
        let mut free = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let owner =
                self.state.store.provider_ref_owner(target_name, &candidate.run_ref.id, candidate.run_ref.attempt);
            let run_ref = match owner.await? {
                None => Some(candidate.run_ref.clone()),
                Some(_) => self.restarted_attempt(target_name, &candidate).await?,
            };
            if let Some(run_ref) = run_ref {
                free.push((candidate, run_ref));
            }
        }
        let waiting: Vec<Waiting> = runs
            .iter()
            .map(|r| Waiting {
                run_id: r.id.clone(),
                git_ref: r.git_ref.clone(),
                sent_at: r.sent_at.unwrap_or(r.created_at),
            })
            .collect();
        for (run_id, run_ref) in assign(&waiting, free) {
            match self.state.store.adopt(&run_id, run_ref.clone(), now).await {
                Ok(_) => {
                    tracing::info!(run_id, provider_id = run_ref.id, attempt = run_ref.attempt, "build correlated");
                    crate::metrics::record_unconfirmed("correlated");
                }
                // Taken meanwhile (another replica's pass), or the run ended: the next pass retries.
                Err(StoreError::Conflict { what }) => tracing::info!(run_id, what, "correlation lost a race"),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A build some finished run already owns, queued again after that run ended: the provider
    /// ran the same build once more (Codeship Basic does this when an already-built sha is
    /// triggered), so it is the next attempt of that build.
    async fn restarted_attempt(
        &self,
        target: &str,
        candidate: &cigw_core::RunCandidate,
    ) -> Result<Option<ProviderRunRef>, StoreError> {
        let store = &self.state.store;
        let id = &candidate.run_ref.id;
        let mut attempt = candidate.run_ref.attempt;
        let mut latest_owner = None;
        while let Some(owner) = store.provider_ref_owner(target, id, attempt).await? {
            latest_owner = Some(owner);
            attempt += 1;
            if attempt > candidate.run_ref.attempt + 100 {
                return Ok(None);
            }
        }
        let Some(owner) = latest_owner else { return Ok(None) };
        let owner = store.get_run(&owner).await?;
        let queued_again = owner.state.is_terminal() && owner.finished_at.is_some_and(|f| f <= candidate.created_at);
        Ok(queued_again.then(|| ProviderRunRef { attempt, ..candidate.run_ref.clone() }))
    }

    async fn send_cancel(
        &self,
        run: &RunRecord,
        target: &dyn CiTarget,
        run_ref: &ProviderRunRef,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (kind, data) = match target.cancel(run_ref).await {
            Ok(()) => (EventKind::CancelSent, json!({"provider_id": run_ref.id})),
            Err(e) => {
                tracing::warn!(run_id = run.id, error = %e, "cancel at the provider failed");
                (EventKind::Error, json!({"operation": "cancel", "message": e.to_string()}))
            }
        };
        self.state.store.append_event(NewEvent { run_id: run.id.clone(), kind, data, created_at: now }).await?;
        Ok(())
    }

    /// For a run whose target was removed from the configuration: a follow-only target from its
    /// account, which polls it (and sends a requested cancel) until it ends, or, when the run
    /// cannot be followed, why it ends in `error`. Without the target's declaration there is no
    /// maximum duration to enforce.
    fn follower(&self, run: &RunRecord) -> Result<Arc<dyn CiTarget>, String> {
        let Some(account) = self.state.catalog.accounts.get(&(run.provider, run.account.clone())) else {
            return Err(format!(
                "target `{}` and its {} account `{}` were removed from the configuration",
                run.target, run.provider, run.account
            ));
        };
        let run_ref = match &run.provider_ref {
            Some(r) if !run.unconfirmed => r,
            _ => {
                return Err(format!(
                    "target `{}` was removed from the configuration before its {} build was identified",
                    run.target, run.provider
                ));
            }
        };
        match account.follow_target(&run.target, run_ref) {
            Some(follower) => Ok(Arc::new(InstrumentedTarget::new(run.target.clone(), follower))),
            None => Err(format!(
                "target `{}` was removed from the configuration and its {} build {} cannot be followed without it",
                run.target, run.provider, run_ref.id
            )),
        }
    }

    async fn cancel_sent(&self, run: &RunRecord) -> Result<bool, StoreError> {
        let filter = EventFilter { run_id: Some(run.id.clone()), ..EventFilter::default() };
        let events = self.state.store.events_after(0, &filter, 1000).await?;
        Ok(events.iter().any(|e| e.kind == EventKind::CancelSent))
    }

    /// How the runs of `target` are polled.
    pub(super) fn pace(&self, target: &str) -> Pace {
        let t = &self.state.settings.timings;
        let callbacks = self.state.target(target).is_some_and(|c| c.target.capabilities().callbacks);
        Pace::new(t.poll_initial, t.poll_max, callbacks)
    }

    fn next_poll_for(&self, run: &RunRecord, now: DateTime<Utc>) -> DateTime<Utc> {
        self.pace(&run.target).next_poll(now, run.queued_at.unwrap_or(run.created_at))
    }

    /// Keep the run as it is, due again at `next` (or untracked), and release the lease.
    async fn reschedule(&self, run: &RunRecord, next: Option<DateTime<Utc>>) -> Result<RunRecord, StoreError> {
        let mut unchanged = RunStatus::new(run.state, run.raw_status.clone().unwrap_or_default());
        unchanged.observed_at = run.observed_at.unwrap_or(run.created_at).max(self.state.now());
        unchanged.message = run.message.clone();
        self.state.store.apply_status(&run.id, &self.owner, &unchanged, next).await.map(|u| u.run)
    }

    /// Release the lease without touching the schedule the store just set.
    async fn release(&self, run: &RunRecord) -> Result<(), StoreError> {
        let fresh = self.state.store.get_run(&run.id).await?;
        let next = fresh.next_poll_at.or(Some(self.state.now()));
        let mut unchanged = RunStatus::new(fresh.state, fresh.raw_status.clone().unwrap_or_default());
        unchanged.observed_at = fresh.observed_at.unwrap_or(fresh.created_at).max(self.state.now());
        self.state.store.apply_status(&run.id, &self.owner, &unchanged, next).await.map(|_| ())
    }
}

/// `90s` → `1m 30s`.
pub(super) fn humanize(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}
