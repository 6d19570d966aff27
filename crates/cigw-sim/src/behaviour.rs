//! The behaviour suite every adapter passes against its simulator, written once.
//!
//! An adapter's `tests/behaviour.rs` implements [`Fixture`] and invokes [`behaviour_tests!`],
//! which generates one `#[tokio::test]` per scenario below.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cigw_core::{
    CiTarget, Decision, Error, GitRef, Parameters, ProviderRunRef, RecentQuery, RerunOptions, RunState, RunStatus,
    TriggerOutcome, TriggerSpec,
};

use crate::harness::{Fault, FaultConfig, Harness, ScriptedFault};

/// What a scenario needs from an adapter and its simulator.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The harness the simulator runs on (its clock is advanced between polls).
    fn harness(&self) -> &Harness;
    /// A target whose runs succeed.
    fn target(&self) -> Arc<dyn CiTarget>;
    /// A ref whose runs succeed.
    fn ok_ref(&self) -> GitRef {
        GitRef::branch("main")
    }
    /// A ref whose runs fail.
    fn failing_ref(&self) -> GitRef {
        GitRef::branch("fail-tests")
    }
    /// Ref and parameters whose run waits for approval; `None` when the provider cannot.
    fn approval(&self) -> Option<(GitRef, Parameters)>;
    /// The same target with credentials the simulator refuses.
    fn unauthenticated_target(&self) -> Arc<dyn CiTarget>;
    /// A target naming a provider object the simulator does not have.
    fn missing_target(&self) -> Arc<dyn CiTarget>;
    /// Simulated time between two polls.
    fn poll_step(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// A trigger spec with a fresh run id.
pub fn spec(git_ref: GitRef, parameters: Parameters) -> TriggerSpec {
    TriggerSpec {
        run_id: uuid::Uuid::now_v7().to_string(),
        git_ref,
        parameters,
        requested_by: "behaviour-suite".into(),
    }
}

/// Turn a trigger outcome into a run ref, correlating `AcceptedWithoutId` through `find_recent`
/// the way the gateway does: newest candidate of the same ref created after the send, not yet
/// claimed.
pub async fn resolve<F: Fixture>(
    f: &F,
    target: &dyn CiTarget,
    git_ref: &GitRef,
    outcome: TriggerOutcome,
    claimed: &BTreeSet<(String, u32)>,
) -> ProviderRunRef {
    match outcome {
        TriggerOutcome::Started(r) => r,
        TriggerOutcome::NothingToRun { message } => panic!("expected a run, got nothing to run: {message}"),
        TriggerOutcome::AcceptedWithoutId { sent_at } => {
            let query = RecentQuery {
                since: sent_at - chrono::Duration::seconds(30),
                branch: git_ref.branch.clone(),
                tag: git_ref.tag.clone(),
                sha: git_ref.sha.clone(),
            };
            for _ in 0..30 {
                let candidates = target.find_recent(&query).await.expect("find_recent");
                if let Some(c) =
                    candidates.into_iter().find(|c| !claimed.contains(&(c.run_ref.id.clone(), c.run_ref.attempt)))
                {
                    return c.run_ref;
                }
                f.harness().clock().advance(Duration::from_secs(1));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("no candidate appeared for an accepted trigger of {}", git_ref.describe())
        }
    }
}

/// Poll until `done(state)` or give up after many simulated polls.
pub async fn wait_until<F: Fixture>(
    f: &F,
    target: &dyn CiTarget,
    run: &ProviderRunRef,
    what: &str,
    done: impl Fn(RunState) -> bool,
) -> RunStatus {
    let mut last = None;
    for _ in 0..300 {
        let status = target.status(run).await.unwrap_or_else(|e| panic!("status of {} failed: {e}", run.id));
        if done(status.state) {
            return status;
        }
        last = Some(status.state);
        f.harness().clock().advance(f.poll_step());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("run {} never became {what}; last state {last:?}", run.id)
}

async fn start<F: Fixture>(f: &F, target: &dyn CiTarget, git_ref: GitRef, parameters: Parameters) -> ProviderRunRef {
    let outcome = target.trigger(&spec(git_ref.clone(), parameters)).await.expect("trigger");
    resolve(f, target, &git_ref, outcome, &BTreeSet::new()).await
}

/// A triggered run reaches `succeeded`, with exactly one build started.
pub async fn trigger_reaches_success<F: Fixture>(f: &F) {
    let target = f.target();
    let before = f.harness().builds().total();
    let run = start(f, target.as_ref(), f.ok_ref(), Parameters::new()).await;
    let status = wait_until(f, target.as_ref(), &run, "terminal", RunState::is_terminal).await;
    assert_eq!(status.state, RunState::Succeeded, "{status:?}");
    assert!(!status.raw_status.is_empty());
    assert_eq!(f.harness().builds().total(), before + 1, "exactly one build started");
}

/// A run of the failing ref ends `failed`.
pub async fn failing_ref_fails<F: Fixture>(f: &F) {
    let target = f.target();
    let run = start(f, target.as_ref(), f.failing_ref(), Parameters::new()).await;
    let status = wait_until(f, target.as_ref(), &run, "terminal", RunState::is_terminal).await;
    assert_eq!(status.state, RunState::Failed, "{status:?}");
}

/// A cancelled run ends `canceled`.
pub async fn cancel_ends_canceled<F: Fixture>(f: &F) {
    let target = f.target();
    let run = start(f, target.as_ref(), f.ok_ref(), Parameters::new()).await;
    wait_until(f, target.as_ref(), &run, "running", |s| s == RunState::Running).await;
    target.cancel(&run).await.expect("cancel");
    let status = wait_until(f, target.as_ref(), &run, "terminal", RunState::is_terminal).await;
    assert_eq!(status.state, RunState::Canceled, "{status:?}");
}

/// A finished run can run again and the rerun reaches a terminal state.
pub async fn rerun_runs_again<F: Fixture>(f: &F) {
    let target = f.target();
    let git_ref = f.failing_ref();
    let run = start(f, target.as_ref(), git_ref.clone(), Parameters::new()).await;
    wait_until(f, target.as_ref(), &run, "terminal", RunState::is_terminal).await;
    let caps = target.capabilities();
    let result = target.rerun(&run, RerunOptions { failed_only: caps.rerun_failed_only }).await;
    if !caps.rerun {
        assert!(matches!(result, Err(Error::Unsupported { .. })), "{result:?}");
        return;
    }
    let claimed = BTreeSet::from([(run.id.clone(), run.attempt)]);
    let again = resolve(f, target.as_ref(), &git_ref, result.expect("rerun"), &claimed).await;
    assert_ne!((again.id.clone(), again.attempt), (run.id.clone(), run.attempt), "a rerun is a new run");
    let status = wait_until(f, target.as_ref(), &again, "terminal", RunState::is_terminal).await;
    assert_eq!(status.state, RunState::Failed, "the failing ref fails again: {status:?}");
}

/// The gateway's write-ahead mark runs once before a trigger's request leaves, and a mark that
/// fails (the gateway could not record it) keeps the request from leaving: no build starts.
pub async fn build_starting_requests_are_marked_before_they_leave<F: Fixture>(f: &F) {
    let target = f.target();
    let marks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = marks.clone();
    let counting: cigw_core::send_mark::Hook = Arc::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    });
    let before = f.harness().builds().total();
    let outcome = cigw_core::send_mark::scope(counting, target.trigger(&spec(f.ok_ref(), Parameters::new())))
        .await
        .expect("trigger");
    assert!(!matches!(outcome, TriggerOutcome::NothingToRun { .. }), "{outcome:?}");
    assert_eq!(marks.load(std::sync::atomic::Ordering::SeqCst), 1, "one mark for one request");
    assert_eq!(f.harness().builds().total(), before + 1);

    let refusing: cigw_core::send_mark::Hook =
        Arc::new(|| Box::pin(async { Err(Error::not_sent("the send could not be recorded")) }));
    let refused = cigw_core::send_mark::scope(refusing, target.trigger(&spec(f.ok_ref(), Parameters::new()))).await;
    assert!(matches!(refused, Err(Error::NotSent { .. })), "{refused:?}");
    assert_eq!(f.harness().builds().total(), before + 1, "nothing was sent without its mark");
}

/// A run waiting for approval is blocked, then approved runs to success and denied does not.
pub async fn approval_gates_the_run<F: Fixture>(f: &F) {
    let target = f.target();
    let Some((git_ref, parameters)) = f.approval() else {
        assert!(!target.capabilities().approve);
        let run = start(f, target.as_ref(), f.ok_ref(), Parameters::new()).await;
        let result = target.approve(&run, Decision::Approve).await;
        assert!(matches!(result, Err(Error::Unsupported { .. })), "{result:?}");
        return;
    };
    assert!(target.capabilities().approve);
    let approved = start(f, target.as_ref(), git_ref.clone(), parameters.clone()).await;
    wait_until(f, target.as_ref(), &approved, "blocked", |s| s == RunState::Blocked).await;
    target.approve(&approved, Decision::Approve).await.expect("approve");
    let status = wait_until(f, target.as_ref(), &approved, "terminal", RunState::is_terminal).await;
    assert_eq!(status.state, RunState::Succeeded, "{status:?}");

    let denied = start(f, target.as_ref(), git_ref, parameters).await;
    wait_until(f, target.as_ref(), &denied, "blocked", |s| s == RunState::Blocked).await;
    target.approve(&denied, Decision::Deny).await.expect("deny");
    let status = wait_until(f, target.as_ref(), &denied, "terminal", RunState::is_terminal).await;
    assert!(matches!(status.state, RunState::Failed | RunState::Canceled), "{status:?}");
}

/// `find_recent` lists a run just triggered on the same branch.
pub async fn find_recent_lists_the_run<F: Fixture>(f: &F) {
    let target = f.target();
    let since = f.harness().clock().now() - chrono::Duration::seconds(5);
    let git_ref = GitRef::branch(format!("recent-{}", uuid::Uuid::new_v4().simple()));
    let spec = spec(git_ref.clone(), Parameters::new());
    let outcome = target.trigger(&spec).await.expect("trigger");
    let run = resolve(f, target.as_ref(), &git_ref, outcome, &BTreeSet::new()).await;
    let query = RecentQuery { since, branch: git_ref.branch.clone(), tag: None, sha: None };
    let candidates = target.find_recent(&query).await.expect("find_recent");
    let found = candidates.iter().find(|c| c.run_ref.id == run.id).expect("the run is among the candidates");
    assert_eq!(found.branch, git_ref.branch);
    if let Some(c) = &found.correlation_id {
        assert_eq!(c, &spec.run_id, "an echoed correlation id is the gateway run id");
    }
}

/// Refused credentials map to `Unauthenticated`, a missing object to `NotFound`.
pub async fn errors_map_to_the_taxonomy<F: Fixture>(f: &F) {
    let result = f.unauthenticated_target().trigger(&spec(f.ok_ref(), Parameters::new())).await;
    assert!(matches!(result, Err(Error::Unauthenticated { .. })), "bad credentials: {result:?}");
    let result = f.missing_target().trigger(&spec(f.ok_ref(), Parameters::new())).await;
    assert!(matches!(result, Err(Error::NotFound { .. })), "missing object: {result:?}");
}

/// A rate limit is retried after `Retry-After`; a persistent one is reported as `RateLimited`.
pub async fn rate_limits_are_retried_then_reported<F: Fixture>(f: &F) {
    let target = f.target();
    let run = start(f, target.as_ref(), f.ok_ref(), Parameters::new()).await;
    f.harness().faults().push(ScriptedFault::new(Fault::RateLimit { retry_after: Some(0) }));
    target.status(&run).await.expect("a single rate limit is retried");
    f.harness().faults().set(FaultConfig { rate_limit: 1.0, retry_after: Some(0), ..Default::default() });
    let result = target.status(&run).await;
    f.harness().faults().clear();
    assert!(matches!(result, Err(Error::RateLimited { .. })), "{result:?}");
}

/// Generate one `#[tokio::test]` per scenario; `$make` is an expression that evaluates to a
/// future of the fixture (e.g. `fixture()` for an `async fn fixture() -> MyFixture`).
#[macro_export]
macro_rules! behaviour_tests {
    ($make:expr) => {
        $crate::behaviour_tests!(@each $make;
            trigger_reaches_success,
            failing_ref_fails,
            cancel_ends_canceled,
            rerun_runs_again,
            approval_gates_the_run,
            find_recent_lists_the_run,
            errors_map_to_the_taxonomy,
            rate_limits_are_retried_then_reported,
            build_starting_requests_are_marked_before_they_leave
        );
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make.await;
                $crate::behaviour::$name(&fixture).await;
            }
        )*
    };
}
