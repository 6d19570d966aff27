//! Outbound notifications (`[notifications.<name>]`): run events as signed CDEvents, through a
//! persisted outbox.
//!
//! Two loops per process, both safe with several replicas:
//! - the **feed** ([`crate::event_feed`], cursor [`CURSOR`]) turns each run event into outbox
//!   rows, one per matching notification, inserted with the cursor's move in one transaction and
//!   unique per (notification, event): no event is lost and none is enqueued twice;
//! - the **worker** claims due rows under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL),
//!   POSTs them ([`delivery`]) and records the outcome: delivered, retried later, or dead. A
//!   run's later events wait until its earlier ones are delivered or dead (per notification).
//!
//! Delivery is at least once: a process that dies between the POST and recording its outcome
//! sends that row again after the lease ends, with the same `webhook-id`.

pub mod cdevents;
pub mod delivery;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cigw_core::notification::Notification;
use cigw_store::{EventRecord, NewOutboxRow, OutboxOutcome, OutboxRecord, RunRecord, StoreError, StoreResult};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::event_feed::EventFeed;
use crate::state::AppState;
use cdevents::{Origin, PipelineRunEvent};

/// The run-event cursor of the notification feed.
pub const CURSOR: &str = "notifications";
/// Rows claimed at once (each sent concurrently: they belong to different runs or notifications).
const BATCH: u32 = 32;
/// Longest idle wait of the worker between two looks at the outbox.
const IDLE: Duration = Duration::from_millis(250);
/// Lease beyond a notification's own timeout, for recording the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The rows `page` produces for the configured notifications (a run no longer stored is skipped).
pub async fn rows_for(state: &AppState, page: &[EventRecord]) -> StoreResult<Vec<NewOutboxRow>> {
    let origin = Origin::new(state.settings.server.public_url.as_deref());
    let mut runs: BTreeMap<String, Option<RunRecord>> = BTreeMap::new();
    let mut rows = Vec::new();
    let now = state.now();
    for event in page {
        let Some(kind) = PipelineRunEvent::of(event) else { continue };
        if !runs.contains_key(&event.run_id) {
            let run = match state.store.get_run(&event.run_id).await {
                Ok(run) => Some(run),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            runs.insert(event.run_id.clone(), run);
        }
        let Some(Some(run)) = runs.get(&event.run_id) else { continue };
        for n in state.settings.notifications.values() {
            if !n.filter.matches(&run.target, run.provider, kind.filter_state(event)) {
                continue;
            }
            rows.push(NewOutboxRow {
                notification: n.name.clone(),
                event_id: event.id,
                run_id: run.id.clone(),
                payload: cdevents::build(kind, &n.name, event, run, &origin),
                created_at: now,
            });
        }
    }
    Ok(rows)
}

/// Store the rows of `page` and move `cursor` past it, in one transaction.
pub async fn enqueue(state: &AppState, cursor: &str, page: &[EventRecord]) -> StoreResult<u64> {
    let Some(last) = page.last().map(|e| e.id) else { return Ok(0) };
    let rows = rows_for(state, page).await?;
    state.store.enqueue_outbox(cursor, last, rows).await
}

/// The delivery worker of one process.
#[derive(Debug, Clone)]
pub struct Worker {
    state: AppState,
    owner: String,
    clients: Arc<BTreeMap<String, reqwest::Client>>,
    lease: Duration,
}

impl Worker {
    /// A worker over the configured notifications, holding leases under a name unique to this
    /// process. A notification whose HTTP client cannot be built is logged and its rows wait.
    pub fn new(state: AppState) -> Self {
        let owner = format!("cigw-notify-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let mut clients = BTreeMap::new();
        for n in state.settings.notifications.values() {
            match delivery::client(n) {
                Ok(c) => {
                    clients.insert(n.name.clone(), c);
                }
                Err(e) => tracing::error!(notification = %n.name, error = %e, "notification HTTP client failed"),
            }
        }
        let longest = state.settings.notifications.values().map(|n| n.delivery.timeout).max().unwrap_or_default();
        Self { state, owner, clients: Arc::new(clients), lease: longest + LEASE_MARGIN }
    }

    /// The lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One pass: claim what is due and attempt all of it before returning (tests drive the
    /// worker with this). Returns how many rows were attempted.
    pub async fn tick(&self) -> usize {
        let now = self.state.now();
        let until = now + cigw_core::time::span(self.lease);
        let rows = match self.state.store.claim_outbox(&self.owner, now, until, BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "claiming notification deliveries failed");
                return 0;
            }
        };
        let n = rows.len();
        let mut sends = JoinSet::new();
        for row in rows {
            let worker = self.clone();
            sends.spawn(async move { worker.deliver(row).await });
        }
        while sends.join_next().await.is_some() {}
        n
    }

    /// Attempt one claimed row and record the outcome.
    async fn deliver(&self, row: OutboxRecord) {
        let config: Option<&Notification> = self.state.settings.notifications.get(&row.notification);
        let outcome = match (config, self.clients.get(&row.notification)) {
            (Some(n), Some(client)) => {
                let answer = delivery::attempt(client, n, &row, self.state.now()).await;
                delivery::outcome(n, row.attempts, answer, self.state.now())
            }
            (Some(_), None) => OutboxOutcome::Retry {
                at: self.state.now() + cigw_core::time::span(Duration::from_secs(60)),
                status: None,
                error: "the notification's HTTP client could not be built (see the gateway log)".into(),
            },
            (None, _) => OutboxOutcome::Dead {
                status: None,
                error: format!("notification `{}` is no longer configured", row.notification),
            },
        };
        let label = match &outcome {
            OutboxOutcome::Delivered { .. } => "delivered",
            OutboxOutcome::Retry { .. } => "retry",
            OutboxOutcome::Dead { .. } => "dead",
        };
        match &outcome {
            OutboxOutcome::Delivered { status } => tracing::debug!(
                notification = %row.notification, delivery = row.id, run_id = %row.run_id, status, "notification delivered"
            ),
            OutboxOutcome::Retry { at, error, .. } => tracing::info!(
                notification = %row.notification, delivery = row.id, attempts = row.attempts, next_attempt_at = %at,
                error = %error, "notification delivery failed; will retry"
            ),
            OutboxOutcome::Dead { error, .. } => tracing::warn!(
                notification = %row.notification, delivery = row.id, attempts = row.attempts, error = %error,
                "notification dead-lettered"
            ),
        }
        crate::metrics::record_notification_delivery(&row.notification, label);
        match self.state.store.record_outbox(row.id, &self.owner, outcome, self.state.now()).await {
            Ok(_) => {}
            Err(StoreError::Conflict { what }) => {
                tracing::warn!(delivery = row.id, %what, "delivery outcome not recorded: the lease was lost")
            }
            Err(e) => tracing::warn!(delivery = row.id, error = %e, "recording a delivery outcome failed"),
        }
    }

    /// Deliver until `shutdown` turns true; then finish the attempts under way and release this
    /// process's leases.
    pub async fn run(self, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if self.tick().await > 0 {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => {}
            }
        }
        match self.state.store.release_leases(&self.owner).await {
            Ok(n) => tracing::debug!(released = n, "notification worker stopped; leases released"),
            Err(e) => tracing::warn!(error = %e, "notification worker stopped; releasing leases failed"),
        }
    }
}

