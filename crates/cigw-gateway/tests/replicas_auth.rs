//! Two gateway replicas on one PostgreSQL database (`CIGW_TEST_DATABASE_URL`, never skipped):
//! a token revoked, a CORS origin added or removed, or a web session ended on one replica takes
//! effect on the other within about a second, not at the end of a cache's time limit; and after
//! the other lost its LISTEN connection it drops every cache, since it may have missed changes.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{ADMIN, App, PgDatabase, Reply, request};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures::StreamExt;
use serde_json::json;
use tower::ServiceExt;

/// "Within seconds": the bound every change must meet on the other replica.
const PROMPTLY: Duration = Duration::from_millis(1500);
/// An origin a token may allow.
const QA: &str = "https://qa.example.com";

/// Two replicas (own store handles, routers and caches) on one fresh database. Periodic checks are
/// an hour apart, so only a change notification can make either notice a change in time.
async fn replicas(db: &PgDatabase) -> (App, App) {
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut app =
            App::on_database(&db.settings, |s| s.server.stream_token_check = Duration::from_secs(3600), |_, _| {})
                .await;
        app.state.streams.poll_interval = Duration::from_millis(50);
        app.router = cigw_gateway::build_router(app.state.clone());
        apps.push(app);
    }
    let b = apps.pop().unwrap();
    (apps.pop().unwrap(), b)
}

/// Wait until `listeners` replicas listen for token changes (backends of the database LISTEN on
/// `cigw_auth`) and have handled their first catch-up, so a missed change cannot be blamed on the
/// start.
async fn wait_listening(db: &PgDatabase, listeners: usize) {
    let pool = sqlx::PgPool::connect(&db.settings.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN \"cigw_auth\"%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n as usize >= listeners {
            break;
        }
        assert!(Instant::now() < deadline, "the replicas listen for token changes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    pool.close().await;
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/triggers")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap()
}

async fn allows(app: &App, origin: &str) -> bool {
    app.send(preflight(origin)).await.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_some()
}

/// Poll `check` until it holds; how long that took, or `None` after `PROMPTLY`.
async fn within_promptly<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < PROMPTLY {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// An open event stream's body.
struct Stream(axum::body::BodyDataStream);

impl Stream {
    async fn open(app: &App, request: Request<Body>) -> Stream {
        let response = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Stream(response.into_body().into_data_stream())
    }

    async fn read_until(&mut self, needle: &str) {
        let mut seen = String::new();
        let found = async {
            while !seen.contains(needle) {
                let chunk = self.0.next().await.expect("the stream ended early").unwrap();
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), found).await.expect("the expected event arrived");
    }

    async fn ends_promptly(&mut self) -> bool {
        let ended = async { while let Some(Ok(_)) = self.0.next().await {} };
        tokio::time::timeout(PROMPTLY, ended).await.is_ok()
    }
}

#[tokio::test]
async fn a_token_revoked_on_one_replica_ends_its_streams_on_the_other_at_once() {
    let db = PgDatabase::create().await;
    let (a, b) = replicas(&db).await;
    wait_listening(&db, 2).await;
    let reader = a.token("dashboard", &["read"]).await;
    let run = a.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})).await.remove(0);
    let mut stream = Stream::open(&b, request(Method::GET, "/v1/events?from=0", Some(&reader), None)).await;
    stream.read_until(&run).await;

    let id = a.store().list_tokens().await.unwrap().into_iter().find(|t| t.name == "dashboard").unwrap().id;
    let revoked = a.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    assert!(stream.ends_promptly().await, "the other replica ended the revoked token's stream");
    b.get("/v1/runs", &reader).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn cors_origins_follow_token_changes_made_on_another_replica() {
    let db = PgDatabase::create().await;
    let (a, b) = replicas(&db).await;
    wait_listening(&db, 2).await;
    // B reads the origin set now and would keep it for its 30-second time limit.
    assert!(!allows(&b, QA).await);

    let created =
        a.post("/v1/tokens", ADMIN, json!({"name": "ui", "scopes": ["trigger"], "allowed_origins": [QA]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let took = within_promptly(|| allows(&b, QA)).await;
    assert!(took.is_some(), "the other replica allows the new token's origin promptly");

    let id = created.body["id"].as_str().unwrap();
    a.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    let took = within_promptly(|| async { !allows(&b, QA).await }).await;
    assert!(took.is_some(), "the other replica refuses the revoked token's origin promptly");
}

fn cookie_of(reply: &Reply) -> String {
    let set = reply.headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

fn with_cookie(method: Method, path: &str, cookie: &str, csrf: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path).header(header::COOKIE, cookie);
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn signing_out_on_one_replica_ends_the_pages_stream_on_the_other() {
    let db = PgDatabase::create().await;
    let (a, b) = replicas(&db).await;
    wait_listening(&db, 2).await;
    let token = a.token("qa", &["read"]).await;
    let sign_in = Request::post("/ui/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "token": token }).to_string()))
        .unwrap();
    let signed_in = a.send(sign_in).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.text);
    let (cookie, csrf) = (cookie_of(&signed_in), signed_in.body["csrf_token"].as_str().unwrap().to_string());
    let run = a.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})).await.remove(0);
    let mut stream = Stream::open(&b, with_cookie(Method::GET, "/v1/events?from=0", &cookie, None)).await;
    stream.read_until(&run).await;

    let out = a.send(with_cookie(Method::DELETE, "/ui/session", &cookie, Some(&csrf))).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    assert!(stream.ends_promptly().await, "the other replica ended the signed-out page's stream");
    let after = b.send(with_cookie(Method::GET, "/v1/runs", &cookie, None)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text);
}

#[tokio::test]
async fn after_a_lost_listen_connection_every_cache_is_dropped() {
    let db = PgDatabase::create().await;
    let (_a, b) = replicas(&db).await;
    wait_listening(&db, 2).await;
    assert!(!allows(&b, QA).await, "B caches the origin set without the QA origin");

    // A token written as an older replica or a restore would: without a notification.
    let pool = sqlx::PgPool::connect(&db.settings.url).await.unwrap();
    sqlx::query(
        "INSERT INTO api_tokens (id, name, hash, scopes, allowed_origins, created_at)
         VALUES ('t-silent', 'silent', $1, $2, $3, now())",
    )
    .bind("0".repeat(64))
    .bind(json!(["read"]))
    .bind(json!([QA]))
    .execute(&pool)
    .await
    .unwrap();
    assert!(!allows(&b, QA).await, "without a notification B keeps its cached set");

    // Cut every LISTEN connection: each replica listens again and must assume it missed changes.
    let (cut,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(cut >= 2, "the listeners were cut ({cut})");
    let took = within_promptly(|| allows(&b, QA)).await;
    assert!(took.is_some(), "B dropped its origin cache once it listened again");
    pool.close().await;
}
