//! The engine with the real Codeship adapter against its simulator misbehaving (issue 12):
//! triggers that take effect but never answer, builds that lists never (or only late) show,
//! rate limits longer than a lease, bursts of id-less triggers, and refresh floods. Counts come
//! from the simulator's recorder and build counter, not from cigw's own view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cigw_core::catalog::Catalog;
use cigw_core::config::{DatabaseSettings, Problems, Settings};
use cigw_core::provider::ProviderFactory;
use cigw_core::{GitRef, Parameters, ProviderKind, RunState};
use cigw_gateway::engine::Engine;
use cigw_gateway::state::AppState;
use cigw_sim::codeship::{
    CodeshipSim, CodeshipSimConfig, DEFAULT_EMAIL, DEFAULT_PASSWORD, ORGANIZATION_UUID, PRO_PROJECT_UUID,
};
use cigw_sim::{Fault, Harness, Listing, ScriptedFault, SimServer};
use cigw_store::{CreateOutcome, EventFilter, EventRecord, NewRun, NewTrigger, RunRecord, Store};
use http::Method;
use serde_json::{Value, json};

/// How long the simulator holds a processed trigger before hanging up: past the client timeout.
const HANG: Duration = Duration::from_secs(2);

struct World {
    harness: Harness,
    sim: CodeshipSim,
    server: SimServer,
    state: AppState,
    engine: Engine,
    _dir: tempfile::TempDir,
}

/// A gateway with one Codeship Pro target `app` on the simulator; `account` and `timings` are
/// merged over the test defaults.
async fn world(sim_config: CodeshipSimConfig, account: Value, timings: Value) -> World {
    cigw_core::telemetry::init_for_tests();
    let harness = Harness::running(1.0);
    let (sim, server) = CodeshipSim::start(&harness, sim_config).await;
    let mut account_table = json!({
        "base_url": format!("{}/v2", server.url()),
        "email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD, "organization": "Acme",
        "timeout": "500ms", "rate_limit": "200/s", "concurrency": 8,
        "retry_min_delay": "10ms", "retry_max_delay": "50ms"
    });
    merge(&mut account_table, account);
    let mut timings_table = json!({
        "poll_initial": "50ms", "poll_max": "200ms", "lease": "5s", "sweep_interval": "20ms",
        "reconcile_grace": "1s", "unconfirmed_deadline": "30s"
    });
    merge(&mut timings_table, timings);
    let raw = json!({
        "providers": {"codeship": {"sim": account_table}},
        "targets": {"app": {"provider": "codeship", "account": "sim",
                            "project_uuid": PRO_PROJECT_UUID, "project_type": "pro"}},
        "timings": timings_table,
    });
    let mut problems = Problems::default();
    let mut settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(cigw_codeship::CodeshipFactory)];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    let dir = tempfile::tempdir().unwrap();
    settings.database = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("e.db").display()),
        ..DatabaseSettings::default()
    };
    settings.auth.admin_token = Some(cigw_core::secret::SecretSetting::new(ADMIN));
    let store = cigw_store::open(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::new(store, catalog, settings);
    let engine = Engine::new(state.clone());
    World { harness, sim, server, state, engine, _dir: dir }
}

const ADMIN: &str = "cigw_hostileadmintokenhostileadmintokenhostileadmin";

fn merge(base: &mut Value, over: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), over) {
        b.extend(o);
    }
}

/// Builds that finish quickly, and are listed with `queued_at` set almost at once.
fn quick_builds() -> CodeshipSimConfig {
    CodeshipSimConfig {
        rate_limit_per_minute: 100_000,
        initiated_for: Duration::from_millis(100),
        waiting_for: Duration::from_millis(300),
        testing_for: Duration::from_secs(2),
        ..CodeshipSimConfig::default()
    }
}

