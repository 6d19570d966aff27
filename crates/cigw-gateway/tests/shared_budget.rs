//! Provider rate budgets belong to the credential, not to the replica: three gateway replicas
//! on one PostgreSQL database (`CIGW_TEST_DATABASE_URL`, never skipped), each with its own store
//! handle and Codeship account for one API user, hammer the Codeship simulator together. The
//! simulator runs its clock 20 times faster, so Codeship's 60 requests a minute become 60 per
//! 3 real seconds, answered `403 Rate Limit Exceeded` beyond; the replicas are configured a little
//! below that (`18/s`, 54 per 3 s).
//!
//! Shared, the replicas together stay within the budget in every 3-second window, and a trigger
//! passes the reads that saturate it within about a second. The control: the same replicas each
//! on their own SQLite file (nothing shared) go far over it, so the measurement can fail.

mod api_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api_support::PgDatabase;
use cigw_core::catalog::Catalog;
use cigw_core::config::{DatabaseSettings, Problems, Settings};
use cigw_core::provider::ProviderFactory;
use cigw_core::{Error, GitRef, Parameters, ProviderKind, TriggerSpec};
use cigw_gateway::state::AppState;
use cigw_sim::Harness;
use cigw_sim::codeship::{BASIC_PROJECT_UUID, CodeshipSim, CodeshipSimConfig, DEFAULT_EMAIL, DEFAULT_PASSWORD};
use serde_json::json;

/// The simulator's clock speed: a simulated minute lasts this many times less.
const SPEED: f64 = 20.0;
/// Codeship's window, in real time.
const WINDOW: Duration = Duration::from_secs(3);
/// What the replicas may send per window together (`18/s`).
const BUDGET: usize = 54;
/// Requests one window may hold beyond the budget, as counted at the simulator: evenly spaced
/// requests put one on each edge of a window, and a request that leaves a little late (a busy
/// machine) can share a window with the next ones on time. Still below Codeship's 60.
const JITTER: usize = 3;
/// How long the replicas hammer the simulator.
const HAMMER: Duration = Duration::from_secs(7);
/// Read loops per replica: enough to keep the budget saturated.
const READERS: usize = 20;

/// One replica's gateway state over `db`: the Codeship account `main` (the simulator's user) and
/// its target `deploy`.
async fn replica(sim_url: &str, db: &DatabaseSettings) -> AppState {
    let raw = json!({
        "providers": {"codeship": {"main": {
            "base_url": format!("{sim_url}/v2"),
            "email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD, "organization": "Acme",
            "rate_limit": "18/s", "concurrency": 64, "max_retries": 0
        }}},
        "targets": {"deploy": {"provider": "codeship", "account": "main",
                               "project_uuid": BASIC_PROJECT_UUID, "project_type": "basic"}}
    });
    let mut problems = Problems::default();
    let mut settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(cigw_codeship::CodeshipFactory)];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    settings.database = db.clone();
    let store = cigw_store::open(db).await.unwrap();
    store.migrate().await.unwrap();
    AppState::new(store, catalog, settings)
}

/// What the hammering produced.
#[derive(Debug)]
struct Outcome {
    /// The most requests the simulator received in any window.
    busiest_window: usize,
    /// Requests the simulator received in all.
    received: usize,
    /// Calls the simulator refused for its rate limit.
    refused: usize,
    /// How long each trigger took, from the call to its answer.
    trigger_latencies: Vec<Duration>,
}

