//! `/metrics` scraped after a flow through the engine and the API: every documented series is
//! present with values that follow from what happened; and the separate metrics listener.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::{DatabaseSettings, Settings};
use cigw_core::secret::SecretSetting;
use cigw_core::{ConcurrencyPolicy, ProviderKind, RunState, TargetSpec};
use cigw_gateway::engine::Engine;
use cigw_gateway::state::AppState;
use cigw_sim::fake::{FakeConfig, FakeTarget, ScriptedTrigger};
use cigw_sim::{Fault, Harness, ScriptedFault};
use http::Method;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "cigw_metricsadmintokenmetricsadmintokenmetricsadmin";

fn spec(name: &str, provider: ProviderKind) -> TargetSpec {
    TargetSpec {
        name: name.into(),
        provider,
        account: "main".into(),
        default_branch: "main".into(),
        parameters: vec![],
        max_duration: None,
        concurrency: ConcurrencyPolicy::Queue,
        debounce: None,
        description: None,
    }
}

struct World {
    harness: Harness,
    app: Arc<FakeTarget>,
    state: AppState,
    router: axum::Router,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn world(adjust: impl FnOnce(&mut Settings)) -> World {
    cigw_core::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("metrics.db").display()),
        ..DatabaseSettings::default()
    };
    let store = cigw_store::open(&db).await.unwrap();
    store.migrate().await.unwrap();
    let harness = Harness::new();
    let app = Arc::new(FakeTarget::new(harness.clone(), FakeConfig::default()));
    let legacy = Arc::new(FakeTarget::new(
        harness.clone(),
        FakeConfig { kind: ProviderKind::Codeship, returns_id: false, ..FakeConfig::default() },
    ));
    let mut catalog = Catalog::default();
    catalog
        .targets
        .insert("app".into(), ConfiguredTarget { spec: spec("app", ProviderKind::Circleci), target: app.clone() });
    catalog
        .targets
        .insert("legacy".into(), ConfiguredTarget { spec: spec("legacy", ProviderKind::Codeship), target: legacy });
    let mut settings = Settings::default();
    settings.auth.admin_token = Some(SecretSetting::new(ADMIN));
    let t = &mut settings.timings;
    t.poll_initial = Duration::from_millis(10);
    t.poll_max = Duration::from_millis(30);
    t.lease = Duration::from_secs(5);
    t.reconcile_grace = Duration::from_millis(300);
    t.unconfirmed_deadline = Duration::from_secs(30);
    t.sweep_interval = Duration::from_millis(10);
    t.retry_max_delay = Duration::from_millis(20);
    adjust(&mut settings);
    let state = AppState::new(store, catalog, settings);
    let router = cigw_gateway::build_router(state.clone());
    let engine = Engine::new(state.clone());
    World { harness, app, state, router, engine, _dir: dir }
}

