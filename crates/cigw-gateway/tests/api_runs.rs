//! `/v1/runs`: reads with masked secrets and events, list filters and cursor paging, cancel,
//! rerun, approve/deny and refresh preconditions, over a real SQLite store.

mod api_support;

use api_support::{ADMIN, App};
use axum::http::StatusCode;
use cigw_core::RunState;
use cigw_sim::{Fault, ScriptedFault};
use serde_json::json;

#[tokio::test]
async fn a_run_reads_back_with_masked_secrets_and_its_events() {
    let app = App::new().await;
    let ids = app
        .trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "dev"},
                        "parameters": {"api_key": "hunter2", "retries": 4}}))
        .await;
    let reader = app.token("reader", &["read"]).await;
    let reply = app.get(&format!("/v1/runs/{}", ids[0]), &reader).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains("hunter2"), "{}", reply.text);
    let run = &reply.body;
    assert_eq!(run["id"], ids[0].as_str());
    assert_eq!(run["target"], "web-e2e");
    assert_eq!(run["provider"], "circleci");
    assert_eq!(run["account"], "main");
    assert_eq!(run["state"], "pending");
    assert_eq!(run["ref"], json!({"branch": "dev"}));
    assert_eq!(run["parameters"], json!({"api_key": "***", "retries": 4, "env": "qa"}));
    assert_eq!(run["provider_ref"], serde_json::Value::Null);
    assert_eq!(run["requested_by"], "bootstrap-admin");
    assert_eq!(run["dispatch_attempts"], 0);
    assert_eq!(run["cancel_requested"], false);
    assert_eq!(run["links"]["self"], format!("/v1/runs/{}", ids[0]));
    assert_eq!(run["links"]["provider"], serde_json::Value::Null);
    assert_eq!(run["events"][0]["kind"], "created");
    assert_eq!(run["events"][0]["state"], "pending");

    // Once dispatched the provider build shows up.
    let dispatched = app.dispatch(&ids[0]).await;
    let reply = app.get(&format!("/v1/runs/{}", ids[0]), &reader).await;
    assert_eq!(reply.body["state"], "queued");
    assert_eq!(reply.body["provider_ref"]["id"], dispatched.provider_ref.unwrap().id.as_str());
    assert_eq!(reply.body["provider_ref"]["attempt"], 1);
    let kinds: Vec<&str> =
        reply.body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "dispatched"]);
    let events = app.get(&format!("/v1/runs/{}/events", ids[0]), &reader).await;
    assert_eq!(events.body["events"], reply.body["events"]);

    app.get("/v1/runs/does-not-exist", &reader).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let no_read = app.token("writer", &["trigger"]).await;
    let reply = app.get(&format!("/v1/runs/{}", ids[0]), &no_read).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(reply.body["message"], "this token lacks the scope `read`");
}

