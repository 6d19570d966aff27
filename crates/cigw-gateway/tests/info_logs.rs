//! What the engine writes to the log for a run at the default level: two lines, `dispatched`
//! and `run ended` (and `build correlated` between them where the provider answers without an
//! id), with the run named by its span. Every step is an event of the run; at thousands of runs
//! a second, a line per step and per adapter call cost about a tenth of the throughput
//! (docs/benchmarks.md), so those are at debug.
//!
//! Its own test binary: it installs the process-wide subscriber.

use std::time::Duration;

use cigw_sim::sandbox::SandboxProviders;
use serde_json::{Value, json};

mod sandbox_support;
use sandbox_support::{capture_logs, get_json, post_json, quick_flow_overrides, serve_sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_info_a_run_logs_its_dispatch_and_its_end_and_nothing_between() {
    // What `cigw serve` installs by default (`CIGW_LOG` unset), as JSON lines to read back.
    let captured = capture_logs("info");

    let providers = SandboxProviders::start(60.0, Duration::from_secs(3)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = cigw_gateway::auth::generate_token();
    let overrides = quick_flow_overrides(&providers, dir.path(), &admin);
    let served = serve_sandbox(listener, &overrides).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let body = json!({"targets": ["api-build", "web-e2e", "legacy-basic"], "ref": {"branch": "main"}});
    let accepted = post_json(&http, &format!("{base}/v1/triggers"), &admin, &body).await;
    let runs: Vec<String> =
        accepted["runs"].as_array().expect("runs").iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(runs.len(), 3, "{accepted}");
    for run in &runs {
        let mut last = Value::Null;
        for _ in 0..20 {
            last = get_json(&http, &format!("{base}/v1/runs/{run}?wait=5"), &admin).await;
            if last["state"] == "succeeded" {
                break;
            }
        }
        assert_eq!(last["state"], "succeeded", "{last}");
    }
    served.shut_down().await;
    drop(providers);

    let logs = captured.text();
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    // The adapters account for their calls at debug: on a flow without faults they say nothing.
    let adapters: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| ["cigw_circleci", "cigw_codefresh", "cigw_codeship"].iter().any(|a| t.starts_with(a)))
        })
        .collect();
    assert!(adapters.is_empty(), "{adapters:?}");
    // Codeship's trigger answers without an id: its run also says when its build was found.
    let expected: [&[&str]; 3] = [
        &["dispatched", "run ended"],
        &["dispatched", "run ended"],
        &["dispatched; the provider gave no id, correlating", "build correlated", "run ended"],
    ];
    for (run, expected) in runs.iter().zip(expected) {
        let of_run: Vec<&str> = lines
            .iter()
            // The engine's lines (the sandbox's chains and notifications log their own work).
            .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("cigw_gateway::engine")))
            .filter(|l| l.to_string().contains(run.as_str()))
            .map(|l| l["message"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(of_run, expected, "the lines naming run {run}:\n{logs}");
        let ended = lines.iter().find(|l| l["message"] == "run ended" && l.to_string().contains(run.as_str()));
        assert_eq!(ended.unwrap()["to"], "succeeded");
    }
}
