//! Sending pending runs to their providers, and reconciling a dispatch whose outcome is unknown
//! before ever sending it again (DESIGN.md §3, invariant 2).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::catalog::ConfiguredTarget;
use cigw_core::send_mark;
use cigw_core::{ConcurrencyPolicy, Error, RecentQuery, RerunOptions, TriggerOutcome, TriggerSpec};
use cigw_store::{DispatchOutcome, EventKind, NewEvent, RunFilter, RunRecord, StoreError};
use parking_lot::Mutex;
use rand::Rng;
use serde_json::json;

use super::Engine;
use super::matching::{CLOCK_SKEW, rank_candidates};
use super::track::humanize;

/// Why an earlier attempt was postponed, written as the prefix of the `dispatch_retry` reason.
mod retry_reason {
    /// The request never left (or was rate limited): sending again is safe.
    pub(super) const NOT_SENT: &str = "not_sent";
    /// The request may have been processed: reconcile before sending again.
    pub(super) const MAYBE_SENT: &str = "maybe_sent";
    /// Looking for the build of an ambiguous attempt.
    pub(super) const RECONCILING: &str = "reconciling";
}

/// What reconciliation found.
enum Reconciled {
    /// A provider build was adopted.
    Adopted,
    /// Nothing yet; look again shortly.
    KeepLooking(String),
    /// Nothing within the grace window after the latest send: send again (reporting a possible
    /// duplicate first), or stop when the sends are spent or the run was canceled.
    GiveUp,
    /// The provider's build list kept failing for `timings.unconfirmed_deadline` after the
    /// latest send: the build can be neither found nor ruled out, so nothing is sent again.
    CannotLook(String),
}

impl Engine {
    /// Dispatch one claimed run.
    pub(super) async fn dispatch(&self, run: RunRecord) {
        let run_id = run.id.clone();
        if let Err(e) = self.dispatch_inner(run).await {
            match e {
                StoreError::Conflict { .. } => tracing::info!(run_id, error = %e, "dispatch lost its lease"),
                e => tracing::error!(run_id, error = %e, "recording a dispatch failed"),
            }
        }
    }

