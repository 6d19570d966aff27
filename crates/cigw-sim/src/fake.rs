//! An in-memory `CiTarget` with scriptable outcomes, driven by a harness clock, so gateway work
//! and tests need no simulator server.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::retry::{RetryPolicy, with_retry};
use cigw_core::{
    CallKind, Capabilities, CiTarget, Decision, Error, GitRef, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions,
    Result, RunCandidate, RunState, RunStatus, TriggerOutcome, TriggerSpec,
};
use http::Method;
use parking_lot::Mutex;

use crate::harness::{Fault, Harness};

/// What the next trigger call does instead of the normal behaviour.
#[derive(Debug)]
pub enum ScriptedTrigger {
    /// Fail with this error without starting anything.
    Fail(Error),
    /// Start the build, then fail as if the answer was lost.
    StartThenLose,
    /// Answer `NothingToRun`.
    NothingToRun(String),
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The kind it pretends to be.
    pub kind: ProviderKind,
    /// When false, triggers answer `AcceptedWithoutId` (like Codeship).
    pub returns_id: bool,
    /// Seconds from creation to running.
    pub queue_time: Duration,
    /// Seconds from running to the end.
    pub run_time: Duration,
    /// Credentials are refused (every call: `Unauthenticated`).
    pub refuse_credentials: bool,
    /// The target does not exist (every call: `NotFound`).
    pub missing: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Circleci,
            returns_id: true,
            queue_time: Duration::from_secs(2),
            run_time: Duration::from_secs(10),
            refuse_credentials: false,
            missing: false,
        }
    }
}

#[derive(Debug, Clone)]
struct FakeRun {
    git_ref: GitRef,
    correlation: String,
    created_at: DateTime<Utc>,
    attempt: u32,
    canceled_at: Option<DateTime<Utc>>,
    needs_approval: bool,
    decision: Option<(Decision, DateTime<Utc>)>,
}

/// The in-memory target.
///
/// Runs of a branch starting with `fail-` fail; runs with the parameter `approval = true` wait
/// for approval after starting.
#[derive(Debug)]
pub struct FakeTarget {
    harness: Harness,
    config: FakeConfig,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    runs: BTreeMap<String, FakeRun>,
    script: VecDeque<ScriptedTrigger>,
    next_id: u64,
}

impl FakeTarget {
    /// A fake target on `harness`.
    pub fn new(harness: Harness, config: FakeConfig) -> Self {
        Self { harness, config, state: Mutex::new(FakeState::default()) }
    }

    /// Script the next trigger call.
    pub fn push_trigger(&self, scripted: ScriptedTrigger) {
        self.state.lock().script.push_back(scripted);
    }

    /// How many runs it has started.
    pub fn started(&self) -> usize {
        self.state.lock().runs.len()
    }

    /// Apply the injected faults: an error, or the latency to add to the answer.
    fn gate(&self, method: Method, path: &str) -> Result<Duration> {
        if self.config.refuse_credentials {
            return Err(Error::Unauthenticated { message: "Invalid token provided.".into() });
        }
        if self.config.missing {
            return Err(Error::NotFound { message: "Project not found".into() });
        }
        let mut latency = Duration::ZERO;
        for fault in self.harness.faults().pick(&method, path) {
            match fault {
                Fault::RateLimit { retry_after } => {
                    return Err(Error::RateLimited { retry_after: retry_after.map(Duration::from_secs) });
                }
                Fault::ServerError { status } => return Err(Error::Unavailable { message: status.to_string() }),
                Fault::ResetBeforeProcessing => return Err(Error::maybe_sent("connection reset")),
                Fault::Latency(d) => latency += d,
                Fault::DropAfterProcessing => {}
                Fault::HangAfterProcessing(d) => latency += d,
            }
        }
        Ok(latency)
    }

