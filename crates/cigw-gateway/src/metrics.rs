//! Prometheus metrics: the series, the process-wide recorder and the `/metrics` exposition.
//! Depends on no other gateway module: provider calls are measured by the wrapper in
//! `instrumented.rs`, trigger requests by the intake middleware of `api/triggers.rs`.
//!
//! Series (all names start with `cigw_`; docs/operations.md lists them for operators):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `cigw_intake_total` | counter | `source`, `outcome` |
//! | `cigw_hook_requests_total` | counter | `hook`, `outcome` |
//! | `cigw_provider_calls_total` | counter | `provider`, `operation`, `outcome` |
//! | `cigw_provider_call_duration_seconds` | histogram | `provider`, `operation` |
//! | `cigw_provider_retries_total` | counter | `provider`, `operation`, `reason` |
//! | `cigw_dispatch_lag_seconds` | histogram | `provider` |
//! | `cigw_dispatch_backlog_age_seconds` | gauge | |
//! | `cigw_intake_paced_total` | counter | |
//! | `cigw_runs` | gauge | `state` |
//! | `cigw_runs_unconfirmed` | gauge | |
//! | `cigw_unconfirmed_total` | counter | `outcome` |
//! | `cigw_reconciliations_total` | counter | `outcome` |
//! | `cigw_possible_duplicates_total` | counter | |
//! | `cigw_sse_clients` | gauge | |
//! | `cigw_sse_disconnects_total` | counter | `reason` |
//!
//! Counters and histograms are recorded where things happen, so each replica counts only its
//! own work; the run gauges are read from the store at each scrape (every replica reports the
//! same totals: aggregate them with `max`, not `sum`). Those reads touch only the index of
//! unfinished runs and one counter row per terminal state (`Store::count_runs_by_state`), so a
//! scrape costs the same after 90 days of runs as after one.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_core::{ProviderKind, RunState};
use cigw_store::{OutboxStatus, Store};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names.
pub mod names {
    /// Trigger requests by `source` (`api`, `hook:<name>`, …) and `outcome`.
    pub const INTAKE: &str = "cigw_intake_total";
    /// Hook deliveries (`POST /hooks/{name}`) and replays by `hook` and `outcome`.
    pub const HOOK_REQUESTS: &str = "cigw_hook_requests_total";
    /// Provider calls by `provider`, `operation` and `outcome` (`ok` or the error code).
    pub const PROVIDER_CALLS: &str = "cigw_provider_calls_total";
    /// Latency of provider calls, retries included.
    pub const PROVIDER_CALL_DURATION: &str = "cigw_provider_call_duration_seconds";
    /// Retries inside provider calls, by the error `reason` that caused them.
    pub const PROVIDER_RETRIES: &str = "cigw_provider_retries_total";
    /// Time from a run's creation to the provider accepting it.
    pub const DISPATCH_LAG: &str = "cigw_dispatch_lag_seconds";
    /// How long the oldest run due for dispatch and not yet claimed has waited.
    pub const BACKLOG_AGE: &str = "cigw_dispatch_backlog_age_seconds";
    /// Triggers answered later because dispatch was behind (see `pacing.rs`).
    pub const INTAKE_PACED: &str = "cigw_intake_paced_total";
    /// Runs per state (read from the store at each scrape).
    pub const RUNS: &str = "cigw_runs";
    /// Runs accepted by a provider that gave no id and not yet matched with a build.
    pub const RUNS_UNCONFIRMED: &str = "cigw_runs_unconfirmed";
    /// Unconfirmed runs by `outcome`: `accepted`, `correlated`, `expired`.
    pub const UNCONFIRMED: &str = "cigw_unconfirmed_total";
    /// Reconciliations of ambiguous dispatches by `outcome`: `adopted`, `not_found_yet`, `gave_up`.
    pub const RECONCILIATIONS: &str = "cigw_reconciliations_total";
    /// Triggers sent again after an unresolved ambiguous attempt.
    pub const POSSIBLE_DUPLICATES: &str = "cigw_possible_duplicates_total";
    /// Runs superseded before they were sent, by target.
    pub const SUPERSEDED: &str = "cigw_runs_superseded_total";
    /// Connected `/v1/events` clients.
    pub const SSE_CLIENTS: &str = "cigw_sse_clients";
    /// Event streams the server ended, by `reason`: `slow_client`, `shutdown`, `store_error`.
    pub const SSE_DISCONNECTS: &str = "cigw_sse_disconnects_total";
    /// Notification delivery attempts by notification and outcome (`delivered`, `retry`, `dead`).
    pub const NOTIFICATION_DELIVERIES: &str = "cigw_notification_deliveries_total";
    /// Outbox rows by status (`pending` is the outbox depth; `dead` the dead letters).
    pub const NOTIFICATION_OUTBOX: &str = "cigw_notification_outbox";
}