    async fn dispatch_inner(&self, run: RunRecord) -> Result<(), StoreError> {
        let now = self.state.now();
        let Some(target) = self.state.target(&run.target).cloned() else {
            let message = format!("target `{}` is no longer configured", run.target);
            self.record(&run, DispatchOutcome::Refused { message }).await?;
            return Ok(());
        };
        // The typed history the store keeps: sends that may have reached the provider, counted
        // from ambiguous answers and from claims that ended without an outcome (crashes).
        let maybe_sent = run.maybe_sent_count > 0;
        if run.cancel_requested && !maybe_sent {
            // Nothing reached the provider: the store completes the cancel without it.
            let outcome = DispatchOutcome::RetryAt { at: now, reason: "canceled before dispatch".into() };
            self.record(&run, outcome).await?;
            return Ok(());
        }
        if target.spec.supersedes() && !maybe_sent && run.rerun_of.is_none() {
            // Decided under this dispatcher's lease, at the moment of sending: the newest run of
            // the branch replaces every older unsent one, so each links the one that is built.
            if let Some(update) = self.state.store.supersede(&run.id, &self.owner, now).await? {
                tracing::info!(run_id = run.id, message = update.run.message.as_deref().unwrap_or(""), "superseded");
                crate::metrics::record_superseded(&run.target);
                self.state.notify_events();
                return Ok(());
            }
        }
        if maybe_sent {
            let reconciled = self.reconcile(&run, &target, now).await?;
            crate::metrics::record_reconciliation(match &reconciled {
                Reconciled::Adopted => "adopted",
                Reconciled::KeepLooking(_) => "not_found_yet",
                Reconciled::GiveUp => "gave_up",
                Reconciled::CannotLook(_) => "cannot_look",
            });
            match reconciled {
                Reconciled::Adopted => {
                    crate::metrics::record_dispatched(run.provider, run.created_at, self.state.now());
                    return Ok(());
                }
                Reconciled::KeepLooking(why) => {
                    let at = now + cigw_core::time::span(self.reconcile_step());
                    let reason = format!("{}: {why}", retry_reason::RECONCILING);
                    self.record(&run, DispatchOutcome::RetryAt { at, reason }).await?;
                    return Ok(());
                }
                Reconciled::CannotLook(why) => {
                    let message = format!(
                        "could not look for the build of a trigger that may have reached {provider}: {why}. {rest}",
                        provider = run.provider,
                        rest = self.builds_may_exist(&run, &target, now),
                    );
                    tracing::warn!(run_id = run.id, sends = run.maybe_sent_count, "{message}");
                    self.record(&run, DispatchOutcome::Refused { message }).await?;
                    return Ok(());
                }
                Reconciled::GiveUp if run.cancel_requested => {
                    let grace = humanize(self.state.settings.timings.reconcile_grace);
                    let message = format!(
                        "canceled; no build was found at the provider within {grace} after the last send that may \
                         have reached it"
                    );
                    self.record(&run, DispatchOutcome::Canceled { message }).await?;
                    return Ok(());
                }
                Reconciled::GiveUp if run.maybe_sent_count >= self.state.settings.timings.max_unconfirmed_sends => {
                    let message = self.builds_may_exist(&run, &target, now);
                    tracing::warn!(run_id = run.id, sends = run.maybe_sent_count, "{message}");
                    self.record(&run, DispatchOutcome::Refused { message }).await?;
                    return Ok(());
                }
                Reconciled::GiveUp => {
                    // Recorded before the send, so a duplicate is reported even if this process
                    // dies while sending.
                    crate::metrics::record_possible_duplicate();
                    tracing::warn!(
                        run_id = run.id,
                        sends = run.maybe_sent_count,
                        "sending again after an unresolved ambiguous dispatch"
                    );
                    self.state
                        .store
                        .append_event(NewEvent {
                            run_id: run.id.clone(),
                            kind: EventKind::PossibleDuplicate,
                            data: json!({
                                "reason": "an earlier send may have started a build that could not be found; sending again",
                                "maybe_sent_count": run.maybe_sent_count,
                                "last_maybe_sent_at": run.last_maybe_sent_at,
                            }),
                            created_at: self.state.now(),
                        })
                        .await?;
                }
            }
        }
        if target.spec.concurrency == ConcurrencyPolicy::CancelPrevious && run.rerun_of.is_none() {
            self.cancel_previous(&run).await;
        }

        let result = self.send(&run, &target).await?;
        let outcome = self.outcome_of(&run, result);
        let reached = matches!(
            outcome,
            DispatchOutcome::Started { .. }
                | DispatchOutcome::Unconfirmed { .. }
                | DispatchOutcome::NothingToRun { .. }
        );
        let unconfirmed = matches!(outcome, DispatchOutcome::Unconfirmed { .. });
        // The run's one INFO line on its way out (the adapters log their calls at DEBUG).
        match &outcome {
            DispatchOutcome::Started { run_ref, .. } => tracing::info!(provider_id = %run_ref.id, "dispatched"),
            DispatchOutcome::Unconfirmed { .. } => tracing::info!("dispatched; the provider gave no id, correlating"),
            DispatchOutcome::NothingToRun { message } => tracing::info!(message, "dispatched; nothing to run"),
            DispatchOutcome::Refused { message } => tracing::warn!(message, "not dispatched; the run ends in error"),
            _ => {}
        }
        self.record(&run, outcome).await?;
        if reached {
            crate::metrics::record_dispatched(run.provider, run.created_at, self.state.now());
        }
        if unconfirmed {
            crate::metrics::record_unconfirmed("accepted");
        }
        Ok(())
    }