    /// Run `body` behind the injected faults, retried like an adapter would.
    async fn call<T>(&self, method: Method, path: &str, kind: CallKind, body: impl FnMut() -> Result<T>) -> Result<T> {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        let body = parking_lot::Mutex::new(body);
        with_retry(&policy, kind, path, || async {
            // Like a real transport: the gateway's write-ahead mark runs just before a request
            // that may start a build "leaves".
            if kind == CallKind::StartsBuild {
                cigw_core::send_mark::before_send().await?;
            }
            let result = self.gate(method.clone(), path).and_then(|latency| (body.lock())().map(|v| (v, latency)));
            let (value, latency) = result?;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(value)
        })
        .await
    }

    fn start(&self, git_ref: GitRef, correlation: String, needs_approval: bool) -> (String, DateTime<Utc>) {
        let now = self.harness.clock().now();
        let mut st = self.state.lock();
        st.next_id += 1;
        let id = format!("fake-{}", st.next_id);
        st.runs.insert(
            id.clone(),
            FakeRun {
                git_ref,
                correlation: correlation.clone(),
                created_at: now,
                attempt: 1,
                canceled_at: None,
                needs_approval,
                decision: None,
            },
        );
        drop(st);
        self.harness.builds().record(&correlation);
        (id, now)
    }

    fn outcome(&self, id: String, attempt: u32, sent_at: DateTime<Utc>) -> TriggerOutcome {
        if self.config.returns_id {
            TriggerOutcome::Started(ProviderRunRef { attempt, ..ProviderRunRef::new(id) })
        } else {
            TriggerOutcome::AcceptedWithoutId { sent_at }
        }
    }

    fn state_of(&self, run: &FakeRun, now: DateTime<Utc>) -> (RunState, &'static str) {
        let started = run.created_at + cigw_core::time::span(self.config.queue_time);
        let mut ends = started + cigw_core::time::span(self.config.run_time);
        if let Some(at) = run.canceled_at {
            return if now >= at + chrono::Duration::seconds(1) {
                (RunState::Canceled, "canceled")
            } else {
                (RunState::Canceling, "canceling")
            };
        }
        if now < started {
            return (RunState::Queued, "queued");
        }
        if run.needs_approval {
            match run.decision {
                None => return (RunState::Blocked, "on_hold"),
                Some((Decision::Deny, _)) => return (RunState::Failed, "denied"),
                Some((Decision::Approve, at)) => ends = ends.max(at + chrono::Duration::seconds(2)),
            }
        }
        if now < ends {
            return (RunState::Running, "running");
        }
        if run.git_ref.branch.as_deref().is_some_and(|b| b.starts_with("fail-")) {
            (RunState::Failed, "failed")
        } else {
            (RunState::Succeeded, "success")
        }
    }

    fn run(&self, r: &ProviderRunRef) -> Result<FakeRun> {
        self.with_run(r, |run| Ok(run.clone()))
    }

    /// `f` applied to run `r` under the state lock, or `NotFound`.
    fn with_run<T>(&self, r: &ProviderRunRef, f: impl FnOnce(&mut FakeRun) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        let run =
            st.runs.get_mut(&r.id).ok_or_else(|| Error::NotFound { message: format!("run {} not found", r.id) })?;
        f(run)
    }
}

