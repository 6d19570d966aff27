//! The engine against the in-memory fake target and a real SQLite store: every dispatch
//! outcome, reconciliation of ambiguous dispatches and crashes, correlation, cancel, rerun,
//! timeouts and the `cancel-previous` policy — always ending with one provider build per run.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::{DatabaseSettings, Problems, Settings};
use cigw_core::provider::ProviderAccount;
use cigw_core::{
    CiTarget, ConcurrencyPolicy, Error, GitRef, Parameters, ProviderKind, ProviderRunRef, RunState, TargetSpec,
};
use cigw_gateway::engine::Engine;
use cigw_gateway::state::AppState;
use cigw_sim::fake::{FakeConfig, FakeTarget, ScriptedTrigger};
use cigw_sim::{Fault, Harness, ScriptedFault};
use cigw_store::{CreateOutcome, EventFilter, NewRun, NewTrigger, RunRecord, Store};
use http::Method;

struct World {
    harness: Harness,
    fake: Arc<FakeTarget>,
    state: AppState,
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn spec(name: &str, max_duration: Option<Duration>, concurrency: ConcurrencyPolicy) -> TargetSpec {
    TargetSpec {
        name: name.into(),
        provider: ProviderKind::Circleci,
        account: "main".into(),
        default_branch: "main".into(),
        parameters: vec![],
        max_duration,
        concurrency,
        debounce: None,
        description: None,
    }
}

async fn world_with(config: FakeConfig, max_duration: Option<Duration>, concurrency: ConcurrencyPolicy) -> World {
    cigw_core::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("engine.db").display()),
        ..DatabaseSettings::default()
    };
    let store = cigw_store::open(&db).await.unwrap();
    store.migrate().await.unwrap();
    let harness = Harness::new();
    let fake = Arc::new(FakeTarget::new(harness.clone(), config));
    let mut catalog = Catalog::default();
    catalog
        .targets
        .insert("app".into(), ConfiguredTarget { spec: spec("app", max_duration, concurrency), target: fake.clone() });
    let mut settings = Settings::default();
    let t = &mut settings.timings;
    t.poll_initial = Duration::from_millis(10);
    t.poll_max = Duration::from_millis(30);
    t.lease = Duration::from_secs(5);
    t.reconcile_grace = Duration::from_millis(300);
    t.unconfirmed_deadline = Duration::from_millis(400);
    t.sweep_interval = Duration::from_millis(10);
    t.retry_max_delay = Duration::from_millis(20);
    let state = AppState::new(store, catalog, settings);
    let engine = Engine::new(state.clone());
    World { harness, fake, state, engine, _dir: dir }
}

async fn world(config: FakeConfig) -> World {
    world_with(config, None, ConcurrencyPolicy::Queue).await
}

impl World {
    fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    async fn submit(&self, git_ref: GitRef) -> RunRecord {
        let run_id = uuid::Uuid::now_v7().to_string();
        let trigger = NewTrigger {
            id: uuid::Uuid::now_v7().to_string(),
            source: "api".into(),
            requested_by: "test".into(),
            request: serde_json::json!({}),
            labels: serde_json::json!({}),
            created_at: Utc::now(),
            runs: vec![NewRun {
                id: run_id.clone(),
                target: "app".into(),
                provider: ProviderKind::Circleci,
                account: "main".into(),
                git_ref,
                parameters: Parameters::new(),
                chain_parent: None,
                rerun_of: None,
                rerun_failed_only: false,
                dispatch_at: Utc::now(),
            }],
            idempotency: None,
            chain_firing: None,
            schedule_slot: None,
            hook_delivery: None,
        };
        match self.store().create_trigger(trigger).await.unwrap() {
            CreateOutcome::Created(t) => t.runs.into_iter().next().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Tick the engine, moving simulated provider time along, until `done` holds.
    async fn drive(&self, run_id: &str, what: &str, done: impl Fn(&RunRecord) -> bool) -> RunRecord {
        for _ in 0..600 {
            self.engine.tick().await;
            let run = self.store().get_run(run_id).await.unwrap();
            if done(&run) {
                return run;
            }
            self.harness.clock().advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let run = self.store().get_run(run_id).await.unwrap();
        panic!("run never became {what}: {run:?}");
    }

    async fn finish(&self, run_id: &str) -> RunRecord {
        self.drive(run_id, "terminal", |r| r.state.is_terminal()).await
    }

    async fn event_kinds(&self, run_id: &str) -> Vec<String> {
        let filter = EventFilter { run_id: Some(run_id.into()), ..EventFilter::default() };
        self.store().events_after(0, &filter, 1000).await.unwrap().into_iter().map(|e| e.kind.to_string()).collect()
    }
}

#[tokio::test]
async fn a_run_is_dispatched_once_and_followed_to_success() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(w.harness.builds().count(&run.id), 1);
    assert!(done.provider_ref.is_some() && done.queued_at.is_some() && done.finished_at.is_some());
    let kinds = w.event_kinds(&run.id).await;
    assert_eq!(kinds.first().map(String::as_str), Some("created"));
    assert!(kinds.contains(&"dispatched".to_string()), "{kinds:?}");
    assert!(kinds.iter().filter(|k| *k == "state_changed").count() >= 2, "{kinds:?}");
}

#[tokio::test]
async fn a_failing_build_fails_and_nothing_to_run_is_skipped() {
    let w = world(FakeConfig::default()).await;
    let failing = w.submit(GitRef::branch("fail-lint")).await;
    assert_eq!(w.finish(&failing.id).await.state, RunState::Failed);
    w.fake.push_trigger(ScriptedTrigger::NothingToRun("ci skip".into()));
    let skipped = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&skipped.id).await;
    assert_eq!((done.state, done.message.as_deref()), (RunState::Skipped, Some("ci skip")));
}

#[tokio::test]
async fn a_refused_trigger_ends_in_error_with_the_providers_message() {
    let w = world(FakeConfig::default()).await;
    w.fake.push_trigger(ScriptedTrigger::Fail(Error::InvalidRequest { message: "Unexpected argument(s): x".into() }));
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Error);
    assert!(done.message.unwrap().contains("Unexpected argument(s): x"));
    assert_eq!(w.harness.builds().count(&run.id), 0);
}