    /// The `error` message of a run that stopped sending: builds may exist at the provider, and
    /// where to look for them.
    fn builds_may_exist(&self, run: &RunRecord, target: &ConfiguredTarget, now: DateTime<Utc>) -> String {
        let r = &run.git_ref;
        let mut what = match (&r.branch, &r.tag) {
            (_, Some(tag)) => format!("tag `{tag}`"),
            (Some(branch), None) => format!("branch `{branch}`"),
            (None, None) => format!("the default branch `{}`", target.spec.default_branch),
        };
        if let Some(sha) = &r.sha {
            what.push_str(&format!(" at commit `{sha}`"));
        }
        let echo = match target.target.capabilities().echoes_run_id {
            true => format!(", carrying run id `{}`", run.id),
            false => String::new(),
        };
        let from = (run.created_at - CLOCK_SKEW).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let to = (now + CLOCK_SKEW).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            "stopped after {n} trigger sends that may have reached {provider} without the build being identified \
             ({grace} of looking after the last one): builds may exist at the provider. Look at {provider} target \
             `{target}` ({locator}) for builds of {what} created between {from} and {to}{echo}, and cancel any \
             that should not run; cigw sends nothing more for this run",
            n = run.maybe_sent_count,
            provider = run.provider,
            grace = humanize(self.state.settings.timings.reconcile_grace),
            target = run.target,
            locator = target.target.locator(),
        )
    }

    /// Call the provider (a trigger, or a rerun of the original run's build) and say when the
    /// call started. Triggers of a target whose provider answers without an id are sent one at a
    /// time (in this process), so the order of sends is the order the provider queues builds in:
    /// correlation then matches them one to one, oldest send to oldest build.
    ///
    /// Each attempt is marked in the store just before the request leaves (write-ahead, run by
    /// the adapter's transport after its waits: see `cigw_core::send_mark`), so if this process
    /// dies mid-call the next claim knows the trigger may have been sent, and a process that dies
    /// while still waiting for a rate budget has sent nothing. A lease lost before the mark sends
    /// nothing.
    async fn send(
        &self,
        run: &RunRecord,
        target: &ConfiguredTarget,
    ) -> Result<cigw_core::Result<TriggerOutcome>, StoreError> {
        let _in_order = match target.target.capabilities().trigger_returns_id {
            true => None,
            false => Some(self.locks.send_lock(&run.target).lock_owned().await),
        };
        let unmarked: Arc<Mutex<Option<StoreError>>> = Arc::default();
        let hook: send_mark::Hook = {
            let (state, run_id, owner, unmarked) =
                (self.state.clone(), run.id.clone(), self.owner.clone(), unmarked.clone());
            Arc::new(move || {
                let (state, run_id, owner, unmarked) = (state.clone(), run_id.clone(), owner.clone(), unmarked.clone());
                Box::pin(async move {
                    let marked = state.store.mark_sending(&run_id, &owner, state.now()).await;
                    let mut slot = unmarked.lock();
                    match marked {
                        Ok(()) => {
                            *slot = None;
                            Ok(())
                        }
                        Err(e) => {
                            let message = format!("the send could not be recorded first, so it was not sent: {e}");
                            *slot = Some(e);
                            Err(Error::not_sent(message))
                        }
                    }
                })
            })
        };
        let result = send_mark::scope(hook, self.send_unordered(run, target)).await;
        // A failed last mark means nothing left on that attempt; the store's error (e.g. the lease
        // was lost) decides, as it would have before sending.
        if result.is_err()
            && let Some(e) = unmarked.lock().take()
        {
            return Err(e);
        }
        Ok(result)
    }

    async fn send_unordered(&self, run: &RunRecord, target: &ConfiguredTarget) -> cigw_core::Result<TriggerOutcome> {
        if let Some(original_id) = &run.rerun_of {
            let original = self.state.store.get_run(original_id).await.map_err(|e| Error::other(e.to_string()))?;
            let Some(provider_ref) = original.provider_ref else {
                return Err(Error::InvalidRequest { message: "the original run never reached its provider".into() });
            };
            return target.target.rerun(&provider_ref, RerunOptions { failed_only: run.rerun_failed_only }).await;
        }
        let spec = TriggerSpec {
            run_id: run.id.clone(),
            git_ref: run.git_ref.clone(),
            parameters: run.parameters.clone(),
            requested_by: run.requested_by.clone(),
        };
        target.target.trigger(&spec).await
    }

    fn outcome_of(&self, run: &RunRecord, result: cigw_core::Result<TriggerOutcome>) -> DispatchOutcome {
        let now = self.state.now();
        let timings = &self.state.settings.timings;
        let first_poll = now + cigw_core::time::span(timings.poll_initial);
        match result {
            Ok(TriggerOutcome::Started(run_ref)) => {
                DispatchOutcome::Started { run_ref, next_poll_at: self.pace(&run.target).first_poll(now) }
            }
            Ok(TriggerOutcome::AcceptedWithoutId { sent_at }) => DispatchOutcome::Unconfirmed {
                sent_at,
                deadline: sent_at + cigw_core::time::span(timings.unconfirmed_deadline),
                next_poll_at: first_poll,
            },
            Ok(TriggerOutcome::NothingToRun { message }) => DispatchOutcome::NothingToRun { message },
            Err(e @ (Error::NotSent { .. } | Error::RateLimited { .. })) => {
                // An outage is waited out (nothing was sent, so retrying is safe) until the
                // run's dispatch deadline; a count of attempts would end runs within seconds
                // once waits are bounded by the lease.
                let waited = (now - run.created_at).to_std().unwrap_or_default();
                if waited >= timings.dispatch_deadline {
                    return DispatchOutcome::Refused {
                        message: format!(
                            "the provider could not be reached for {} ({} attempts, none of which reached it): {e}",
                            humanize(waited),
                            run.dispatch_attempts
                        ),
                    };
                }
                let wait = e.retry_after().unwrap_or_else(|| self.backoff(run.dispatch_attempts));
                let at = now + cigw_core::time::span(wait);
                DispatchOutcome::RetryAt { at, reason: format!("{}: {e}", retry_reason::NOT_SENT) }
            }
            Err(e @ (Error::MaybeSent { .. } | Error::Unavailable { .. })) => {
                let at = now + cigw_core::time::span(self.reconcile_step());
                // The request may have reached the provider until its ambiguous answer came (a
                // timeout can end long after the request left): the grace counts from now.
                DispatchOutcome::MaybeSent { sent_at: now, at, reason: format!("{}: {e}", retry_reason::MAYBE_SENT) }
            }
            Err(e) => DispatchOutcome::Refused { message: e.to_string() },
        }
    }

    /// Look for the build an ambiguous attempt may have started and adopt it.
    async fn reconcile(
        &self,
        run: &RunRecord,
        target: &ConfiguredTarget,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, StoreError> {
        let query = RecentQuery {
            since: run.created_at - CLOCK_SKEW,
            branch: run.git_ref.branch.clone(),
            tag: run.git_ref.tag.clone(),
            sha: run.git_ref.sha.clone(),
        };
        let latest_send = run.last_maybe_sent_at.unwrap_or(run.created_at);
        let candidates = match target.target.find_recent(&query).await {
            Ok(c) => c,
            Err(e) => {
                let why = format!("listing recent builds failed: {e}");
                // Waiting for the budget is not failing to look: a rate-limited list only gives
                // up at the dispatch deadline; a failing one after `unconfirmed_deadline`.
                let timings = &self.state.settings.timings;
                let deadline = match e {
                    Error::RateLimited { .. } => timings.dispatch_deadline.max(timings.unconfirmed_deadline),
                    _ => timings.unconfirmed_deadline,
                };
                let deadline = cigw_core::time::span(deadline);
                if now - latest_send >= deadline {
                    let waited = humanize((now - latest_send).to_std().unwrap_or_default());
                    return Ok(Reconciled::CannotLook(format!("{why} (for {waited} after the last send)")));
                }
                return Ok(Reconciled::KeepLooking(why));
            }
        };
        let first_poll = now + cigw_core::time::span(self.state.settings.timings.poll_initial);
        for candidate in rank_candidates(&run.id, &run.git_ref, run.created_at, candidates) {
            let found = candidate.run_ref.clone();
            let outcome = DispatchOutcome::Started { run_ref: found.clone(), next_poll_at: first_poll };
            match self.record(run, outcome).await {
                Ok(()) => {
                    self.state
                        .store
                        .append_event(NewEvent {
                            run_id: run.id.clone(),
                            kind: EventKind::Reconciled,
                            data: json!({"provider_id": found.id, "attempt": found.attempt}),
                            created_at: now,
                        })
                        .await?;
                    tracing::info!(run_id = run.id, provider_id = found.id, "ambiguous dispatch reconciled");
                    return Ok(Reconciled::Adopted);
                }
                // Another run owns this build, or our lease is gone (then every record fails).
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Every further send waits a full grace of looking, counted from the latest send.
        let grace = cigw_core::time::span(self.state.settings.timings.reconcile_grace);
        if now - latest_send >= grace {
            Ok(Reconciled::GiveUp)
        } else {
            Ok(Reconciled::KeepLooking("no matching build yet".into()))
        }
    }

    /// Cancel earlier unfinished runs of the same target and branch (`cancel-previous`).
    async fn cancel_previous(&self, run: &RunRecord) {
        let filter = RunFilter { target: Some(run.target.clone()), limit: 200, ..RunFilter::default() };
        let Ok(page) = self.state.store.list_runs(&filter, None).await else { return };
        let now = self.state.now();
        for older in page.runs.iter().filter(|o| {
            o.id != run.id
                && o.created_at <= run.created_at
                && !o.state.is_terminal()
                && !o.cancel_requested
                && o.git_ref.branch == run.git_ref.branch
                && o.git_ref.tag == run.git_ref.tag
        }) {
            match self.state.store.request_cancel(&older.id, now).await {
                Ok(_) => tracing::info!(run_id = older.id, superseded_by = run.id, "canceled by a newer run"),
                Err(e) => tracing::warn!(run_id = older.id, error = %e, "canceling a superseded run failed"),
            }
        }
        self.state.wake_engine();
    }

    async fn record(&self, run: &RunRecord, outcome: DispatchOutcome) -> Result<(), StoreError> {
        self.state.store.record_dispatch(&run.id, &self.owner, outcome, self.state.now()).await.map(|_| ())
    }

    fn reconcile_step(&self) -> Duration {
        let t = &self.state.settings.timings;
        (t.reconcile_grace / 6).clamp(Duration::from_millis(50), t.poll_initial.max(Duration::from_millis(50)))
    }

    /// Exponential backoff with jitter for attempts that never reached the provider.
    fn backoff(&self, attempts: u32) -> Duration {
        let cap = self.state.settings.timings.retry_max_delay;
        let base = Duration::from_millis(500).saturating_mul(1 << attempts.min(10)).min(cap);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}