impl World {
    fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    async fn submit(&self, branch: &str) -> RunRecord {
        let trigger = NewTrigger {
            id: uuid::Uuid::now_v7().to_string(),
            source: "api".into(),
            requested_by: "test".into(),
            request: json!({}),
            labels: json!({}),
            created_at: Utc::now(),
            runs: vec![NewRun {
                id: uuid::Uuid::now_v7().to_string(),
                target: "app".into(),
                provider: ProviderKind::Codeship,
                account: "sim".into(),
                git_ref: GitRef::branch(branch),
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

    /// Tick until `done` holds for the run (generous: the machine may be loaded).
    async fn drive(&self, run_id: &str, what: &str, done: impl Fn(&RunRecord) -> bool) -> RunRecord {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            self.engine.tick().await;
            let run = self.store().get_run(run_id).await.unwrap();
            if done(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run never became {what}: {:?}", self.store().get_run(run_id).await.unwrap());
    }

    async fn events(&self, run_id: &str) -> Vec<EventRecord> {
        let filter = EventFilter { run_id: Some(run_id.into()), ..EventFilter::default() };
        self.store().events_after(0, &filter, 1000).await.unwrap()
    }

    /// Trigger POSTs (`…/builds`) the simulator received.
    fn trigger_posts(&self) -> usize {
        self.harness
            .recorder()
            .matching(&Method::POST, "/builds")
            .iter()
            .filter(|r| r.path.ends_with("/builds"))
            .count()
    }

    /// Build list GETs (`…/builds`) the simulator received.
    fn list_calls(&self) -> usize {
        self.harness.recorder().matching(&Method::GET, "/builds").iter().filter(|r| r.path.ends_with("/builds")).count()
    }

    /// Status GETs of one build.
    fn status_calls(&self, build: &str) -> usize {
        let path = format!("/organizations/{ORGANIZATION_UUID}/projects/{PRO_PROJECT_UUID}/builds/{build}");
        self.harness.recorder().requests().iter().filter(|r| r.method == Method::GET && r.path.ends_with(&path)).count()
    }

    /// Every trigger POST is processed, then left unanswered past the client timeout.
    fn triggers_hang(&self, times: usize) {
        self.harness.faults().push(
            ScriptedFault::new(Fault::HangAfterProcessing(HANG))
                .method(Method::POST)
                .path_contains("/builds")
                .times(times),
        );
    }
}

fn retries_with_maybe_sent(events: &[EventRecord]) -> Vec<&EventRecord> {
    events.iter().filter(|e| e.kind == "dispatch_retry" && e.data["maybe_sent"] == json!(true)).collect()
}

#[tokio::test]
async fn an_accepted_trigger_that_never_answers_nor_lists_is_sent_at_most_max_unconfirmed_sends_times() {
    let w = world(quick_builds(), json!({}), json!({})).await;
    w.triggers_hang(100);
    w.harness.faults().set_listing(Listing::HiddenSince(w.harness.clock().now()));
    let run = w.submit("main").await;
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;

    assert_eq!(done.state, RunState::Error, "{done:?}");
    let message = done.message.clone().unwrap_or_default();
    assert!(message.contains("builds may exist at the provider"), "{message}");
    assert!(message.contains("branch `main`") && message.contains(PRO_PROJECT_UUID), "{message}");
    assert!(message.contains("created between"), "{message}");
    // Counted at the simulator: two POSTs (the default `max_unconfirmed_sends`), both processed.
    assert_eq!(w.trigger_posts(), 2, "never more POSTs than timings.max_unconfirmed_sends");
    assert_eq!(w.harness.builds().total(), 2);
    assert_eq!(done.maybe_sent_count, 2);

    let events = w.events(&run.id).await;
    let sends = retries_with_maybe_sent(&events);
    assert_eq!(sends.len(), 2, "{events:#?}");
    let duplicates: Vec<_> = events.iter().filter(|e| e.kind == "possible_duplicate").collect();
    assert_eq!(duplicates.len(), 1, "one resend, reported once");
    let duplicate = duplicates[0];
    assert!(sends[0].id < duplicate.id && duplicate.id < sends[1].id, "reported before the resend: {events:#?}");
    // The resend waited a full grace of looking after the send before it.
    let first_sent: chrono::DateTime<Utc> = serde_json::from_value(sends[0].data["sent_at"].clone()).unwrap();
    let second_sent: chrono::DateTime<Utc> = serde_json::from_value(sends[1].data["sent_at"].clone()).unwrap();
    assert!(second_sent - first_sent >= chrono::Duration::seconds(1), "{first_sent} → {second_sent}");
    let gave_up = events.last().unwrap();
    assert!(gave_up.created_at - second_sent >= chrono::Duration::seconds(1), "a full grace after the last send too");
    drop(w.server);
}

#[tokio::test]
async fn cancel_of_an_ambiguous_run_finds_its_build_and_cancels_it_at_the_provider() {
    let sim = CodeshipSimConfig { testing_for: Duration::from_secs(600), ..quick_builds() };
    let w = world(sim, json!({}), json!({"reconcile_grace": "20s"})).await;
    w.triggers_hang(1);
    // The build exists at once but lists show it only after a while.
    w.harness.faults().set_listing(Listing::Late(Duration::from_secs(3)));
    let run = w.submit("main").await;
    w.drive(&run.id, "possibly sent", |r| r.maybe_sent_count == 1).await;

    let update = w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    assert_eq!(update.run.state, RunState::Canceling, "an earlier send may have started a build");
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Canceled, "{done:?}");
    assert_eq!(done.raw_status.as_deref(), Some("stopped"), "the provider stopped the build: {done:?}");
    let build = done.provider_ref.expect("the build was found and adopted").id;
    assert_eq!(w.sim.build_uuids(PRO_PROJECT_UUID), std::slice::from_ref(&build));
    let stops = w.harness.recorder().count(&Method::POST, &format!("/builds/{build}/stop"));
    assert_eq!(stops, 1);
    assert_eq!(w.trigger_posts(), 1, "nothing sent again");
    drop(w.server);
}

#[tokio::test]
async fn cancel_of_an_ambiguous_run_whose_build_never_shows_ends_canceled_saying_so() {
    let w = world(quick_builds(), json!({}), json!({})).await;
    w.triggers_hang(1);
    w.harness.faults().set_listing(Listing::HiddenSince(w.harness.clock().now()));
    let run = w.submit("main").await;
    w.drive(&run.id, "possibly sent", |r| r.maybe_sent_count == 1).await;
    let update = w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    assert_eq!(update.run.state, RunState::Canceling);
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Canceled, "{done:?}");
    assert!(done.message.as_deref().unwrap_or_default().contains("no build was found"), "{done:?}");
    assert_eq!(w.trigger_posts(), 1, "a canceled run is never sent again");
    assert!(!w.events(&run.id).await.iter().any(|e| e.kind == "possible_duplicate"));
    drop(w.server);
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_lease_reschedules_the_dispatch_instead_of_abandoning_it() {
    // The account's defaults: a rate-limited call may wait up to 61s, longer than the lease.
    let account = json!({"retry_min_delay": "500ms", "retry_max_delay": "61s", "retry_deadline": "180s"});
    let w = world(quick_builds(), account, json!({"lease": "2s"})).await;
    w.harness.faults().push(ScriptedFault::new(Fault::RateLimit { retry_after: None }).times(100_000));
    let run = w.submit("main").await;
    w.engine.tick().await;
    let after = w.store().get_run(&run.id).await.unwrap();
    assert_eq!(after.lease_owner, None, "the attempt ended with a recorded outcome, not abandoned: {after:?}");
    assert_eq!(after.maybe_sent_count, 0, "a rate-limited trigger was not sent");
    let events = w.events(&run.id).await;
    let retry = events.iter().find(|e| e.kind == "dispatch_retry").expect("a recorded retry");
    assert!(retry.data["reason"].as_str().unwrap().starts_with("not_sent"), "{retry:?}");
    assert_eq!(after.state, RunState::Pending);
    assert_eq!(w.trigger_posts(), 0);
    drop(w.server);
}

#[tokio::test]
async fn a_burst_of_id_less_triggers_gives_each_run_its_own_build_in_order() {
    let sim = CodeshipSimConfig { testing_for: Duration::from_secs(5), ..quick_builds() };
    let w = world(sim, json!({}), json!({"poll_initial": "200ms", "poll_max": "400ms"})).await;
    // Lists lag behind the builds, as Codeship's do under load.
    w.harness.faults().set_listing(Listing::Late(Duration::from_millis(1500)));
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(w.submit("main").await);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut correlated_after = None;
    let mut lists_until_correlated = 0;
    let finished = loop {
        assert!(Instant::now() < deadline, "the burst never finished");
        w.engine.tick().await;
        let mut all = Vec::new();
        for r in &runs {
            all.push(w.store().get_run(&r.id).await.unwrap());
        }
        if correlated_after.is_none() && all.iter().all(|r| r.provider_ref.is_some() && !r.unconfirmed) {
            correlated_after = Some(started.elapsed());
            lists_until_correlated = w.list_calls();
        }
        if all.iter().all(|r| r.state.is_terminal()) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for run in &finished {
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    }
    assert_eq!(w.harness.builds().total(), 20, "one build per trigger at the provider");
    // One to one, in order: the run sent first owns the build queued first.
    let mut by_send: Vec<&RunRecord> = finished.iter().collect();
    by_send.sort_by_key(|r| (r.sent_at, r.id.clone()));
    let owned: Vec<String> = by_send.iter().map(|r| r.provider_ref.clone().unwrap().id).collect();
    let mut queued: Vec<String> = w.sim.build_uuids(PRO_PROJECT_UUID);
    queued.reverse();
    assert_eq!(owned, queued, "the oldest unconfirmed run takes the oldest build");
    // One list call serves every unconfirmed run: about two per poll_initial, not one per run.
    let elapsed = correlated_after.unwrap();
    let allowed = 2 * (elapsed.as_millis() / 200) as usize + 5;
    assert!(
        lists_until_correlated <= allowed,
        "{lists_until_correlated} list calls in {elapsed:?} (allowed {allowed})"
    );
    // Status of the 20 runs came from shared list reads, not from one request per run per poll.
    let single_reads: usize = owned.iter().map(|b| w.status_calls(b)).sum();
    assert!(single_reads <= 20, "{single_reads} single-build status reads for 20 runs");
    drop(w.server);
}

#[tokio::test]
async fn refreshes_are_coalesced_into_one_provider_read_per_poll_initial() {
    let sim = CodeshipSimConfig { testing_for: Duration::from_secs(600), ..quick_builds() };
    let w = world(sim, json!({}), json!({"poll_initial": "2s", "poll_max": "60s"})).await;
    let run = w.submit("main").await;
    let running = w.drive(&run.id, "running", |r| r.state == RunState::Running).await;
    let build = running.provider_ref.unwrap().id;

    let router = cigw_gateway::build_router(w.state.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(w.engine.clone().run(stopped));
    // A status read is a read of the build, or of the project's build list it comes from.
    let reads_so_far = || w.status_calls(&build) + w.list_calls();
    let before = reads_so_far();
    let started = Instant::now();
    for _ in 0..300 {
        let request = http::Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/runs/{}/refresh", run.id))
            .header(http::header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router.clone(), request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::ACCEPTED);
    }
    // The coalesced read is due at most poll_initial after the run's last read.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    let reads = reads_so_far() - before;
    let elapsed = started.elapsed();
    stop.send(true).unwrap();
    engine.await.unwrap();
    // One read at once, then at most one per poll_initial (2s, or 1.6s where the tracker's own
    // jittered schedule comes first) however many refreshes arrive.
    let allowed = (elapsed.as_secs_f64() / 1.6).ceil() as usize + 2;
    assert!(reads >= 1, "a refresh reads the run");
    assert!(reads <= allowed, "{reads} status reads for 300 refreshes in {elapsed:?} (allowed {allowed})");
    drop(w.server);
}

#[tokio::test]
async fn cancel_of_an_accepted_run_whose_build_never_shows_ends_canceled_not_in_error() {
    let w = world(quick_builds(), json!({}), json!({"unconfirmed_deadline": "2s"})).await;
    w.harness.faults().set_listing(Listing::HiddenSince(w.harness.clock().now()));
    let run = w.submit("main").await;
    w.drive(&run.id, "accepted without an id", |r| r.unconfirmed).await;
    let update = w.store().request_cancel(&run.id, Utc::now()).await.unwrap();
    assert_eq!(update.run.state, RunState::Canceling);
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Canceled, "{done:?}");
    assert!(done.message.as_deref().unwrap_or_default().contains("no build of this run appeared"), "{done:?}");
    assert_eq!(w.trigger_posts(), 1);
    drop(w.server);
}

#[tokio::test]
async fn an_ambiguous_trigger_whose_build_list_keeps_failing_ends_in_error_without_a_resend() {
    let w = world(quick_builds(), json!({}), json!({"unconfirmed_deadline": "2s"})).await;
    w.triggers_hang(1);
    // Every build list answers 503: the build can be neither found nor ruled out.
    w.harness.faults().push(
        ScriptedFault::new(Fault::ServerError { status: http::StatusCode::SERVICE_UNAVAILABLE })
            .method(Method::GET)
            .path_contains("/builds")
            .times(100_000),
    );
    let run = w.submit("main").await;
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;

    assert_eq!(done.state, RunState::Error, "{done:?}");
    let message = done.message.clone().unwrap_or_default();
    assert!(message.contains("could not look for the build"), "{message}");
    assert!(message.contains("builds may exist at the provider"), "{message}");
    assert_eq!(w.trigger_posts(), 1, "a trigger whose build cannot be looked for is never sent again");
    assert!(!w.events(&run.id).await.iter().any(|e| e.kind == "possible_duplicate"));
    drop(w.server);
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_is_retried_until_the_dispatch_deadline() {
    // Nothing listens on port 1: every attempt provably sends nothing.
    let account = json!({"base_url": "http://127.0.0.1:1/v2"});
    let w = world(quick_builds(), account, json!({"dispatch_deadline": "3s", "retry_max_delay": "100ms"})).await;
    let run = w.submit("main").await;
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Error, "{done:?}");
    let message = done.message.clone().unwrap_or_default();
    assert!(message.contains("could not be reached for"), "{message}");
    let lasted = done.finished_at.unwrap() - done.created_at;
    assert!(
        lasted >= chrono::Duration::seconds(3),
        "an outage is waited out until the deadline, not for a count of attempts: {lasted}"
    );
    assert!(done.dispatch_attempts > 1, "retried: {}", done.dispatch_attempts);
    assert_eq!(w.trigger_posts(), 0);
    drop(w.server);
}

#[tokio::test]
async fn the_grace_counts_from_the_ambiguous_answer_not_from_the_start_of_the_send() {
    // The trigger times out after 1.5 s, longer than the 1 s grace: counted from the start of the
    // send, the grace would be over before the first look.
    let w = world(quick_builds(), json!({"timeout": "1500ms"}), json!({"reconcile_grace": "1s"})).await;
    w.triggers_hang(100);
    w.harness.faults().set_listing(Listing::HiddenSince(w.harness.clock().now()));
    let run = w.submit("main").await;
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Error, "{done:?}");
    let requests = w.harness.recorder().requests();
    let posts: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == Method::POST && r.path.ends_with("/builds"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let looks =
        requests[posts[0]..posts[1]].iter().filter(|r| r.method == Method::GET && r.path.ends_with("/builds")).count();
    assert!(looks >= 3, "a full grace of looking after the answer, not {looks} look(s)");
    drop(w.server);
}

#[tokio::test]
async fn a_rate_limited_build_list_is_waited_for_not_given_up_on() {
    let w = world(quick_builds(), json!({}), json!({"unconfirmed_deadline": "1s"})).await;
    w.triggers_hang(1);
    // Every build list is rate limited for a while (longer than `unconfirmed_deadline`).
    w.harness.faults().push(
        ScriptedFault::new(Fault::RateLimit { retry_after: None })
            .method(Method::GET)
            .path_contains("/builds")
            .times(100_000),
    );
    let run = w.submit("main").await;
    w.drive(&run.id, "possibly sent", |r| r.maybe_sent_count == 1).await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        w.engine.tick().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = w.store().get_run(&run.id).await.unwrap();
    assert!(!waiting.state.is_terminal(), "waiting for the budget is not failing to look: {waiting:?}");
    w.harness.faults().clear();
    let done = w.drive(&run.id, "terminal", |r| r.state.is_terminal()).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(w.trigger_posts(), 1, "the build was found, not sent again");
    drop(w.server);
}