#[tokio::test]
async fn a_trigger_that_was_not_sent_is_sent_again() {
    let w = world(FakeConfig::default()).await;
    // More refusals than the adapter's own retries absorb, so the dispatcher must send again.
    for _ in 0..7 {
        w.fake.push_trigger(ScriptedTrigger::Fail(Error::not_sent("connection refused")));
    }
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(w.harness.builds().count(&run.id), 1);
    assert!(done.dispatch_attempts >= 2);
    assert!(!w.event_kinds(&run.id).await.contains(&"possible_duplicate".to_string()));
}

#[tokio::test]
async fn an_ambiguous_trigger_is_reconciled_not_resent() {
    // Codeship-like (no correlation id echoed) so matching relies on ref and time.
    for returns_id in [true, false] {
        let w = world(FakeConfig { returns_id, ..FakeConfig::default() }).await;
        w.fake.push_trigger(ScriptedTrigger::StartThenLose);
        let run = w.submit(GitRef::branch("main")).await;
        let done = w.finish(&run.id).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:?}");
        assert_eq!(w.harness.builds().count(&run.id), 1, "exactly one build (returns_id {returns_id})");
        let kinds = w.event_kinds(&run.id).await;
        assert!(kinds.contains(&"reconciled".to_string()), "{kinds:?}");
        assert!(!kinds.contains(&"possible_duplicate".to_string()), "{kinds:?}");
    }
}

#[tokio::test]
async fn an_ambiguous_trigger_with_no_build_is_sent_once_more_and_reported() {
    let w = world(FakeConfig::default()).await;
    // The connection drops before the provider processed anything: no build exists.
    w.harness
        .faults()
        .push(ScriptedFault::new(Fault::ResetBeforeProcessing).method(Method::POST).path_contains("/trigger"));
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(w.harness.builds().count(&run.id), 1);
    assert!(w.event_kinds(&run.id).await.contains(&"possible_duplicate".to_string()));
}

