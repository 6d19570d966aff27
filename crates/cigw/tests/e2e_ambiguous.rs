//! A provider that accepts the trigger POST, then does not answer before the account's
//! `timeout`, and never lists the build (issue 12, defects 1 and 2), against the debug binary.
//! POSTs are counted at the simulator.

mod support;

use std::time::Duration;

use cigw_sim::harness::{Fault, Listing, ScriptedFault};
use reqwest::Method;
use serde_json::json;
use support::{Gateway, is_terminal};

/// Codeship (Pro) as the provider: its trigger answer carries no id, so only a list could show
/// the build.
const TARGET: &str = "legacy-pro";

async fn hostile_codeship() -> Gateway {
    let gw = Gateway::start_custom(20.0, Duration::from_secs(2), &[("codeship.timeout", "500ms")], "").await;
    let harness = &gw.providers.harness;
    harness.faults().push(
        ScriptedFault::new(Fault::HangAfterProcessing(Duration::from_secs(2)))
            .method(Method::POST)
            .path_contains("/builds")
            .times(1000),
    );
    harness.faults().set_listing(Listing::HiddenSince(harness.clock().now()));
    gw
}

/// Trigger POSTs the Codeship simulator received.
fn trigger_posts(gw: &Gateway) -> usize {
    let requests = gw.providers.harness.recorder().matching(&Method::POST, "/builds");
    requests.iter().filter(|r| r.path.ends_with("/builds")).count()
}

#[tokio::test]
async fn an_accepted_trigger_that_never_answers_is_sent_at_most_twice_then_reported() {
    let gw = hostile_codeship().await;
    let run = gw.trigger(json!({"targets": [TARGET], "ref": {"branch": "master"}})).await.remove(0);
    let done = gw.wait_for_run(&run, Duration::from_secs(90), is_terminal).await;
    assert_eq!(done["state"], "error", "{done:#}");
    let message = done["message"].as_str().unwrap_or_default();
    assert!(message.contains("builds may exist at the provider"), "{message}");
    assert!(message.contains("branch `master`"), "{message}");
    // Some time for a late resend to show up, then count at the simulator.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trigger_posts(&gw), 2, "never more than timings.max_unconfirmed_sends (2) POSTs");
    let kinds = gw.event_kinds(&run).await;
    assert_eq!(kinds.iter().filter(|k| *k == "possible_duplicate").count(), 1, "{kinds:?}");
}

#[tokio::test]
async fn canceling_an_ambiguous_run_sends_nothing_more_and_says_no_build_was_found() {
    let gw = hostile_codeship().await;
    let run = gw.trigger(json!({"targets": [TARGET], "ref": {"branch": "master"}})).await.remove(0);
    // Wait until the first (hanging) send has been made and given up on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !gw.event_kinds(&run).await.iter().any(|k| k == "dispatch_retry") {
        assert!(std::time::Instant::now() < deadline, "the first send never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = gw.post_json(&format!("/v1/runs/{run}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body:#}");
    assert_eq!(body["state"], "canceling", "an earlier send may have started a build: {body:#}");
    let done = gw.wait_for_run(&run, Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "canceled", "{done:#}");
    assert!(done["message"].as_str().unwrap_or_default().contains("no build was found"), "{done:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trigger_posts(&gw), 1, "a canceled run is never sent again");
}
