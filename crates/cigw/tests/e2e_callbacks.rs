//! CircleCI's signed `workflow-completed` callbacks through the real binary: a run finishes
//! promptly although its next poll is far away; a bad signature is refused; a redelivered event
//! is acknowledged as a duplicate.

mod support;

use std::time::{Duration, Instant};

use cigw_sim::circleci::{sign_v1, workflow_completed};
use cigw_sim::sandbox::CIRCLECI_WEBHOOK_SECRET;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Gateway, is_terminal};

const CALLBACK: &str = "/callbacks/circleci/sandbox";

#[tokio::test]
async fn a_callback_finishes_a_run_long_before_its_next_poll() {
    // The first poll would come after 40 s: only the callback can finish the run in time.
    let gw =
        Gateway::start_custom(20.0, Duration::from_secs(2), &[("poll_initial", "40s"), ("poll_max", "60s")], "").await;
    let started = Instant::now();
    let run = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "callback-me"}})).await.remove(0);
    let done = gw.wait_for_run(&run, Duration::from_secs(15), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(gw.log().contains("callback received"), "{}", gw.log());
}

fn event(id: &str, pipeline_id: &str) -> Vec<u8> {
    workflow_completed(id, pipeline_id, "w", "success")
}

async fn deliver(gw: &Gateway, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut r = gw.anonymous(Method::POST, CALLBACK).header("content-type", "application/json").body(body.to_vec());
    if let Some(s) = signature {
        r = r.header("circleci-signature", s);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_signatures_are_refused_and_redeliveries_are_duplicates() {
    // The first poll comes 8 × `poll_initial` = 4 s after dispatch: until then only callbacks read.
    let gw = Gateway::start_custom(20.0, Duration::from_secs(2), &[("poll_initial", "500ms"), ("poll_max", "60s")], "")
        .await;
    // No simulator deliveries here: this test sends its own.
    gw.providers.circleci.set_webhook(None);
    let run = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "signed"}})).await.remove(0);
    let queued = gw.wait_for_run(&run, Duration::from_secs(10), |s| s != "pending").await;
    let pipeline = queued["provider_ref"]["id"].as_str().expect("dispatched").to_string();
    let body = event("evt-signed-1", &pipeline);

    for signature in [None, Some("v1=0000"), Some(sign_v1("another-secret", &body).as_str())] {
        let (status, answer) = deliver(&gw, &body, signature).await;
        assert_eq!(status, 401, "{signature:?}: {answer}");
        assert_eq!(answer["code"], "unauthenticated", "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    // A refused delivery is not remembered: the genuine one is still accepted and routed.
    let signature = sign_v1(CIRCLECI_WEBHOOK_SECRET, &body);
    let (status, answer) = deliver(&gw, &body, Some(&signature)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["runs"], json!([run]), "{answer}");

    let (status, answer) = deliver(&gw, &body, Some(&signature)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");

    // An accepted callback makes the tracker read the run at once (after a quiet `poll_initial`;
    // within one, callbacks are coalesced into one read `poll_initial` after the last).
    let later = event("evt-signed-2", &pipeline);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, _) = deliver(&gw, &later, Some(&sign_v1(CIRCLECI_WEBHOOK_SECRET, &later))).await;
    assert_eq!(status, 202);
    let done = gw.wait_for_run(&run, Duration::from_secs(10), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
}
