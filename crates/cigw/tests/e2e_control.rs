//! Cancel, rerun, approve and deny through the real binary, on every provider.

mod support;

use std::time::Duration;

use cigw_sim::harness::{Fault, ScriptedFault};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Gateway, is_terminal};

const PRO_PROJECT: &str = "0059df30-7701-0135-8810-6e5f001a2e3c";
const BASIC_PROJECT: &str = "83605ef0-76f8-0135-8810-6e5f001a2e3c";

async fn wait_until_events_contain(gw: &Gateway, run_id: &str, kind: &str) {
    for _ in 0..200 {
        if gw.event_kinds(run_id).await.iter().any(|k| k == kind) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never got a `{kind}` event: {:?}\n{}", gw.event_kinds(run_id).await, gw.log());
}

async fn cancel(gw: &Gateway, run_id: &str) -> Value {
    let (status, body) = gw.post_json(&format!("/v1/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    body
}

fn provider_ref(run: &Value) -> (String, u64) {
    let r = &run["provider_ref"];
    (r["id"].as_str().unwrap_or_else(|| panic!("no provider ref: {run:#}")).to_string(), r["attempt"].as_u64().unwrap())
}

#[tokio::test]
async fn a_pending_run_is_canceled_without_ever_reaching_its_provider() {
    // The provider refuses with a long Retry-After; the account's short retry deadline hands the
    // wait back to the dispatcher, so the run sits pending (unleased) until then.
    let gw = Gateway::start_custom(20.0, Duration::from_secs(4), &[("codefresh.retry_deadline", "300ms")], "").await;
    gw.providers.harness.faults().push(
        ScriptedFault::new(Fault::RateLimit { retry_after: Some(60) })
            .method(Method::POST)
            .path_contains("/pipelines/run/")
            .times(1),
    );
    let run = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "pending-cancel"}})).await.remove(0);
    wait_until_events_contain(&gw, &run, "dispatch_retry").await;
    assert_eq!(gw.get_json(&format!("/v1/runs/{run}")).await["state"], "pending");

    let answer = cancel(&gw, &run).await;
    assert_eq!(answer["state"], "canceled", "{answer:#}");
    let (status, body) = gw.post_json(&format!("/v1/runs/{run}/cancel"), json!({})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_finished")), "{body}");

    tokio::time::sleep(Duration::from_millis(600)).await;
    let done = gw.get_json(&format!("/v1/runs/{run}")).await;
    assert_eq!(done["state"], "canceled");
    assert!(done["provider_ref"].is_null(), "{done:#}");
    assert_eq!(gw.providers.harness.builds().count(&run), 0, "never sent: {:?}", gw.providers.harness.builds().all());
}

#[tokio::test]
async fn a_run_canceled_while_its_dispatch_is_in_flight_is_canceled_at_the_provider() {
    let gw = Gateway::start(20.0, Duration::from_secs(40)).await;
    gw.providers.harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_millis(1500)))
            .method(Method::POST)
            .path_contains("/pipelines/run/"),
    );
    let run = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "inflight-cancel"}})).await.remove(0);
    // Let the dispatcher claim it and send the (slow) trigger.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = cancel(&gw, &run).await;
    assert_eq!(answer["state"], "canceling", "a claimed run waits for its dispatch: {answer:#}");

    let done = gw.wait_for_run(&run, Duration::from_secs(15), is_terminal).await;
    assert_eq!(done["state"], "canceled", "{done:#}");
    let (build, _) = provider_ref(&done);
    assert_eq!(gw.providers.codefresh.status_of(&build).as_deref(), Some("terminated"));
    assert_eq!(gw.providers.harness.builds().count(&run), 1);
    assert!(gw.event_kinds(&run).await.iter().any(|k| k == "cancel_sent"));
}

#[tokio::test]
async fn a_running_run_is_canceled_on_each_provider() {
    let gw = Gateway::start(10.0, Duration::from_secs(60)).await;
    let runs = gw
        .trigger(json!({"targets": ["api-build", "web-e2e", "legacy-basic"], "ref": {"branch": "cancel-running"}}))
        .await;
    for run in &runs {
        let seen = gw.wait_for_run(run, Duration::from_secs(10), |s| s == "running" || is_terminal(s)).await;
        assert_eq!(seen["state"], "running", "{seen:#}");
        let answer = cancel(&gw, run).await;
        assert_eq!(answer["state"], "canceling", "{answer:#}");
    }
    for run in &runs {
        let done = gw.wait_for_run(run, Duration::from_secs(15), is_terminal).await;
        assert_eq!(done["state"], "canceled", "{done:#}");
        assert!(done["finished_at"].is_string(), "{done:#}");
        assert!(gw.event_kinds(run).await.iter().any(|k| k == "cancel_sent"), "{run}");
    }
    let web = gw.get_json(&format!("/v1/runs/{}", runs[1])).await;
    assert_eq!(gw.providers.codefresh.status_of(&provider_ref(&web).0).as_deref(), Some("terminated"));
    let circle = gw.get_json(&format!("/v1/runs/{}", runs[0])).await;
    let pipeline = provider_ref(&circle).0;
    let workflows: Vec<_> =
        gw.providers.circleci.workflows().into_iter().filter(|w| w.pipeline_id == pipeline).collect();
    assert!(!workflows.is_empty() && workflows.iter().any(|w| w.canceled_at.is_some()), "{workflows:#?}");
    assert_eq!(gw.providers.harness.builds().total(), 3, "{:?}", gw.providers.harness.builds().all());
}

