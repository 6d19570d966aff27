//! `GET /v1/events` streams end with their token (revoked here, revoked by another replica, or
//! expired), and their number is capped per token and in total (429 beyond).

mod api_support;

use std::time::Duration;

use api_support::{ADMIN, App, in_secs, request};
use axum::http::{Method, StatusCode};
use cigw_core::config::Settings;
use cigw_gateway::state::StreamSettings;
use futures::StreamExt;
use serde_json::json;
use tower::ServiceExt;

/// Generous bound for "within seconds".
const SOON: Duration = Duration::from_secs(10);

async fn app_with(adjust: impl FnOnce(&mut Settings)) -> App {
    let mut app = App::with_settings(adjust).await;
    app.state.streams = StreamSettings {
        poll_interval: Duration::from_millis(50),
        keep_alive: Duration::from_secs(15),
        ..Default::default()
    };
    app.router = cigw_gateway::build_router(app.state.clone());
    app
}

/// An open stream's body.
struct Stream(axum::body::BodyDataStream);

impl Stream {
    /// Read until `needle` appears; panics after `SOON`.
    async fn read_until(&mut self, needle: &str) {
        let mut seen = String::new();
        let found = async {
            while !seen.contains(needle) {
                let chunk = self.0.next().await.expect("the stream ended early").unwrap();
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(SOON, found).await.expect("the expected event arrived");
    }

    /// Whether the stream ends within `limit` (reading what comes until then).
    async fn ends_within(&mut self, limit: Duration) -> bool {
        let ended = async {
            while let Some(chunk) = self.0.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(limit, ended).await.is_ok()
    }
}

async fn open(app: &App, token: &str) -> Result<Stream, (StatusCode, serde_json::Value)> {
    let response =
        app.router.clone().oneshot(request(Method::GET, "/v1/events?from=0", Some(token), None)).await.unwrap();
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(Stream(response.into_body().into_data_stream()));
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Err((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

async fn trigger(app: &App) -> String {
    app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})).await.remove(0)
}

/// The id of the stored token named `name`.
async fn token_id(app: &App, name: &str) -> String {
    app.store().list_tokens().await.unwrap().into_iter().find(|t| t.name == name).unwrap().id
}

#[tokio::test]
async fn revoking_the_token_through_the_api_ends_its_open_stream() {
    let app = app_with(|s| s.server.stream_token_check = Duration::from_secs(3600)).await;
    let reader = app.token("dashboard", &["read"]).await;
    let first = trigger(&app).await;
    let mut stream = open(&app, &reader).await.unwrap();
    stream.read_until(&first).await;

    let id = token_id(&app, "dashboard").await;
    let revoked = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    // Without a periodic check (an hour), only the revocation signal can end it this soon.
    assert!(stream.ends_within(SOON).await, "the stream of a revoked token ended");
    assert_eq!(open(&app, &reader).await.err().unwrap().0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_revoked_by_another_replica_ends_the_stream_at_the_next_check() {
    let app = app_with(|s| s.server.stream_token_check = Duration::from_millis(200)).await;
    let reader = app.token("dashboard", &["read"]).await;
    let mut stream = open(&app, &reader).await.unwrap();
    let run = trigger(&app).await;
    stream.read_until(&run).await;
    // Straight in the database, as another replica would: this process gets no signal.
    app.store().revoke_token(&token_id(&app, "dashboard").await, chrono::Utc::now()).await.unwrap();
    assert!(stream.ends_within(SOON).await, "the stream of a token revoked elsewhere ended");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = app_with(|s| s.server.stream_token_check = Duration::from_secs(3600)).await;
    let reader = app.token_with("short-lived", &["read"], |t| t.expires_at = Some(in_secs(5))).await;
    let mut stream = open(&app, &reader).await.unwrap();
    let run = trigger(&app).await;
    stream.read_until(&run).await;
    assert!(stream.ends_within(SOON).await, "the stream of an expired token ended");
}

#[tokio::test]
async fn streams_are_capped_per_token_and_in_total_with_a_json_429() {
    let app = app_with(|s| {
        s.server.max_event_streams = 3;
        s.server.max_event_streams_per_token = 2;
    })
    .await;
    let a = app.token("a", &["read"]).await;
    let b = app.token("b", &["read"]).await;
    let c = app.token("c", &["read"]).await;
    let a1 = open(&app, &a).await.unwrap();
    let _a2 = open(&app, &a).await.unwrap();
    let (status, body) = open(&app, &a).await.err().expect("a third stream of one token is refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "too_many_streams", "{body}");
    assert!(body["message"].as_str().unwrap().contains("token `a`"), "{body}");

    let _b1 = open(&app, &b).await.unwrap();
    let (status, body) = open(&app, &c).await.err().expect("a fourth stream in total is refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "too_many_streams", "{body}");

    // A closed stream gives its place back.
    drop(a1);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(stream) = open(&app, &c).await {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a place freed by a closed stream can be taken again");
    assert_eq!(app.state.event_streams.open(), 3);
}
