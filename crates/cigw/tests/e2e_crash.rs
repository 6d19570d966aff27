//! Crash recovery and graceful shutdown of the real binary: SIGKILL between the 202 and the
//! dispatch, and while a dispatch is in flight, then a restart on the same database — every
//! accepted run ends with exactly one provider build; SIGTERM exits 0 and releases the leases.

mod support;

use std::time::{Duration, Instant};

use cigw_sim::harness::{Fault, ScriptedFault};
use reqwest::Method;
use serde_json::json;
use support::{Gateway, is_terminal};

#[tokio::test]
async fn sigkill_after_the_202_and_during_a_dispatch_loses_and_duplicates_nothing() {
    // Every new run waits two seconds before it is sent, so runs accepted just before the kill
    // are certainly still undispatched when it lands.
    let mut gw = Gateway::start_custom(20.0, Duration::from_secs(2), &[("dispatch_delay", "2s")], "").await;
    let harness = gw.providers.harness.clone();
    // The Codefresh trigger hangs, so its dispatch is in flight when the process dies.
    harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_secs(3)))
            .method(Method::POST)
            .path_contains("/pipelines/run/"),
    );
    let in_flight = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "crash-inflight"}})).await.remove(0);
    for _ in 0..300 {
        if harness.recorder().count(&Method::POST, "/pipelines/run/") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(harness.recorder().count(&Method::POST, "/pipelines/run/"), 1, "the trigger is in flight");

    // Accepted, on disk, and not dispatched yet.
    let accepted = gw
        .trigger(json!({"targets": ["api-build", "legacy-basic", "legacy-pro"], "ref": {"branch": "crash-accepted"},
                        "overrides": {"legacy-pro": {"ref": {"branch": "crash-accepted-pro"}}}}))
        .await;
    let mut undispatched = 0;
    for run in &accepted {
        let r = gw.get_json(&format!("/v1/runs/{run}")).await;
        if r["state"] == "pending" && r["dispatch_attempts"] == 0 {
            undispatched += 1;
        }
    }
    gw.kill();
    assert_eq!(undispatched, accepted.len(), "the accepted runs were killed before their dispatch");
    let sent_before_restart = harness.builds().total();

    gw.spawn().await;
    let mut all = accepted.clone();
    all.push(in_flight.clone());
    for run in &all {
        let done = gw.wait_for_run(run, Duration::from_secs(20), is_terminal).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let builds = harness.builds();
    assert_eq!(builds.count(&in_flight), 1, "{:?}", builds.all());
    assert_eq!(builds.count(&accepted[0]), 1, "CircleCI counts by cigw_run_id: {:?}", builds.all());
    assert_eq!(builds.count("heads/crash-accepted"), 1, "{:?}", builds.all());
    assert_eq!(builds.count("heads/crash-accepted-pro"), 1, "{:?}", builds.all());
    assert_eq!(builds.total(), 4, "{:?} (sent before the restart: {sent_before_restart})", builds.all());

    // The in-flight run was reconciled rather than blindly sent again; if its build could not be
    // found, the second send is reported.
    let events = gw.event_kinds(&in_flight).await;
    assert!(
        events.iter().any(|k| k == "reconciled" || k == "possible_duplicate"),
        "an interrupted dispatch is reconciled: {events:?}"
    );
    let runs = gw.all_runs().await;
    assert_eq!(runs.len(), 4, "no run lost, none invented");
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_releases_leases_for_the_next_start() {
    // A long lease: a restart that had to wait for it to expire would time out below.
    let mut gw = Gateway::start_custom(20.0, Duration::from_secs(20), &[("lease", "60s")], "").await;
    let harness = gw.providers.harness.clone();
    let running = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "term-running"}})).await.remove(0);
    gw.wait_for_run(&running, Duration::from_secs(10), |s| s == "running").await;

    harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_millis(1500)))
            .method(Method::POST)
            .path_contains("/pipelines/run/"),
    );
    let in_flight = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "term-inflight"}})).await.remove(0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped_at = Instant::now();
    let status = gw.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{}", gw.log());
    assert!(stopped_at.elapsed() < Duration::from_secs(10), "{:?}\n{}", stopped_at.elapsed(), gw.log());
    assert!(gw.log().contains("leases released"), "{}", gw.log());

    let restarted = Instant::now();
    gw.spawn().await;
    for run in [&running, &in_flight] {
        let done = gw.wait_for_run(run, Duration::from_secs(20), is_terminal).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
    }
    assert!(restarted.elapsed() < Duration::from_secs(20), "picked up without waiting for the 60 s lease");
    // The in-flight trigger finished during shutdown: its build was recorded, never sent twice.
    assert_eq!(harness.builds().count(&in_flight), 1, "{:?}", harness.builds().all());
    assert_eq!(harness.builds().count(&running), 1);
    let events = gw.event_kinds(&in_flight).await;
    assert!(!events.iter().any(|k| k == "possible_duplicate"), "{events:?}");
}