#[tokio::test]
async fn a_crash_during_dispatch_is_reconciled_after_the_lease_expires() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    // A dispatcher claims the run, sends the trigger and dies before recording the answer.
    let now = Utc::now();
    let claimed =
        w.store().claim_dispatch("dead-process", now, now + chrono::Duration::milliseconds(50), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    w.store().mark_sending(&run.id, "dead-process", now).await.unwrap();
    let spec = cigw_core::TriggerSpec {
        run_id: run.id.clone(),
        git_ref: run.git_ref.clone(),
        parameters: Parameters::new(),
        requested_by: "test".into(),
    };
    cigw_core::CiTarget::trigger(w.fake.as_ref(), &spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(w.harness.builds().count(&run.id), 1, "the crashed attempt's build was adopted");
    assert!(w.event_kinds(&run.id).await.contains(&"reconciled".to_string()));
}

#[tokio::test]
async fn a_crash_before_the_send_is_sent_once_without_a_reconciliation() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    // A dispatcher claims the run and dies before it marked (or made) any send.
    let now = Utc::now();
    let claimed =
        w.store().claim_dispatch("dead-process", now, now + chrono::Duration::milliseconds(50), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.maybe_sent_count, 0, "nothing was sent before the crash: {done:?}");
    assert_eq!(w.harness.builds().count(&run.id), 1);
    let kinds = w.event_kinds(&run.id).await;
    assert!(
        !kinds.contains(&"reconciled".to_string()) && !kinds.contains(&"possible_duplicate".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn accepted_without_id_is_correlated_then_followed() {
    let w = world(FakeConfig { returns_id: false, ..FakeConfig::default() }).await;
    let first = w.submit(GitRef::branch("main")).await;
    let second = w.submit(GitRef::branch("main")).await;
    let a = w.finish(&first.id).await;
    let b = w.finish(&second.id).await;
    assert_eq!((a.state, b.state), (RunState::Succeeded, RunState::Succeeded));
    assert_ne!(a.provider_ref.unwrap().id, b.provider_ref.unwrap().id, "each run owns its own build");
    assert!(!a.unconfirmed && !b.unconfirmed);
}

#[tokio::test]
async fn accepted_without_a_build_ever_appearing_ends_in_error() {
    let w = world(FakeConfig { returns_id: false, ..FakeConfig::default() }).await;
    w.harness.faults().push(
        ScriptedFault::new(Fault::RateLimit { retry_after: Some(0) })
            .method(Method::GET)
            .path_contains("/recent")
            .times(100_000),
    );
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Error);
    assert!(done.message.unwrap().contains("no build appeared"), "{:?}", w.store().get_run(&run.id).await);
}

#[tokio::test]
async fn cancel_before_dispatch_sends_nothing() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Canceled);
    assert_eq!(w.fake.started(), 0);
}

#[tokio::test]
async fn cancel_of_a_running_run_reaches_the_provider() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.drive(&run.id, "running", |r| r.state == RunState::Running).await;
    w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Canceled);
    let kinds = w.event_kinds(&run.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "cancel_sent").count(), 1, "{kinds:?}");
}

#[tokio::test]
async fn a_rerun_starts_a_new_build_from_the_original() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("fail-x")).await;
    let original = w.finish(&run.id).await;
    assert_eq!(original.state, RunState::Failed);
    let rerun = NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        target: "app".into(),
        provider: ProviderKind::Circleci,
        account: "main".into(),
        git_ref: original.git_ref.clone(),
        parameters: Parameters::new(),
        chain_parent: None,
        rerun_of: Some(original.id.clone()),
        rerun_failed_only: false,
        dispatch_at: Utc::now(),
    };
    let rerun = w.store().create_rerun(&original.trigger_id, rerun, Utc::now()).await.unwrap();
    let done = w.finish(&rerun.id).await;
    assert_eq!(done.state, RunState::Failed);
    assert_ne!(done.provider_ref.unwrap().id, original.provider_ref.unwrap().id);
    assert_eq!(w.fake.started(), 2);
}

#[tokio::test]
async fn runs_past_the_maximum_duration_are_canceled_and_end_in_error() {
    let w = world_with(
        FakeConfig { run_time: Duration::from_secs(3600), ..FakeConfig::default() },
        Some(Duration::from_millis(300)),
        ConcurrencyPolicy::Queue,
    )
    .await;
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Error);
    assert!(done.message.unwrap().starts_with("timed out after"));
    assert!(w.event_kinds(&run.id).await.contains(&"timed_out".to_string()));
}

#[tokio::test]
async fn cancel_previous_cancels_older_runs_of_the_same_branch() {
    let w = world_with(
        FakeConfig { run_time: Duration::from_secs(3600), ..FakeConfig::default() },
        None,
        ConcurrencyPolicy::CancelPrevious,
    )
    .await;
    let old = w.submit(GitRef::branch("main")).await;
    w.drive(&old.id, "running", |r| r.state == RunState::Running).await;
    let other_branch = w.submit(GitRef::branch("dev")).await;
    w.drive(&other_branch.id, "running", |r| r.state == RunState::Running).await;
    let new = w.submit(GitRef::branch("main")).await;
    let canceled = w.finish(&old.id).await;
    assert_eq!(canceled.state, RunState::Canceled);
    let new = w.drive(&new.id, "running", |r| r.state == RunState::Running).await;
    assert!(!new.cancel_requested);
    assert!(!w.store().get_run(&other_branch.id).await.unwrap().cancel_requested);
}