#[async_trait]
impl CiTarget for FakeTarget {
    fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    fn locator(&self) -> String {
        "fake/target".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            rerun: true,
            rerun_failed_only: false,
            approve: true,
            tag: true,
            pin_sha: true,
            parameters: true,
            trigger_returns_id: self.config.returns_id,
            callbacks: false,
            echoes_run_id: self.config.returns_id,
        }
    }

    async fn trigger(&self, spec: &TriggerSpec) -> Result<TriggerOutcome> {
        let needs_approval =
            spec.parameters.get("approval").is_some_and(|e| e.value == cigw_core::ParamValue::Bool(true));
        self.call(Method::POST, "/trigger", CallKind::StartsBuild, || {
            let scripted = self.state.lock().script.pop_front();
            match scripted {
                Some(ScriptedTrigger::Fail(e)) => Err(e),
                Some(ScriptedTrigger::NothingToRun(m)) => Ok(TriggerOutcome::NothingToRun { message: m }),
                Some(ScriptedTrigger::StartThenLose) => {
                    self.start(spec.git_ref.clone(), spec.run_id.clone(), needs_approval);
                    Err(Error::maybe_sent("connection closed before the answer"))
                }
                None => {
                    let (id, at) = self.start(spec.git_ref.clone(), spec.run_id.clone(), needs_approval);
                    Ok(self.outcome(id, 1, at))
                }
            }
        })
        .await
    }

    async fn status(&self, r: &ProviderRunRef) -> Result<RunStatus> {
        self.call(Method::GET, "/status", CallKind::Idempotent, || {
            let run = self.run(r)?;
            let now = self.harness.clock().now();
            let (state, raw) = self.state_of(&run, now);
            let mut status = RunStatus::new(state, raw);
            status.observed_at = now;
            status.created_at = Some(run.created_at);
            Ok(status)
        })
        .await
    }

    async fn cancel(&self, r: &ProviderRunRef) -> Result<()> {
        self.call(Method::POST, "/cancel", CallKind::Idempotent, || {
            let now = self.harness.clock().now();
            self.with_run(r, |run| {
                if run.canceled_at.is_none() {
                    run.canceled_at = Some(now);
                }
                Ok(())
            })
        })
        .await
    }

    async fn rerun(&self, r: &ProviderRunRef, _options: RerunOptions) -> Result<TriggerOutcome> {
        self.call(Method::POST, "/rerun", CallKind::StartsBuild, || {
            let run = self.run(r)?;
            if !self.state_of(&run, self.harness.clock().now()).0.is_terminal() {
                return Err(Error::Conflict { message: "the run has not finished".into() });
            }
            let (id, at) = self.start(run.git_ref.clone(), format!("{}:rerun", run.correlation), false);
            Ok(self.outcome(id, run.attempt, at))
        })
        .await
    }

    async fn approve(&self, r: &ProviderRunRef, decision: Decision) -> Result<()> {
        self.call(Method::POST, "/approve", CallKind::Idempotent, || {
            let now = self.harness.clock().now();
            self.with_run(r, |run| {
                if !run.needs_approval || run.decision.is_some() {
                    return Err(Error::Conflict { message: "the run is not waiting for approval".into() });
                }
                run.decision = Some((decision, now));
                Ok(())
            })
        })
        .await
    }

    async fn find_recent(&self, q: &RecentQuery) -> Result<Vec<RunCandidate>> {
        self.call(Method::GET, "/recent", CallKind::Idempotent, || {
            let st = self.state.lock();
            let (listing, now) = (self.harness.faults().listing(), self.harness.clock().now());
            let mut out: Vec<RunCandidate> = st
                .runs
                .iter()
                .filter(|(_, r)| r.created_at >= q.since && listing.shows(r.created_at, now))
                .filter(|(_, r)| q.branch.is_none() || r.git_ref.branch == q.branch)
                .filter(|(_, r)| q.tag.is_none() || r.git_ref.tag == q.tag)
                .filter(|(_, r)| q.sha.is_none() || r.git_ref.sha == q.sha)
                .map(|(id, r)| RunCandidate {
                    run_ref: ProviderRunRef { attempt: r.attempt, ..ProviderRunRef::new(id.clone()) },
                    branch: r.git_ref.branch.clone(),
                    tag: r.git_ref.tag.clone(),
                    sha: r.git_ref.sha.clone(),
                    created_at: r.created_at,
                    correlation_id: self.config.returns_id.then(|| r.correlation.clone()),
                })
                .collect();
            out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
            Ok(out)
        })
        .await
    }
}
