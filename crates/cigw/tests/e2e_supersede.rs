//! Supersede and debounce under a burst: 20 triggers of one target and branch at once end in one
//! build at the simulator and 19 runs `skipped`, each with a `superseded` event and a message
//! linking the run that was built.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, is_terminal};

const TARGETS: &str = r#"
[targets.e2e-debounced]
provider = "codefresh"
account = "sandbox"
pipeline = "web/e2e"
debounce = "8s"

[targets.e2e-superseded]
provider = "codefresh"
account = "sandbox"
pipeline = "web/e2e"
concurrency = "supersede"
"#;

/// Fire 20 triggers of `target` on `main` at once; returns the run ids and how long the burst took.
async fn burst(gw: &Gateway, target: &str) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let body = json!({"targets": [target], "ref": {"branch": "main"}, "labels": {"n": i.to_string()}});
        let (url, token) = (gw.url.clone(), support::ADMIN_TOKEN);
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/triggers"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST");
            assert_eq!(r.status(), 202);
            let answer: Value = r.json().await.expect("JSON");
            answer["runs"][0]["id"].as_str().expect("id").to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    (ids, started.elapsed())
}

/// One run built, the other 19 skipped, each linking it; one build at the simulator.
async fn check_one_survivor(gw: &Gateway, ids: &[String]) {
    let runs = gw.wait_all_terminal(ids, Duration::from_secs(90)).await;
    let built: Vec<&Value> = ids.iter().map(|id| &runs[id]).filter(|r| r["state"] != "skipped").collect();
    assert_eq!(built.len(), 1, "one run is built: {built:#?}");
    let survivor = built[0]["id"].as_str().unwrap().to_string();
    assert_eq!(built[0]["state"], "succeeded", "{:#}", built[0]);
    let newest = ids
        .iter()
        .map(|id| &runs[id])
        .max_by_key(|r| (r["created_at"].as_str().unwrap().to_string(), r["id"].as_str().unwrap().to_string()))
        .unwrap();
    assert_eq!(newest["id"], survivor.as_str(), "the newest run is the one built");
    for id in ids.iter().filter(|id| **id != survivor) {
        let run = gw.get_json(&format!("/v1/runs/{id}")).await;
        assert_eq!(run["state"], "skipped");
        assert!(run["message"].as_str().unwrap().contains(&survivor), "links the survivor: {run:#}");
        assert!(run["provider_ref"].is_null(), "never sent: {run:#}");
        let superseded: Vec<&Value> =
            run["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "superseded").collect();
        assert_eq!(superseded.len(), 1, "one event each: {run:#}");
        assert_eq!(superseded[0]["data"]["detail"]["superseded_by"], survivor.as_str());
        assert_eq!(superseded[0]["data"]["detail"]["links"]["superseded_by"], format!("/v1/runs/{survivor}"));
    }
    assert_eq!(gw.providers.harness.builds().total(), 1, "{:?}", gw.providers.harness.builds().all());
}

#[tokio::test]
async fn a_burst_of_20_on_a_debounced_target_builds_once() {
    let gw = Gateway::start_with(20.0, Duration::from_secs(4), TARGETS).await;
    let (ids, took) = burst(&gw, "e2e-debounced").await;
    assert!(took < Duration::from_secs(8), "the burst fits in the debounce window: {took:?}");
    eprintln!("burst of 20 took {took:?}");
    check_one_survivor(&gw, &ids).await;
    // A later run (after the window) is built on its own.
    let later = gw.trigger(json!({"targets": ["e2e-debounced"], "ref": {"branch": "main"}})).await;
    let done = gw.wait_for_run(&later[0], Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "succeeded");
    // Another branch is not superseded by `main`.
    let target = gw.get_json("/v1/targets").await;
    let view = target["targets"].as_array().unwrap().iter().find(|t| t["name"] == "e2e-debounced").unwrap().clone();
    assert_eq!(view["debounce_seconds"], 8.0, "{view:#}");
}

#[tokio::test]
async fn a_burst_of_20_on_a_superseding_target_builds_once() {
    let gw = Gateway::start_custom(20.0, Duration::from_secs(4), &[("dispatch_delay", "8s")], TARGETS).await;
    let (ids, took) = burst(&gw, "e2e-superseded").await;
    assert!(took < Duration::from_secs(8), "the burst fits in the dispatch delay: {took:?}");
    let mut other = gw.trigger(json!({"targets": ["e2e-superseded"], "ref": {"branch": "release"}})).await;
    check_one_survivor_with_other(&gw, &ids, other.remove(0)).await;
}

async fn check_one_survivor_with_other(gw: &Gateway, ids: &[String], other_branch: String) {
    let done = gw.wait_for_run(&other_branch, Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "another branch is not superseded: {done:#}");
    let runs = gw.wait_all_terminal(ids, Duration::from_secs(90)).await;
    let built: Vec<&Value> = ids.iter().map(|id| &runs[id]).filter(|r| r["state"] != "skipped").collect();
    assert_eq!(built.len(), 1, "{built:#?}");
    let survivor = built[0]["id"].as_str().unwrap();
    for id in ids.iter().filter(|id| id.as_str() != survivor) {
        assert!(runs[id]["message"].as_str().unwrap().contains(survivor), "{:#}", runs[id]);
        assert_eq!(gw.count_events(id, "superseded").await, 1);
    }
    assert_eq!(gw.providers.harness.builds().total(), 2, "main once, release once");
}