#[tokio::test]
async fn a_removed_target_ends_its_pending_runs_in_error() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    let state = AppState::new(w.store().clone(), Catalog::default(), (*w.state.settings).clone());
    let engine = Engine::new(state);
    engine.tick().await;
    let done = w.store().get_run(&run.id).await.unwrap();
    assert_eq!(done.state, RunState::Error);
    assert_eq!(done.message.as_deref(), Some("target `app` is no longer configured"));
}

/// An account whose follow-only target is the fake itself: the fake finds a run by its id alone.
#[derive(Debug)]
struct FakeAccount(Arc<FakeTarget>);

#[async_trait::async_trait]
impl ProviderAccount for FakeAccount {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn name(&self) -> &str {
        "main"
    }

    fn describe(&self) -> String {
        "fake account".into()
    }

    fn target(
        &self,
        _spec: &TargetSpec,
        _path: &str,
        _table: &serde_json::Map<String, serde_json::Value>,
        _problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>> {
        Some(self.0.clone())
    }

    async fn check_online(&self) -> cigw_core::Result<()> {
        Ok(())
    }

    fn share_budget(&self, _budget: Arc<dyn cigw_core::shared_budget::SharedBudget>) {}

    fn follow_target(&self, _target_name: &str, _run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        Some(self.0.clone())
    }
}

impl World {
    /// An engine over the same store whose configuration lost target `app` (and, unless
    /// `keep_account`, its account).
    fn without_target(&self, keep_account: bool) -> Engine {
        let mut catalog = Catalog::default();
        if keep_account {
            catalog.accounts.insert((ProviderKind::Circleci, "main".into()), Arc::new(FakeAccount(self.fake.clone())));
        }
        Engine::new(AppState::new(self.store().clone(), catalog, (*self.state.settings).clone()))
    }

