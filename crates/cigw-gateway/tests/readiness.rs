//! `/readyz` reflects whether the store takes writes, not only whether it answers a read: a
//! database that cannot be written (full disk, read-only, locked by someone else) is not ready.

mod api_support;

use std::time::Duration;

use api_support::{ADMIN, catalog};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cigw_core::config::{DatabaseSettings, Settings};
use cigw_core::secret::SecretSetting;
use cigw_gateway::state::AppState;
use cigw_sim::Harness;
use sqlx::Connection;
use tower::ServiceExt;

async fn readyz(router: &axum::Router) -> (StatusCode, serde_json::Value) {
    let request = Request::get("/readyz").body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn readyz_is_503_while_the_database_cannot_be_written_and_200_again_after() {
    cigw_core::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.db");
    let db = DatabaseSettings {
        url: format!("sqlite://{}", path.display()),
        statement_timeout: Duration::from_secs(1),
        ..DatabaseSettings::default()
    };
    let store = cigw_store::open(&db).await.unwrap();
    store.migrate().await.unwrap();
    let (catalog, _fake) = catalog(&Harness::new());
    let mut settings = Settings::default();
    settings.auth.admin_token = Some(SecretSetting::new(ADMIN));
    let router = cigw_gateway::build_router(AppState::new(store, catalog, settings));
    assert_eq!(readyz(&router).await.0, StatusCode::OK);

    // Another connection holds the write lock: reads still work, writes cannot commit.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let (status, body) = readyz(&router).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if readyz(&router).await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once writes go through");
}

/// The same on PostgreSQL (`CIGW_TEST_DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test`; never skipped): a database that answers reads but
/// takes no writes (a standby a failover left the replicas pointed at, here
/// `default_transaction_read_only`) keeps a replica out of the load balancer, and so does a
/// write that cannot get its lock within the statement timeout.
#[tokio::test]
async fn readyz_on_postgres_needs_a_database_that_takes_writes() {
    cigw_core::telemetry::init_for_tests();
    let admin =
        std::env::var("CIGW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL at CIGW_TEST_DATABASE_URL");
    let name = format!("cigw_ready_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let db = DatabaseSettings {
        url: format!("{base}/{name}"),
        statement_timeout: Duration::from_secs(1),
        ..DatabaseSettings::default()
    };
    let (catalog, _fake) = catalog(&Harness::new());
    let mut settings = Settings::default();
    settings.auth.admin_token = Some(SecretSetting::new(ADMIN));
    let router = |store| cigw_gateway::build_router(AppState::new(store, catalog.clone(), settings.clone()));

    let store = cigw_store::open(&db).await.unwrap();
    store.migrate().await.unwrap();
    let writable = router(store);
    assert_eq!(readyz(&writable).await.0, StatusCode::OK);

    // Another session holds a lock the readiness write needs: 503 after the statement timeout,
    // 200 again once it lets go.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE cursors IN EXCLUSIVE MODE").execute(&mut other).await.unwrap();
    let (status, body) = readyz(&writable).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(readyz(&writable).await.0, StatusCode::OK, "ready again once writes go through");

    // Read-only: every new session of the database starts read-only, as on a hot standby.
    sqlx::query(&format!("ALTER DATABASE {name} SET default_transaction_read_only = on"))
        .execute(&mut conn)
        .await
        .unwrap();
    let standby = cigw_store::open(&db).await.unwrap();
    standby.ping().await.expect("reads still work");
    let (status, body) = readyz(&router(standby)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");

    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok();
}
