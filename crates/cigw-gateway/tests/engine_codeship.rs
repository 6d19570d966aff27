//! The engine with the real Codeship adapter and simulator: on a Basic project, triggering a sha
//! that was already built runs that same build again (no new uuid, no id in the answer); the
//! gateway must recognise it as the next attempt of a build an earlier run owns.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cigw_core::catalog::Catalog;
use cigw_core::config::{DatabaseSettings, Problems, Settings};
use cigw_core::provider::ProviderFactory;
use cigw_core::{GitRef, Parameters, ProviderKind, RunState};
use cigw_gateway::engine::Engine;
use cigw_gateway::state::AppState;
use cigw_sim::Harness;
use cigw_sim::codeship::{BASIC_PROJECT_UUID, CodeshipSim, CodeshipSimConfig, DEFAULT_EMAIL, DEFAULT_PASSWORD};
use cigw_store::{CreateOutcome, NewRun, NewTrigger, RunRecord};
use serde_json::json;

#[tokio::test]
async fn an_already_built_sha_on_basic_is_the_next_attempt_of_its_build() {
    cigw_core::telemetry::init_for_tests();
    let harness = Harness::running(10.0);
    let sim_config = CodeshipSimConfig {
        rate_limit_per_minute: 100_000,
        initiated_for: Duration::from_millis(500),
        waiting_for: Duration::from_millis(500),
        testing_for: Duration::from_secs(2),
        ..CodeshipSimConfig::default()
    };
    let (sim, server) = CodeshipSim::start(&harness, sim_config).await;
    let raw = json!({
        "providers": {"codeship": {"sim": {
            "base_url": format!("{}/v2", server.url()),
            "email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD, "organization": "Acme",
            "retry_min_delay": "10ms", "retry_max_delay": "50ms"
        }}},
        "targets": {"legacy": {"provider": "codeship", "account": "sim",
                               "project_uuid": BASIC_PROJECT_UUID, "project_type": "basic"}},
        "timings": {"poll_initial": "50ms", "poll_max": "200ms", "lease": "5s", "sweep_interval": "20ms",
                    "unconfirmed_deadline": "20s"}
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
    let store = cigw_store::open(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::new(store.clone(), catalog, settings);
    let engine = Engine::new(state);

    let git_ref = GitRef::branch("main").with_sha("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678");
    let submit = |git_ref: GitRef| {
        let store = store.clone();
        async move {
            let trigger = NewTrigger {
                id: uuid::Uuid::now_v7().to_string(),
                source: "api".into(),
                requested_by: "test".into(),
                request: json!({}),
                labels: json!({}),
                created_at: Utc::now(),
                runs: vec![NewRun {
                    id: uuid::Uuid::now_v7().to_string(),
                    target: "legacy".into(),
                    provider: ProviderKind::Codeship,
                    account: "sim".into(),
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
            match store.create_trigger(trigger).await.unwrap() {
                CreateOutcome::Created(t) => t.runs.into_iter().next().unwrap(),
                other => panic!("{other:?}"),
            }
        }
    };
    let finish = |run: RunRecord| {
        let (engine, store) = (engine.clone(), store.clone());
        async move {
            for _ in 0..400 {
                engine.tick().await;
                let now = store.get_run(&run.id).await.unwrap();
                if now.state.is_terminal() {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("run never finished: {:?}", store.get_run(&run.id).await.unwrap());
        }
    };

    let first = finish(submit(git_ref.clone()).await).await;
    assert_eq!(first.state, RunState::Succeeded, "{first:?}");
    let second = finish(submit(git_ref).await).await;
    assert_eq!(second.state, RunState::Succeeded, "{second:?}");
    let (a, b) = (first.provider_ref.unwrap(), second.provider_ref.unwrap());
    assert_eq!(a.id, b.id, "Codeship Basic ran the same build again");
    assert_eq!((a.attempt, b.attempt), (1, 2));
    assert_eq!(sim.runs_of(&a.id), 2);
    drop(server);
}