/// Every replica runs [`READERS`] loops of a cheap read for [`HAMMER`]; replica 0 also triggers a
/// build every half second.
async fn hammer(replicas: &[AppState], harness: &Harness) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for state in replicas {
        let account = state.catalog.accounts[&(ProviderKind::Codeship, "main".to_string())].clone();
        for _ in 0..READERS {
            let (account, stop, refused) = (account.clone(), stop.clone(), refused.clone());
            readers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match account.check_online().await {
                        Ok(()) => {}
                        Err(Error::RateLimited { .. }) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("a read failed: {e}"),
                    }
                }
            }));
        }
    }
    let target = replicas[0].catalog.targets["deploy"].target.clone();
    let mut trigger_latencies = Vec::new();
    let start = Instant::now();
    // Let the reads saturate the budget first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while start.elapsed() < HAMMER - Duration::from_secs(1) {
        let spec = TriggerSpec {
            run_id: uuid::Uuid::now_v7().to_string(),
            git_ref: GitRef::branch("main"),
            parameters: Parameters::new(),
            requested_by: "test".into(),
        };
        let asked = Instant::now();
        match target.trigger(&spec).await {
            Ok(_) => {}
            Err(Error::RateLimited { .. }) => {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => panic!("a trigger failed: {e}"),
        }
        trigger_latencies.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(HAMMER.saturating_sub(start.elapsed())).await;
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.abort();
    }
    let mut times: Vec<_> = harness.recorder().requests().into_iter().map(|r| r.received_at).collect();
    times.sort();
    let window = chrono::Duration::from_std(WINDOW).unwrap();
    let busiest_window =
        (0..times.len()).map(|i| times[i..].iter().take_while(|t| **t < times[i] + window).count()).max().unwrap_or(0);
    Outcome { busiest_window, received: times.len(), refused: refused.load(Ordering::SeqCst), trigger_latencies }
}

async fn simulator() -> (Harness, cigw_sim::harness::SimServer) {
    cigw_core::telemetry::init_for_tests();
    let harness = Harness::running(SPEED);
    let (_sim, server) = CodeshipSim::start(&harness, CodeshipSimConfig::default()).await;
    (harness, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_share_one_budget_and_triggers_pass_the_reads() {
    let (harness, server) = simulator().await;
    let db = PgDatabase::create().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&server.url(), &db.settings).await);
    }
    let outcome = hammer(&replicas, &harness).await;

    assert!(
        outcome.busiest_window <= BUDGET + JITTER,
        "three replicas stay within one budget of {BUDGET} per window: {outcome:?}"
    );
    assert_eq!(outcome.refused, 0, "Codeship never refused a call for its rate limit: {outcome:?}");
    let expected = BUDGET * HAMMER.as_millis() as usize / WINDOW.as_millis() as usize;
    assert!(outcome.received >= expected * 3 / 4, "the reads kept the budget busy: {outcome:?}");
    assert!(outcome.trigger_latencies.len() >= 5, "triggers were sent all along: {outcome:?}");
    for latency in &outcome.trigger_latencies {
        // Sixty reads wait at any moment; a trigger books past them, behind at most a second of them.
        assert!(*latency <= Duration::from_secs(1), "a trigger passed the waiting reads: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_budget_three_replicas_go_over_it() {
    let (harness, server) = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let db = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join(format!("replica-{i}.db")).display()),
            ..DatabaseSettings::default()
        };
        replicas.push(replica(&server.url(), &db).await);
    }
    let outcome = hammer(&replicas, &harness).await;
    assert!(outcome.busiest_window > 2 * BUDGET, "each replica spends the whole budget alone: {outcome:?}");
    assert!(outcome.refused > 0, "Codeship refused calls over its limit: {outcome:?}");
}

#[tokio::test]
async fn a_replica_that_cannot_reach_its_database_holds_its_calls_back() {
    use sqlx::Connection;
    let (harness, server) = simulator().await;
    let db = PgDatabase::create().await;
    let state = replica(&server.url(), &db.settings).await;
    let account = state.catalog.accounts[&(ProviderKind::Codeship, "main".to_string())].clone();
    account.check_online().await.expect("a call while the database answers");
    let sent = harness.recorder().requests().len();

    // The database goes away: no connection of the replica works, no new one is accepted.
    let mut admin = sqlx::PgConnection::connect(&db.admin).await.unwrap();
    let name = &db.name;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .execute(&mut admin)
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    let held = cigw_core::retry::within_budget(end, account.check_online()).await;
    assert!(matches!(held, Err(Error::RateLimited { .. })), "the call waited for its budget and gave up: {held:?}");
    assert!(Instant::now() < end + Duration::from_secs(1), "within its work budget");
    assert_eq!(harness.recorder().requests().len(), sent, "nothing was sent without the shared budget");

    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), account.check_online())
        .await
        .expect("calls go on once the database is back")
        .unwrap();
    assert!(harness.recorder().requests().len() > sent);
}