#[tokio::test]
async fn runs_list_with_filters_and_cursor_paging() {
    let app = App::new().await;
    let first = app.trigger(json!({"targets": ["web-e2e", "circle-build"]})).await;
    let second = app.trigger(json!({"targets": ["web-e2e"]})).await;
    let third = app.trigger(json!({"targets": ["web-e2e"]})).await;
    app.finish(&second[0], RunState::Succeeded).await;
    let reader = app.token("reader", &["read"]).await;

    let ids = |reply: &api_support::Reply| -> Vec<String> {
        reply.body["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let all = app.get("/v1/runs", &reader).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(ids(&all).len(), 4);
    assert_eq!(ids(&all)[0], third[0], "newest first");
    assert_eq!(all.body["next_cursor"], serde_json::Value::Null);

    let web = app.get("/v1/runs?target=web-e2e", &reader).await;
    assert_eq!(ids(&web), [third[0].clone(), second[0].clone(), first[0].clone()]);
    let done = app.get("/v1/runs?state=succeeded", &reader).await;
    assert_eq!(ids(&done), [second[0].clone()]);
    let of_first =
        app.get(&format!("/v1/runs?trigger_id={}", all.body["runs"][3]["trigger_id"].as_str().unwrap()), &reader).await;
    assert_eq!(ids(&of_first).len(), 2);
    let future = app.get("/v1/runs?since=2999-01-01T00:00:00Z", &reader).await;
    assert!(ids(&future).is_empty());

    // Pages of two, following the cursor.
    let page1 = app.get("/v1/runs?limit=2", &reader).await;
    assert_eq!(ids(&page1).len(), 2);
    let cursor = page1.body["next_cursor"].as_str().expect("a cursor").to_string();
    let page2 = app.get(&format!("/v1/runs?limit=2&cursor={cursor}"), &reader).await;
    assert_eq!(page2.status, StatusCode::OK, "{}", page2.text);
    assert_eq!(ids(&page2).len(), 2);
    assert_eq!(page2.body["next_cursor"], serde_json::Value::Null);
    let mut seen: Vec<String> = ids(&page1).into_iter().chain(ids(&page2)).collect();
    seen.dedup();
    assert_eq!(seen, ids(&all));
}

#[tokio::test]
async fn bad_list_filters_are_400_naming_the_field() {
    let app = App::new().await;
    for (query, field, expected) in [
        ("state=done", "state", "expected one of pending, queued"),
        ("since=yesterday", "since", "RFC 3339"),
        ("limit=0", "limit", "1 to 1000"),
        ("limit=abc", "limit", "1 to 1000"),
        ("colour=red", "colour", "unknown query parameter"),
    ] {
        let reply = app.get(&format!("/v1/runs?{query}"), ADMIN).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(reply.body["details"][0]["field"], field, "{query}");
        assert!(reply.body["message"].as_str().unwrap().contains(expected), "{query}: {}", reply.text);
    }
    let reply = app.get("/v1/runs?cursor=garbage", ADMIN).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}

#[tokio::test]
async fn cancel_a_pending_run_then_409_once_finished() {
    let app = App::new().await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    let path = format!("/v1/runs/{}/cancel", ids[0]);
    let reader = app.token("reader", &["read"]).await;
    app.post_empty(&path, &reader).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(app.store().get_run(&ids[0]).await.unwrap().state, RunState::Pending);

    let canceller = app.token("canceller", &["cancel"]).await;
    let reply = app.post_empty(&path, &canceller).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["state"], "canceled");
    assert_eq!(app.store().get_run(&ids[0]).await.unwrap().state, RunState::Canceled);

    let again = app.post_empty(&path, &canceller).await;
    again.assert_error(StatusCode::CONFLICT, "run_finished");
    app.post_empty("/v1/runs/nope/cancel", &canceller).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn cancel_a_dispatched_run_asks_the_engine() {
    let app = App::new().await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    app.dispatch(&ids[0]).await;
    let reply = app.post_empty(&format!("/v1/runs/{}/cancel", ids[0]), ADMIN).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["state"], "canceling");
    assert_eq!(reply.body["cancel_requested"], true);
}

#[tokio::test]
async fn rerun_preconditions_and_a_rerun() {
    let app = App::new().await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    let web = ids[0].clone();
    let web_only = app.token("web-only", &["trigger:web-*"]).await;

    // Not finished.
    let reply = app.post_empty(&format!("/v1/runs/{web}/rerun"), &web_only).await;
    reply.assert_error(StatusCode::CONFLICT, "run_not_finished");
    // Finished without ever reaching the provider.
    app.finish(&web, RunState::Error).await;
    let reply = app.post_empty(&format!("/v1/runs/{web}/rerun"), &web_only).await;
    reply.assert_error(StatusCode::CONFLICT, "run_not_started");

    // A run that ran and failed can be rerun, by a token allowed to trigger its target.
    let again = app.trigger(json!({"targets": ["web-e2e", "circle-build"]})).await;
    app.dispatch(&again[0]).await;
    app.observe(&again[0], RunState::Failed).await;
    app.dispatch(&again[1]).await;
    app.observe(&again[1], RunState::Failed).await;
    let before = app.run_count().await;
    let reply = app.post_empty(&format!("/v1/runs/{}/rerun", again[1]), &web_only).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(reply.body["message"], "this token lacks the scope `trigger:circle-build`");
    let reply = app.post(&format!("/v1/runs/{}/rerun", again[0]), &web_only, json!({"failed_only": true})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unsupported");
    let reply = app.post(&format!("/v1/runs/{}/rerun", again[0]), &web_only, json!({"failed": true})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(app.run_count().await, before, "refused reruns store nothing");

    let reply = app.post_empty(&format!("/v1/runs/{}/rerun", again[0]), &web_only).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["rerun_of"], again[0].as_str());
    assert_eq!(reply.body["state"], "pending");
    assert_eq!(reply.body["trigger_id"], app.store().get_run(&again[0]).await.unwrap().trigger_id.as_str());
    assert_eq!(reply.body["rerun_failed_only"], false);
    let reply = app.post(&format!("/v1/runs/{}/rerun", again[1]), ADMIN, json!({"failed_only": true})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["rerun_failed_only"], true);
    let new_run = app.store().get_run(reply.body["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(new_run.rerun_of.as_deref(), Some(again[1].as_str()));
    assert_eq!(app.run_count().await, before + 2);
}

#[tokio::test]
async fn approve_and_deny_blocked_runs() {
    let app = App::new().await;
    let ids = app
        .trigger(json!({"targets": ["web-e2e", "ship-deploy"], "overrides": {"web-e2e": {"parameters": {"approval": true}}}}))
        .await;
    let approver = app.token("approver", &["approve"]).await;
    let path = format!("/v1/runs/{}/approve", ids[0]);
    // Pending: not blocked.
    app.post_empty(&path, &approver).await.assert_error(StatusCode::CONFLICT, "run_not_blocked");
    app.post_empty(&path, &app.token("reader", &["read"]).await)
        .await
        .assert_error(StatusCode::FORBIDDEN, "missing_scope");

    app.dispatch(&ids[0]).await;
    app.observe(&ids[0], RunState::Blocked).await;
    let reply = app.post_empty(&path, &approver).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let events = app.get(&format!("/v1/runs/{}", ids[0]), ADMIN).await.body["events"].clone();
    let approved = events.as_array().unwrap().iter().find(|e| e["kind"] == "approved").expect("an approved event");
    assert_eq!(approved["data"]["by"], "approver");
    // The provider refuses a second decision: its conflict is passed on.
    let reply = app.post_empty(&format!("/v1/runs/{}/deny", ids[0]), &approver).await;
    reply.assert_error(StatusCode::CONFLICT, "provider_conflict");

    // A target whose provider cannot approve.
    app.dispatch(&ids[1]).await;
    app.observe(&ids[1], RunState::Blocked).await;
    let reply = app.post_empty(&format!("/v1/runs/{}/approve", ids[1]), &approver).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unsupported");
}

#[tokio::test]
async fn deny_records_the_decision_and_provider_failures_are_502() {
    let app = App::new().await;
    let ids = app.trigger(json!({"targets": ["web-e2e"], "parameters": {"approval": true}})).await;
    app.dispatch(&ids[0]).await;
    app.observe(&ids[0], RunState::Blocked).await;
    app.harness.faults().push(
        ScriptedFault::new(Fault::ServerError { status: StatusCode::SERVICE_UNAVAILABLE })
            .path_contains("/approve")
            .times(100),
    );
    let reply = app.post_empty(&format!("/v1/runs/{}/deny", ids[0]), ADMIN).await;
    reply.assert_error(StatusCode::BAD_GATEWAY, "provider_error");
    assert!(reply.body["message"].as_str().unwrap().contains("provider unavailable"), "{}", reply.text);
    app.harness.faults().clear();

    let reply = app.post_empty(&format!("/v1/runs/{}/deny", ids[0]), ADMIN).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let events = app.get(&format!("/v1/runs/{}/events", ids[0]), ADMIN).await.body["events"].clone();
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "denied").count(), 1, "{kinds:?}");
}

#[tokio::test]
async fn refresh_a_tracked_run_and_409_once_finished() {
    let app = App::new().await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    let reader = app.token("reader", &["read"]).await;
    let path = format!("/v1/runs/{}/refresh", ids[0]);
    let reply = app.post_empty(&path, &reader).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    app.dispatch(&ids[0]).await;
    let observed = app.observe(&ids[0], RunState::Running).await;
    let later = observed.next_poll_at.expect("tracked");
    assert!(later > chrono::Utc::now() + chrono::Duration::minutes(30));
    let reply = app.post_empty(&path, &reader).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let due = app.store().get_run(&ids[0]).await.unwrap().next_poll_at.expect("tracked");
    assert!(due <= chrono::Utc::now(), "refresh makes the run due now: {due}");
    app.observe(&ids[0], RunState::Succeeded).await;
    app.post_empty(&path, &reader).await.assert_error(StatusCode::CONFLICT, "run_finished");
}