#[tokio::test]
async fn an_unconfirmed_codeship_run_is_canceled_once_its_build_is_known() {
    let gw = Gateway::start(10.0, Duration::from_secs(60)).await;
    // Codeship answers the trigger with 202 and no id; while its build list fails, the run
    // cannot be matched with its build.
    let list = format!("{PRO_PROJECT}/builds");
    gw.providers.harness.faults().push(
        ScriptedFault::new(Fault::ServerError { status: StatusCode::BAD_GATEWAY })
            .method(Method::GET)
            .path_contains(list)
            .times(10_000),
    );
    let run = gw.trigger(json!({"targets": ["legacy-pro"], "ref": {"branch": "unconfirmed-cancel"}})).await.remove(0);
    let seen = gw.wait_for_run(&run, Duration::from_secs(10), |s| s != "pending").await;
    assert_eq!((seen["state"].as_str(), seen["unconfirmed"].as_bool()), (Some("queued"), Some(true)), "{seen:#}");

    let answer = cancel(&gw, &run).await;
    assert_eq!(answer["state"], "canceling", "{answer:#}");
    gw.providers.harness.faults().clear();

    let done = gw.wait_for_run(&run, Duration::from_secs(15), is_terminal).await;
    assert_eq!(done["state"], "canceled", "{done:#}");
    let (uuid, _) = provider_ref(&done);
    assert_eq!(gw.providers.codeship.build_uuids(PRO_PROJECT), vec![uuid]);
    assert_eq!(done["raw_status"], "stopped", "{done:#}");
    assert_eq!(gw.providers.harness.builds().count("heads/unconfirmed-cancel"), 1);
}

