//! Provider faults on each provider's trigger path — 429 with `Retry-After`, 5xx, a connection
//! dropped after the provider processed the trigger (ambiguous), a reset before processing — and
//! every run still ends with exactly one provider build. A trigger that may have been sent is
//! never sent again before the gateway looked for its build (invariant 2).

mod support;

use std::time::Duration;

use cigw_sim::harness::{Fault, RecordedRequest, ScriptedFault};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Gateway, is_terminal};

struct Provider {
    /// The target to trigger.
    target: &'static str,
    /// A part of the trigger POST's path.
    trigger_path: &'static str,
    /// Whether a recorded request lists recent builds (what reconciliation does).
    is_list: fn(&RecordedRequest) -> bool,
    /// The build counter's key of a run of `branch` with id `run_id`.
    key: fn(run_id: &str, branch: &str) -> String,
    /// How long a run may take to end after its fault: a provider that rate-limits by the minute
    /// (Codeship) is waited for until the next minute of its clock.
    settle: Duration,
}

fn faults() -> Vec<(&'static str, Fault)> {
    vec![
        ("rate-limited", Fault::RateLimit { retry_after: Some(1) }),
        ("server-error", Fault::ServerError { status: StatusCode::SERVICE_UNAVAILABLE }),
        ("dropped", Fault::DropAfterProcessing),
        ("reset", Fault::ResetBeforeProcessing),
    ]
}

/// Each fault once on the trigger POST of one run; every run ends `succeeded` with one build.
async fn each_fault_ends_with_one_build(provider: Provider) {
    let gw = Gateway::start(20.0, Duration::from_secs(2)).await;
    let harness = &gw.providers.harness;
    let mut runs = Vec::new();
    for (name, fault) in faults() {
        let branch = format!("{}-{name}", provider.target);
        harness
            .faults()
            .push(ScriptedFault::new(fault.clone()).method(Method::POST).path_contains(provider.trigger_path));
        let run = gw.trigger(json!({"targets": [provider.target], "ref": {"branch": branch}})).await.remove(0);
        let done = gw.wait_for_run(&run, provider.settle, is_terminal).await;
        assert_eq!(done["state"], "succeeded", "{name}: {done:#}");
        runs.push((name, fault, branch, run));
    }
    // Late duplicates would show up here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = harness.recorder().requests();
    for (name, fault, branch, run) in &runs {
        let key = (provider.key)(run, branch);
        assert_eq!(harness.builds().count(&key), 1, "{name}: one build for {key}: {:?}", harness.builds().all());
        let events = gw.event_kinds(run).await;
        let duplicate_reported = events.iter().any(|k| k == "possible_duplicate");

        // The POSTs of this run's trigger that reached the simulator, in the order received.
        let posts: Vec<usize> = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.method == Method::POST
                    && r.path.contains(provider.trigger_path)
                    && String::from_utf8_lossy(&r.body).contains(branch.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        let listed_between = posts.len() == 2 && requests[posts[0]..posts[1]].iter().any(provider.is_list);
        match fault {
            Fault::RateLimit { .. } => {
                // Not processed, and the provider said so: sending again at once is safe.
                assert_eq!(posts.len(), 2, "{name}: {events:?}");
                assert!(!duplicate_reported, "{name}: {events:?}");
            }
            Fault::DropAfterProcessing => {
                // The build exists: reconciliation finds and adopts it instead of sending again.
                assert_eq!(posts.len(), 1, "{name}: {events:?}");
                assert!(events.iter().any(|k| k == "reconciled"), "{name}: {events:?}");
                assert!(!duplicate_reported, "{name}: {events:?}");
            }
            Fault::ServerError { .. } => {
                // Ambiguous: the gateway looks for the build first, finds none within the grace
                // window, sends once more and reports a possible duplicate.
                assert_eq!(posts.len(), 2, "{name}: {events:?}");
                assert!(listed_between, "{name}: sent again without looking for the build first");
                assert!(duplicate_reported, "{name}: {events:?}");
            }
            _ => {
                assert!(posts.len() <= 2, "{name}: {events:?}");
                assert!(posts.len() < 2 || listed_between || !duplicate_reported, "{name}: {events:?}");
            }
        }
    }
}

fn circleci() -> Provider {
    Provider {
        target: "api-build",
        trigger_path: "/project/gh/acme/api/pipeline",
        is_list: |r| r.method == Method::GET && r.path.ends_with("/project/gh/acme/api/pipeline"),
        // api-build declares `cigw_run_id`, which the adapter fills with the run id.
        key: |run_id, _| run_id.to_string(),
        settle: Duration::from_secs(15),
    }
}

fn codefresh() -> Provider {
    Provider {
        target: "web-e2e",
        trigger_path: "/pipelines/run/",
        is_list: |r| r.method == Method::GET && r.path.ends_with("/workflow"),
        key: |run_id, _| run_id.to_string(),
        settle: Duration::from_secs(15),
    }
}

fn codeship() -> Provider {
    Provider {
        target: "legacy-basic",
        trigger_path: "/projects/83605ef0-76f8-0135-8810-6e5f001a2e3c/builds",
        is_list: |r| r.method == Method::GET && r.path.ends_with("/builds"),
        key: |_, branch| format!("heads/{branch}"),
        settle: Duration::from_secs(75),
    }
}

#[tokio::test]
async fn circleci_trigger_faults_end_with_one_pipeline_per_run() {
    each_fault_ends_with_one_build(circleci()).await;
}

#[tokio::test]
async fn codefresh_trigger_faults_end_with_one_build_per_run() {
    each_fault_ends_with_one_build(codefresh()).await;
}

#[tokio::test]
async fn codeship_trigger_faults_end_with_one_build_per_run() {
    each_fault_ends_with_one_build(codeship()).await;
}