    /// Like `drive`, with `engine`.
    async fn drive_with(&self, engine: &Engine, run_id: &str, done: impl Fn(&RunRecord) -> bool) -> RunRecord {
        for _ in 0..600 {
            engine.tick().await;
            let run = self.store().get_run(run_id).await.unwrap();
            if done(&run) {
                return run;
            }
            self.harness.clock().advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("run never got there: {:?}", self.store().get_run(run_id).await);
    }
}

#[tokio::test]
async fn a_running_run_of_a_removed_target_is_followed_while_its_account_stays() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.drive(&run.id, "running", |r| r.state == RunState::Running).await;
    let engine = w.without_target(true);
    let done = w.drive_with(&engine, &run.id, |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(w.fake.started(), 1);
}

#[tokio::test]
async fn a_cancel_of_a_run_of_a_removed_target_still_reaches_the_provider() {
    let w = world(FakeConfig { run_time: Duration::from_secs(3600), ..FakeConfig::default() }).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.drive(&run.id, "running", |r| r.state == RunState::Running).await;
    let engine = w.without_target(true);
    w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    let done = w.drive_with(&engine, &run.id, |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Canceled, "{done:?}");
    let kinds = w.event_kinds(&run.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "cancel_sent").count(), 1, "{kinds:?}");
}

#[tokio::test]
async fn a_running_run_ends_in_error_when_its_target_and_account_are_removed() {
    let w = world(FakeConfig::default()).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.drive(&run.id, "running", |r| r.state == RunState::Running).await;
    let engine = w.without_target(false);
    let done = w.drive_with(&engine, &run.id, |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Error, "{done:?}");
    assert_eq!(
        done.message.as_deref(),
        Some("target `app` and its circleci account `main` were removed from the configuration")
    );
}

#[tokio::test]
async fn an_unconfirmed_run_of_a_removed_target_ends_in_error() {
    let w = world(FakeConfig { returns_id: false, ..FakeConfig::default() }).await;
    let run = w.submit(GitRef::branch("main")).await;
    w.drive(&run.id, "unconfirmed", |r| r.unconfirmed).await;
    let engine = w.without_target(true);
    let done = w.drive_with(&engine, &run.id, |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Error, "{done:?}");
    assert!(done.message.unwrap().contains("removed from the configuration before its circleci build was identified"));
}

#[tokio::test]
async fn the_running_engine_prunes_what_retention_no_longer_keeps() {
    // Instant builds, so the fake provider's clock (which the store's finish time follows)
    // stays within a second or two of real time.
    let instant = FakeConfig { queue_time: Duration::ZERO, run_time: Duration::ZERO, ..FakeConfig::default() };
    let w = world(instant).await;
    let run = w.submit(GitRef::branch("main")).await;
    let done = w.finish(&run.id).await;
    assert_eq!(done.state, RunState::Succeeded);
    let mut settings = (*w.state.settings).clone();
    settings.retention.runs = Duration::ZERO;
    settings.timings.prune_interval = Duration::from_secs(1);
    let state = AppState::new(w.store().clone(), Catalog::default(), settings);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(Engine::new(state).run(stopped));
    let mut gone = false;
    for _ in 0..300 {
        if w.store().get_run(&run.id).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    engine.await.unwrap();
    assert!(gone, "a finished run past its retention is pruned by the running engine");
}

#[tokio::test]
async fn a_slow_provider_call_does_not_hold_up_other_runs() {
    let w = world(FakeConfig::default()).await;
    // The first trigger answers only after three seconds.
    w.harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_secs(3))).method(Method::POST).path_contains("/trigger"),
    );
    let slow = w.submit(GitRef::branch("slow")).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(w.engine.clone().run(stopped));
    for _ in 0..100 {
        if w.store().get_run(&slow.id).await.unwrap().lease_owner.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let quick = w.submit(GitRef::branch("quick")).await;
    w.state.wake_engine();
    let mut dispatched = false;
    for _ in 0..100 {
        if w.store().get_run(&quick.id).await.unwrap().state != RunState::Pending {
            dispatched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let slow_state = w.store().get_run(&slow.id).await.unwrap().state;
    stop.send(true).unwrap();
    engine.await.unwrap();
    assert!(dispatched, "the quick run was dispatched while the slow call was still waiting");
    assert_eq!(slow_state, RunState::Pending, "the slow call had not answered yet");
    assert_eq!(w.store().get_run(&slow.id).await.unwrap().state, RunState::Queued, "shutdown waited for it");
}

#[tokio::test]
async fn a_call_longer_than_the_lease_keeps_its_run_by_renewing_the_lease() {
    let w = world(FakeConfig::default()).await;
    let mut settings = (*w.state.settings).clone();
    settings.timings.lease = Duration::from_millis(500);
    let state = AppState::new(w.store().clone(), (*w.state.catalog).clone(), settings);
    let engine = Engine::new(state);
    // The provider starts the build at once but answers only after the lease would have run out.
    w.harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_millis(900))).method(Method::POST).path_contains("/trigger"),
    );
    let run = w.submit(GitRef::branch("main")).await;
    engine.tick().await;
    let after = w.store().get_run(&run.id).await.unwrap();
    assert!(after.provider_ref.is_some(), "the slow answer was recorded: {after:?}");
    assert_eq!(after.maybe_sent_count, 0, "a renewed lease is not a crash: {after:?}");
    assert_eq!(w.harness.builds().count(&run.id), 1);
    assert!(!w.event_kinds(&run.id).await.contains(&"reconciled".to_string()));
}

#[tokio::test]
async fn work_whose_lease_is_lost_is_abandoned_and_reconciled_not_resent() {
    let w = world(FakeConfig::default()).await;
    let mut settings = (*w.state.settings).clone();
    settings.timings.lease = Duration::from_millis(500);
    let state = AppState::new(w.store().clone(), (*w.state.catalog).clone(), settings);
    let engine = Engine::new(state);
    // The provider starts the build at once but answers late; meanwhile the lease is taken away
    // (as when the store cannot confirm it, or another replica claims the run).
    w.harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_millis(900))).method(Method::POST).path_contains("/trigger"),
    );
    let run = w.submit(GitRef::branch("main")).await;
    let store = w.store().clone();
    let steal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Another replica whose clock says the lease is over claims the run, then lets it go.
        let later = chrono::Utc::now() + chrono::Duration::seconds(10);
        let stolen = store.claim_dispatch("thief", later, later + chrono::Duration::seconds(1), 10).await.unwrap();
        assert_eq!(stolen.len(), 1);
        store.release_leases("thief").await.unwrap();
    });
    let started = std::time::Instant::now();
    engine.tick().await;
    steal.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(850),
        "abandoned once the lease was lost: {:?}",
        started.elapsed()
    );
    for _ in 0..600 {
        engine.tick().await;
        if w.store().get_run(&run.id).await.unwrap().state.is_terminal() {
            break;
        }
        w.harness.clock().advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = w.store().get_run(&run.id).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(w.harness.builds().count(&run.id), 1, "the abandoned trigger's build was adopted, not sent again");
    assert!(w.event_kinds(&run.id).await.contains(&"reconciled".to_string()));
}