/// The feed, ready to follow: its cursor exists from here on, so every run event committed
/// after this returns is notified. `None` when no notification is configured.
pub async fn prepare(state: &AppState) -> StoreResult<Option<EventFeed>> {
    if state.settings.notifications.is_empty() {
        return Ok(None);
    }
    EventFeed::start(state, CURSOR).await.map(Some)
}

/// [`prepare`], retried every few seconds until it works or `shutdown` turns true.
pub async fn prepare_until(state: &AppState, mut shutdown: watch::Receiver<bool>) -> Option<EventFeed> {
    while !*shutdown.borrow() {
        match prepare(state).await {
            Ok(feed) => return feed,
            Err(e) => tracing::warn!(error = %e, "starting the notification feed failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {}
        }
    }
    None
}

/// Run the feed and the worker until `shutdown` (nothing when `feed` is `None`).
pub async fn run(state: AppState, feed: Option<EventFeed>, shutdown: watch::Receiver<bool>) {
    let Some(feed) = feed else { return };
    let wake = Arc::new(Notify::new());
    let worker = tokio::spawn(Worker::new(state.clone()).run(wake.clone(), shutdown.clone()));
    let poll = state.streams.poll_interval;
    let consume = {
        let state = state.clone();
        move |cursor: String, page: Vec<EventRecord>| {
            let (state, wake) = (state.clone(), wake.clone());
            async move {
                if enqueue(&state, &cursor, &page).await? > 0 {
                    wake.notify_one();
                }
                Ok(())
            }
        }
    };
    feed.follow(state, poll, shutdown, consume).await;
    let _ = worker.await;
}