/// Latency buckets (seconds) of the provider-call and dispatch-lag histograms.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The recorder of this process, installed (with the retry observer) on first use.
    pub fn global() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only what it records");
            }
            cigw_core::retry::set_retry_observer(count_retry);
            describe();
            handle
        });
        Metrics { handle: handle.clone() }
    }

    /// `GET /metrics`: the run gauges refreshed from `store`, then the exposition text.
    pub async fn scrape(&self, store: &dyn Store) -> Response {
        refresh_run_gauges(store).await;
        self.handle.run_upkeep();
        let mut response = self.handle.render().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        response
    }
}

async fn refresh_run_gauges(store: &dyn Store) {
    match store.count_runs_by_state().await {
        Ok(counts) => {
            for run_state in RunState::ALL {
                let n = counts.iter().find(|(s, _)| *s == run_state).map_or(0, |(_, n)| *n);
                gauge!(names::RUNS, "state" => run_state.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting runs for /metrics failed"),
    }
    // Counted by the store from its index of unfinished runs: no page of runs is read.
    for status in [OutboxStatus::Pending, OutboxStatus::Dead] {
        match store.count_outbox(status).await {
            Ok(n) => gauge!(names::NOTIFICATION_OUTBOX, "status" => status.as_str()).set(n as f64),
            Err(e) => tracing::warn!(error = %e, "counting outbox rows for /metrics failed"),
        }
    }
    match store.count_unconfirmed_runs().await {
        Ok(n) => gauge!(names::RUNS_UNCONFIRMED).set(n as f64),
        Err(e) => tracing::warn!(error = %e, "counting unconfirmed runs for /metrics failed"),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::INTAKE, "Trigger requests by source and outcome");
    describe_counter!(names::HOOK_REQUESTS, "Hook deliveries by hook and outcome");
    describe_counter!(names::PROVIDER_CALLS, "Provider API calls by provider, operation and outcome");
    describe_histogram!(names::PROVIDER_CALL_DURATION, metrics::Unit::Seconds, "Provider call latency");
    describe_counter!(names::PROVIDER_RETRIES, "Retries inside provider calls by the error that caused them");
    describe_histogram!(names::DISPATCH_LAG, metrics::Unit::Seconds, "Run creation to provider acceptance");
    describe_gauge!(names::BACKLOG_AGE, metrics::Unit::Seconds, "Wait of the oldest run due for dispatch");
    describe_counter!(names::INTAKE_PACED, "Triggers answered later because dispatch was behind");
    describe_gauge!(names::RUNS, "Runs per state");
    describe_gauge!(names::RUNS_UNCONFIRMED, "Runs accepted without a provider id and not yet matched");
    describe_counter!(names::UNCONFIRMED, "Runs accepted without a provider id, correlated, or expired");
    describe_counter!(names::RECONCILIATIONS, "Reconciliations of ambiguous dispatches by outcome");
    describe_counter!(names::POSSIBLE_DUPLICATES, "Triggers sent again after an unresolved ambiguous attempt");
    describe_counter!(
        names::SUPERSEDED,
        "Runs superseded by a newer run of their target and branch before they were sent"
    );
    describe_gauge!(names::SSE_CLIENTS, "Connected /v1/events clients");
    describe_counter!(names::SSE_DISCONNECTS, "Event streams ended by the server, by reason");
    describe_counter!(names::NOTIFICATION_DELIVERIES, "Notification delivery attempts by notification and outcome");
    describe_gauge!(
        names::NOTIFICATION_OUTBOX,
        "Notification outbox rows by status (pending = depth, dead = dead letters)"
    );
}

/// Count one trigger request.
pub fn record_intake(source: &str, outcome: &'static str) {
    counter!(names::INTAKE, "source" => source.to_string(), "outcome" => outcome).increment(1);
}

/// Count one hook delivery (or replay): `hook` is a configured name or `(unknown)`, `outcome`
/// one of `triggered`, `not_matched`, `ping`, `duplicate`, `template_error`, `rejected`,
/// `unauthorized`, `forbidden`, `too_large`, `unsupported_media_type`, `bad_request`,
/// `unknown_hook`, `replayed`, `error`.
pub fn record_hook_request(hook: &str, outcome: &'static str) {
    counter!(names::HOOK_REQUESTS, "hook" => hook.to_string(), "outcome" => outcome).increment(1);
}

/// A run reached its provider (`Started`, accepted without an id, or nothing to run).
pub fn record_dispatched(provider: ProviderKind, created_at: DateTime<Utc>, now: DateTime<Utc>) {
    let lag = (now - created_at).to_std().unwrap_or(Duration::ZERO);
    histogram!(names::DISPATCH_LAG, "provider" => provider.as_str()).record(lag.as_secs_f64());
}

/// The oldest run due for dispatch has waited `age` (zero: none waits).
pub fn record_backlog_age(age: Duration) {
    gauge!(names::BACKLOG_AGE).set(age.as_secs_f64());
}

/// A trigger was answered later because dispatch was behind.
pub fn record_intake_paced() {
    counter!(names::INTAKE_PACED).increment(1);
}

/// A pending run was superseded by a newer run of its target and branch.
pub fn record_superseded(target: &str) {
    counter!(names::SUPERSEDED, "target" => target.to_string()).increment(1);
}

/// Count one notification delivery attempt's outcome (`delivered`, `retry` or `dead`).
pub fn record_notification_delivery(notification: &str, outcome: &'static str) {
    counter!(names::NOTIFICATION_DELIVERIES, "notification" => notification.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A reconciliation pass ended with `outcome` (`adopted`, `not_found_yet`, `gave_up`).
pub fn record_reconciliation(outcome: &'static str) {
    counter!(names::RECONCILIATIONS, "outcome" => outcome).increment(1);
}

/// A trigger was sent again after an unresolved ambiguous attempt.
pub fn record_possible_duplicate() {
    counter!(names::POSSIBLE_DUPLICATES).increment(1);
}

/// An unconfirmed run was `accepted`, `correlated` or `expired`.
pub fn record_unconfirmed(outcome: &'static str) {
    counter!(names::UNCONFIRMED, "outcome" => outcome).increment(1);
}

/// The provider call under way in this task, for labelling retries made deep in an adapter.
#[derive(Debug, Clone, Copy)]
struct CallContext {
    provider: &'static str,
    operation: &'static str,
}

tokio::task_local! {
    static CALL: CallContext;
}

/// Run `call` as the `operation` call to `provider`: retries made inside it are counted under
/// these labels.
pub async fn within_provider_call<F: Future>(provider: &'static str, operation: &'static str, call: F) -> F::Output {
    CALL.scope(CallContext { provider, operation }, call).await
}

/// A provider call ended with `outcome` (`ok` or the error code) after `elapsed`.
pub fn record_provider_call(provider: &'static str, operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(names::PROVIDER_CALLS, "provider" => provider, "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!(names::PROVIDER_CALL_DURATION, "provider" => provider, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

fn count_retry(_adapter_operation: &str, error: &cigw_core::Error, _delay: Duration) {
    let call = CALL.try_with(|c| *c).unwrap_or(CallContext { provider: "unknown", operation: "unknown" });
    counter!(
        names::PROVIDER_RETRIES,
        "provider" => call.provider,
        "operation" => call.operation,
        "reason" => error.code()
    )
    .increment(1);
}
