//! The behaviour suite (`tests/suite`) run against SQLite (a temporary file per test) and
//! PostgreSQL (a fresh database per test on `CIGW_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`). PostgreSQL tests never skip: an unreachable server
//! fails them with a message saying so.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use cigw_core::config::DatabaseSettings;
use cigw_store::Store;
use sqlx::Connection;

/// The server the PostgreSQL tests create their databases on.
fn pg_admin_url() -> String {
    std::env::var("CIGW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated, empty database for one test; dropped (PostgreSQL) or deleted (SQLite) after.
pub(crate) struct TestDb {
    store: Arc<dyn Store>,
    settings: DatabaseSettings,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("cigw.db").display()),
            ..DatabaseSettings::default()
        };
        let store = cigw_store::open(&settings).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self { store, settings, _dir: Some(dir), pg_name: None }
    }

    pub(crate) async fn postgres() -> Self {
        let admin = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => panic!(
                "PostgreSQL tests need a server at {} (start it: pg_ctlcluster <version> main start; \
                 or set CIGW_TEST_DATABASE_URL): {e}",
                cigw_core::config::redact_url(&admin)
            ),
        };
        let name = format!("cigw_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        conn.close().await.ok();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let settings =
            DatabaseSettings { url: format!("{base}/{name}"), max_connections: 8, ..DatabaseSettings::default() };
        let store = cigw_store::open(&settings).await.expect("open PostgreSQL");
        store.migrate().await.expect("migrate PostgreSQL");
        Self { store, settings, _dir: None, pg_name: Some(name) }
    }

    pub(crate) fn ctx(&self) -> suite::Ctx {
        suite::Ctx { store: self.store.clone(), settings: self.settings.clone() }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let admin = pg_admin_url();
        // Drop runs outside any runtime guarantee: use a short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

macro_rules! backend_suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::$backend().await;
                    tokio::time::timeout(super::TEST_TIMEOUT, crate::suite::$name(db.ctx())).await.expect("test timed out");
                }
            )*
        }
    };
}

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        backend_suite!(sqlite: $($name),*);
        backend_suite!(postgres: $($name),*);
    };
}

both_backends!(
    create_trigger_stores_everything,
    bad_input_and_missing_rows,
    idempotency_keys,
    concurrent_same_key_creates_once,
    claim_dispatch_leases,
    concurrent_claimers_never_share,
    record_dispatch_outcomes,
    adoption_is_unique,
    tracking_applies_forward_only,
    poll_now_and_unconfirmed_runs,
    cancel_requests,
    reruns,
    events_read_and_append,
    events_never_skip_under_concurrent_writers,
    list_runs_pages,
    tokens,
    deliveries_chains_and_cursors,
    notification_outbox,
    prune_by_retention,
    wakeups_follow_commits,
    secrets_stay_out_of_errors_and_debug,
);
