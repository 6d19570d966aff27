//! The harness server: recording with redaction, injected answers, and connections dropped
//! before and after processing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::post;
use cigw_sim::{Fault, FaultResponses, Harness, ScriptedFault, SimServer};
use http::{Method, StatusCode};

async fn server() -> (Harness, SimServer, Arc<AtomicUsize>) {
    let harness = Harness::new();
    let processed = Arc::new(AtomicUsize::new(0));
    let p = processed.clone();
    let router = Router::new().route(
        "/builds",
        post(move || {
            let p = p.clone();
            async move {
                p.fetch_add(1, Ordering::SeqCst);
                StatusCode::ACCEPTED
            }
        }),
    );
    let server = SimServer::start(&harness, router, FaultResponses::default()).await.unwrap();
    (harness, server, processed)
}

#[tokio::test]
async fn records_requests_with_secrets_redacted() {
    let (harness, server, processed) = server().await;
    let res = reqwest::Client::new()
        .post(format!("{}/builds?x=1", server.url()))
        .header("Authorization", "Bearer top-secret-token")
        .header("Circle-Token", "another-secret")
        .body(r#"{"ref":"heads/main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(processed.load(Ordering::SeqCst), 1);
    let recorded = harness.recorder().requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!((r.method.clone(), r.path.as_str(), r.query.as_deref()), (Method::POST, "/builds", Some("x=1")));
    assert_eq!(r.header("authorization"), Some("<redacted>"));
    assert_eq!(r.header("circle-token"), Some("<redacted>"));
    assert_eq!(r.json().unwrap()["ref"], "heads/main");
    assert!(!format!("{recorded:?}").contains("secret-token"));
}

#[tokio::test]
async fn injected_rate_limits_and_errors_are_not_processed() {
    let (harness, server, processed) = server().await;
    harness.faults().push(ScriptedFault::new(Fault::RateLimit { retry_after: Some(7) }));
    harness.faults().push(ScriptedFault::new(Fault::ServerError { status: StatusCode::BAD_GATEWAY }));
    let client = reqwest::Client::new();
    let res = client.post(format!("{}/builds", server.url())).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    let res = client.post(format!("{}/builds", server.url())).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(processed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dropped_connections_are_ambiguous_to_the_client() {
    let (harness, server, processed) = server().await;
    harness.faults().push(ScriptedFault::new(Fault::DropAfterProcessing));
    harness.faults().push(ScriptedFault::new(Fault::ResetBeforeProcessing));
    let client = reqwest::Client::new();
    let after = client.post(format!("{}/builds", server.url())).send().await.unwrap_err();
    assert!(!after.is_connect(), "the request was sent: {after:?}");
    assert_eq!(processed.load(Ordering::SeqCst), 1, "processed before the drop");
    let before = client.post(format!("{}/builds", server.url())).send().await.unwrap_err();
    assert!(!before.is_connect(), "{before:?}");
    assert_eq!(processed.load(Ordering::SeqCst), 1, "not processed");
    let ok = client.post(format!("{}/builds", server.url())).send().await.unwrap();
    assert_eq!(ok.status(), 202);
}