/// Rerun `run_id` and follow the new run to its end; returns it.
async fn rerun(gw: &Gateway, run_id: &str, failed_only: bool) -> Value {
    let (status, body) = gw.post_json(&format!("/v1/runs/{run_id}/rerun"), json!({"failed_only": failed_only})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rerun_of"], run_id, "{body:#}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_ne!(id, run_id);
    gw.wait_for_run(&id, Duration::from_secs(15), is_terminal).await
}

#[tokio::test]
async fn rerun_on_each_provider() {
    let gw = Gateway::start(20.0, Duration::from_secs(4)).await;
    let runs = gw
        .trigger(
            json!({"targets": ["api-lint", "web-e2e", "legacy-basic", "legacy-pro"], "ref": {"branch": "rerun-me"},
                        "overrides": {"api-lint": {"ref": {"branch": "fail-lint"}}}}),
        )
        .await;
    let mut originals = Vec::new();
    for run in &runs {
        originals.push(gw.wait_for_run(run, Duration::from_secs(15), is_terminal).await);
    }
    assert_eq!(originals[0]["state"], "failed", "{:#}", originals[0]);
    for o in &originals[1..] {
        assert_eq!(o["state"], "succeeded", "{o:#}");
    }
    let (status, body) = gw.post_json(&format!("/v1/runs/{}/rerun", runs[1]), json!({"bogus": 1})).await;
    assert_eq!(status, 422, "{body}");

    // CircleCI: the same pipeline, attempt + 1, only its failed workflows.
    let circle = rerun(&gw, &runs[0], true).await;
    assert_eq!(circle["state"], "failed", "fail-lint fails again: {circle:#}");
    let (id, attempt) = provider_ref(&originals[0]);
    assert_eq!(provider_ref(&circle), (id.clone(), attempt + 1));
    assert_eq!(gw.providers.harness.builds().count("fail-lint"), 1, "a rerun is not a new pipeline");

    // Codefresh: a new build.
    let fresh = rerun(&gw, &runs[1], false).await;
    assert_eq!(fresh["state"], "succeeded", "{fresh:#}");
    let (old_build, _) = provider_ref(&originals[1]);
    assert_ne!(provider_ref(&fresh).0, old_build);
    assert_eq!(gw.providers.harness.builds().count(&format!("rebuild:{old_build}")), 1);

    // Codeship Basic: the same build uuid runs again.
    let basic = rerun(&gw, &runs[2], false).await;
    assert_eq!(basic["state"], "succeeded", "{basic:#}");
    let (uuid, attempt) = provider_ref(&originals[2]);
    assert_eq!(provider_ref(&basic), (uuid.clone(), attempt + 1));
    assert_eq!(gw.providers.codeship.runs_of(&uuid), 2);
    assert_eq!(gw.providers.codeship.build_uuids(BASIC_PROJECT).len(), 1);

    // Codeship Pro: a new build, accepted without an id and matched.
    let pro = rerun(&gw, &runs[3], false).await;
    assert_eq!(pro["state"], "succeeded", "{pro:#}");
    let (old_uuid, _) = provider_ref(&originals[3]);
    let (new_uuid, _) = provider_ref(&pro);
    assert_ne!(new_uuid, old_uuid);
    let mut uuids = gw.providers.codeship.build_uuids(PRO_PROJECT);
    uuids.sort();
    let mut want = vec![old_uuid, new_uuid];
    want.sort();
    assert_eq!(uuids, want);

    // Every rerun belongs to the original trigger.
    let trigger = gw.get_json(&format!("/v1/triggers/{}", originals[0]["trigger_id"].as_str().unwrap())).await;
    assert_eq!(trigger["runs"].as_array().unwrap().len(), 8, "{trigger:#}");
}

async fn wait_blocked(gw: &Gateway, run: &str) {
    let seen = gw.wait_for_run(run, Duration::from_secs(10), |s| s == "blocked" || is_terminal(s)).await;
    assert_eq!(seen["state"], "blocked", "{seen:#}");
}

async fn decide(gw: &Gateway, run: &str, decision: &str) {
    let (status, body) = gw.post_json(&format!("/v1/runs/{run}/{decision}"), json!({})).await;
    assert_eq!(status, 202, "{decision}: {body}");
}

#[tokio::test]
async fn approve_and_deny_on_circleci_and_codefresh() {
    let gw = Gateway::start(20.0, Duration::from_secs(4)).await;
    let approver = gw.create_token("approver", &["approve", "read"], None).await;
    let reader = gw.create_token("reader", &["read"], None).await;

    let circle = gw
        .trigger(json!({"targets": ["api-release", "web-deploy"], "ref": {"branch": "release-a"},
            "overrides": {"web-deploy": {"ref": {"branch": "needs-approval"}}}}))
        .await;
    let (release_a, deploy_a) = (&circle[0], &circle[1]);
    wait_blocked(&gw, release_a).await;
    wait_blocked(&gw, deploy_a).await;

    // Approving needs the approve scope; a run that is not blocked cannot be approved.
    let r = gw
        .anonymous(reqwest::Method::POST, &format!("/v1/runs/{release_a}/approve"))
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for run in [release_a, deploy_a] {
        let r = gw
            .anonymous(reqwest::Method::POST, &format!("/v1/runs/{run}/approve"))
            .bearer_auth(&approver)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    for run in [release_a, deploy_a] {
        let done = gw.wait_for_run(run, Duration::from_secs(15), is_terminal).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
        let events = done["events"].as_array().unwrap();
        let approved = events.iter().find(|e| e["kind"] == "approved").unwrap_or_else(|| panic!("{done:#}"));
        assert_eq!(approved["data"]["by"], "approver");
    }
    let (status, body) = gw.post_json(&format!("/v1/runs/{release_a}/approve"), json!({})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_not_blocked")), "{body}");

    // Denied: the held work never runs.
    let denied = gw
        .trigger(json!({"targets": ["api-release", "web-deploy"], "ref": {"branch": "release-b"},
            "overrides": {"web-deploy": {"ref": {"branch": "needs-approval"}}}}))
        .await;
    for run in &denied {
        wait_blocked(&gw, run).await;
        decide(&gw, run, "deny").await;
    }
    for run in &denied {
        let done = gw.wait_for_run(run, Duration::from_secs(15), is_terminal).await;
        assert_ne!(done["state"], "succeeded", "{done:#}");
        assert!(done["events"].as_array().unwrap().iter().any(|e| e["kind"] == "denied"), "{done:#}");
    }
    // Codeship has no approvals.
    let basic = gw.trigger(json!({"targets": ["legacy-basic"], "ref": {"branch": "no-approvals"}})).await.remove(0);
    gw.wait_for_run(&basic, Duration::from_secs(15), is_terminal).await;
    let (status, body) = gw.post_json(&format!("/v1/runs/{basic}/approve"), json!({})).await;
    assert!(status == 422 || status == 409, "{status} {body}");
    assert_eq!(gw.providers.harness.builds().total(), 5, "{:?}", gw.providers.harness.builds().all());
}
