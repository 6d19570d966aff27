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