impl World {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let response = self.router.clone().oneshot(req.unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn trigger(&self, targets: &[&str]) -> Vec<String> {
        let body = json!({"targets": targets, "ref": {"branch": "main"}});
        let (status, body) = self.call(Method::POST, "/v1/triggers", Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    }

    /// Tick the engine with simulated provider time moving until every run is terminal.
    async fn finish_all(&self, runs: &[String]) {
        for _ in 0..600 {
            self.engine.tick().await;
            let mut done = true;
            for id in runs {
                done &= self.state.store.get_run(id).await.unwrap().state.is_terminal();
            }
            if done {
                return;
            }
            self.harness.clock().advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("runs never finished");
    }

    async fn scrape(&self) -> String {
        let response =
            self.router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

/// Sum of the samples of `name` whose labels include every `label="value"` in `labels`.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn present(text: &str, name: &str) -> bool {
    text.lines().any(|l| l.starts_with(name) && !l.starts_with('#'))
}

#[tokio::test]
async fn the_scrape_after_a_flow_has_every_series_with_sensible_values() {
    let w = world(|_| {}).await;

    // 1. A rate-limited first trigger attempt (retried inside the adapter), then both runs through.
    w.harness.faults().push(
        ScriptedFault::new(Fault::RateLimit { retry_after: Some(0) }).method(Method::POST).path_contains("/trigger"),
    );
    let first = w.trigger(&["app", "legacy"]).await;
    w.finish_all(&first).await;

    // 2. An answer lost after the build started: reconciled by adopting it.
    w.app.push_trigger(ScriptedTrigger::StartThenLose);
    let second = w.trigger(&["app"]).await;
    w.finish_all(&second).await;

    // 3. A connection reset before anything was processed: no build to find, sent again.
    w.harness
        .faults()
        .push(ScriptedFault::new(Fault::ResetBeforeProcessing).method(Method::POST).path_contains("/trigger"));
    let third = w.trigger(&["app"]).await;
    w.finish_all(&third).await;

    // 4. Refused intake: unknown target, no token.
    let (status, _) =
        w.call(Method::POST, "/v1/triggers", Some(ADMIN), Some(json!({"targets": ["nope"], "ref": {}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = w.call(Method::POST, "/v1/triggers", None, Some(json!({"targets": ["app"]}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 5. One connected event-stream client.
    let sse = w
        .router
        .clone()
        .oneshot(
            Request::get("/v1/events")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);

    let text = w.scrape().await;
    let api = [("source", "api")];
    assert_eq!(sum(&text, "cigw_intake_total", &[api[0], ("outcome", "accepted")]), 3.0, "{text}");
    assert_eq!(sum(&text, "cigw_intake_total", &[api[0], ("outcome", "rejected")]), 1.0, "{text}");
    assert_eq!(sum(&text, "cigw_intake_total", &[api[0], ("outcome", "unauthorized")]), 1.0, "{text}");

    // Five trigger calls: three answered, the lost answer and the reset failed (the lost one's
    // build was adopted, the reset one was sent again).
    let triggers_ok = sum(&text, "cigw_provider_calls_total", &[("operation", "trigger"), ("outcome", "ok")]);
    assert_eq!(triggers_ok, 3.0, "{text}");
    assert_eq!(sum(&text, "cigw_provider_calls_total", &[("operation", "trigger"), ("outcome", "maybe_sent")]), 2.0);
    assert!(sum(&text, "cigw_provider_calls_total", &[("provider", "circleci"), ("operation", "status")]) >= 3.0);
    assert!(sum(&text, "cigw_provider_calls_total", &[("provider", "codeship"), ("operation", "find_recent")]) >= 1.0);
    let timed = sum(&text, "cigw_provider_call_duration_seconds_count", &[("operation", "trigger")]);
    assert_eq!(timed, 5.0, "every trigger call is timed: {text}");
    assert!(present(&text, "cigw_provider_call_duration_seconds_bucket{"), "a histogram, not a summary");
    assert_eq!(sum(&text, "cigw_provider_retries_total", &[("operation", "trigger"), ("reason", "rate_limited")]), 1.0);

    // Four runs reached their providers (one through reconciliation).
    assert_eq!(sum(&text, "cigw_dispatch_lag_seconds_count", &[]), 4.0, "{text}");
    assert_eq!(sum(&text, "cigw_dispatch_lag_seconds_count", &[("provider", "codeship")]), 1.0);
    let lag = sum(&text, "cigw_dispatch_lag_seconds_sum", &[]);
    assert!(lag > 0.0 && lag < 60.0, "lag sum {lag}");

    assert_eq!(sum(&text, "cigw_runs", &[("state", "succeeded")]), 4.0, "{text}");
    assert_eq!(sum(&text, "cigw_runs", &[("state", "pending")]), 0.0);
    assert!(present(&text, "cigw_runs{state=\"error\"} 0"), "states without runs are reported as 0: {text}");
    assert_eq!(sum(&text, "cigw_runs_unconfirmed", &[]), 0.0);
    assert!(present(&text, "cigw_runs_unconfirmed "));
    assert_eq!(sum(&text, "cigw_unconfirmed_total", &[("outcome", "accepted")]), 1.0);
    assert_eq!(sum(&text, "cigw_unconfirmed_total", &[("outcome", "correlated")]), 1.0);

    assert_eq!(sum(&text, "cigw_reconciliations_total", &[("outcome", "adopted")]), 1.0, "{text}");
    assert_eq!(sum(&text, "cigw_reconciliations_total", &[("outcome", "gave_up")]), 1.0, "{text}");
    assert_eq!(sum(&text, "cigw_possible_duplicates_total", &[]), 1.0);
    assert_eq!(sum(&text, "cigw_sse_clients", &[]), 1.0);

    drop(sse);
    let text = w.scrape().await;
    assert_eq!(sum(&text, "cigw_sse_clients", &[]), 0.0);
    // HELP lines document the series.
    assert!(text.contains("# HELP cigw_dispatch_lag_seconds"), "{text}");

    // An unconfirmed run waiting for its build shows in the gauge.
    let waiting = w.trigger(&["legacy"]).await;
    w.engine.tick().await;
    let run = w.state.store.get_run(&waiting[0]).await.unwrap();
    assert!(run.unconfirmed && run.state == RunState::Queued, "{run:?}");
    assert_eq!(sum(&w.scrape().await, "cigw_runs_unconfirmed", &[]), 1.0);
}

#[tokio::test]
async fn with_metrics_listen_the_metrics_are_served_only_on_their_own_listener() {
    let w = world(|s| s.server.metrics_listen = Some("127.0.0.1:0".into())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api, metrics) = (listener.local_addr().unwrap(), metrics_listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cigw_gateway::serve::serve_with_metrics(
        listener,
        Some(metrics_listener),
        w.state.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let on_api = client.get(format!("http://{api}/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    let on_metrics = client.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(on_metrics.status(), 200);
    assert!(on_metrics.text().await.unwrap().contains("cigw_runs{state=\"pending\"} 0"));
    let health = client.get(format!("http://{api}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // An open event stream does not hold up the shutdown.
    let mut stream = client.get(format!("http://{api}/v1/events")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stopped").unwrap().unwrap();
    while let Ok(Some(_)) = stream.chunk().await {}
}

/// The unconfirmed gauge counts every unconfirmed run from the store's count (it used to read
/// a page of at most 1,000 queued runs per scrape and stopped counting there).
#[tokio::test]
async fn the_run_gauges_count_every_run_without_reading_pages_of_runs() {
    const RUNS: usize = 1001;
    let w = world(|_| {}).await;
    let store = &w.state.store;
    let now = chrono::Utc::now();
    let runs = (0..RUNS)
        .map(|i| cigw_store::NewRun {
            id: format!("run-{i:05}"),
            target: "legacy".into(),
            provider: ProviderKind::Codeship,
            account: "main".into(),
            git_ref: cigw_core::GitRef::branch("main"),
            parameters: cigw_core::Parameters::new(),
            chain_parent: None,
            rerun_of: None,
            rerun_failed_only: false,
            dispatch_at: now,
        })
        .collect();
    let trigger = cigw_store::NewTrigger {
        id: "burst".into(),
        source: "api".into(),
        requested_by: "test".into(),
        request: json!({}),
        labels: json!({}),
        created_at: now,
        runs,
        idempotency: None,
        chain_firing: None,
        schedule_slot: None,
        hook_delivery: None,
    };
    assert!(matches!(store.create_trigger(trigger).await.unwrap(), cigw_store::CreateOutcome::Created(_)));
    let lease = now + chrono::Duration::seconds(600);
    let mut claimed = store.claim_dispatch("test", now, lease, 1000).await.unwrap();
    claimed.extend(store.claim_dispatch("test", now, lease, 1000).await.unwrap());
    assert_eq!(claimed.len(), RUNS);
    let outcome = cigw_store::DispatchOutcome::Unconfirmed {
        sent_at: now,
        deadline: now + chrono::Duration::seconds(3600),
        next_poll_at: now + chrono::Duration::seconds(3600),
    };
    let writes = claimed.iter().map(|r| store.record_dispatch(&r.id, "test", outcome.clone(), now));
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    let text = w.scrape().await;
    assert_eq!(sum(&text, "cigw_runs", &[("state", "queued")]), RUNS as f64, "{text}");
    assert_eq!(sum(&text, "cigw_runs_unconfirmed", &[]), RUNS as f64, "{text}");

    store
        .set_state("run-00000", RunState::Error, Some("no build appeared".into()), cigw_store::EventKind::Error, now)
        .await
        .unwrap();
    let text = w.scrape().await;
    assert_eq!(sum(&text, "cigw_runs", &[("state", "error")]), 1.0, "{text}");
    assert_eq!(sum(&text, "cigw_runs_unconfirmed", &[]), (RUNS - 1) as f64, "an ended run is not waiting: {text}");
}

#[tokio::test]
async fn intake_yields_while_dispatch_is_behind_and_stops_once_it_has_caught_up() {
    let w = world(|s| s.timings.backlog_age_limit = Duration::from_millis(200)).await;
    // The dispatchers are stuck (the engine is not ticked); only the backlog is measured.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let measuring = tokio::spawn(cigw_gateway::pacing::measure(w.state.clone(), stopped));
    let waiting = w.trigger(&["app"]).await;
    let mut age = Duration::ZERO;
    for _ in 0..500 {
        age = w.state.backlog_age.get();
        if age > Duration::from_millis(400) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(age > Duration::from_millis(400), "the unsent run's wait was never measured: {age:?}");
    let text = w.scrape().await;
    assert!(sum(&text, "cigw_dispatch_backlog_age_seconds", &[]) > 0.4, "{text}");
    let paced = |text: &str| sum(text, "cigw_intake_paced_total", &[]);
    let before = paced(&text);

    // Held back a little, then stored and answered like any other trigger.
    let held = w.trigger(&["app"]).await;
    assert_eq!(w.state.store.get_run(&held[0]).await.unwrap().state, RunState::Pending);
    let after_one = paced(&w.scrape().await);
    assert_eq!(after_one, before + 1.0);

    // The dispatchers catch up: nothing waits, the age drops to zero and intake goes on unpaced.
    assert_eq!(w.engine.tick().await, 2);
    for id in waiting.iter().chain(&held) {
        assert_ne!(w.state.store.get_run(id).await.unwrap().state, RunState::Pending);
    }
    for _ in 0..500 {
        if w.state.backlog_age.get().is_zero() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.state.backlog_age.get(), Duration::ZERO);
    w.trigger(&["app"]).await;
    let text = w.scrape().await;
    assert_eq!(paced(&text), after_one, "{text}");
    assert_eq!(sum(&text, "cigw_dispatch_backlog_age_seconds", &[]), 0.0, "{text}");
    stop.send_replace(true);
    measuring.await.unwrap();
}

#[tokio::test]
async fn the_backlog_measurement_ends_when_its_stop_signal_is_gone() {
    let w = world(|_| {}).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let measuring = tokio::spawn(cigw_gateway::pacing::measure(w.state.clone(), stopped));
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), measuring)
        .await
        .expect("the measurement ended (it would spin on a closed channel)")
        .unwrap();
}

#[tokio::test]
async fn a_caller_that_gives_up_while_held_back_has_stored_nothing() {
    let w = world(|s| s.timings.backlog_age_limit = Duration::from_millis(200)).await;
    let stored = |w: &World| {
        let filter = cigw_store::RunFilter { limit: 100, ..Default::default() };
        let store = w.state.store.clone();
        async move { store.list_runs(&filter, None).await.unwrap().runs.len() }
    };
    // Dispatch a minute behind: each trigger is held back the most (a second).
    w.state.backlog_age.set(Duration::from_secs(60));
    let body = json!({"targets": ["app"], "ref": {"branch": "main"}});
    let given_up =
        tokio::time::timeout(Duration::from_millis(100), w.call(Method::POST, "/v1/triggers", Some(ADMIN), Some(body)))
            .await;
    assert!(given_up.is_err(), "answered within 100 ms while held back: {given_up:?}");
    // A bad request is refused without being held back: checking comes first.
    let paced = |text: &str| sum(text, "cigw_intake_paced_total", &[]);
    let before = paced(&w.scrape().await);
    let (status, _) =
        w.call(Method::POST, "/v1/triggers", Some(ADMIN), Some(json!({"targets": ["nope"], "ref": {}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(paced(&w.scrape().await), before);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(stored(&w).await, 0, "the trigger given up on was never stored");
    // A caller that waits gets its 202.
    assert_eq!(w.trigger(&["app"]).await.len(), 1);
    assert_eq!(stored(&w).await, 1);
}
