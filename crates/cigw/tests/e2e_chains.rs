//! Chains end to end through the real binary on the simulators: A → B, a fan-in by root trigger,
//! a cross-provider join by sha, a failed upstream blocking a join until a rerun, join expiry,
//! and a gateway killed while the upstream finishes (the downstream fires once).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, is_terminal};

const A_TO_B: &str = r#"
[chains.api-to-e2e]
when.targets = ["api-build"]
then.targets = ["web-e2e"]
then.parameters = { BROWSER = "{{ 'firefox' if upstream.branch == 'main' else 'chromium' }}" }
"#;

/// Runs of `target` whose `chain_parent` is `parent`.
async fn children(gw: &Gateway, target: &str, parent: &str) -> Vec<Value> {
    gw.all_runs().await.into_iter().filter(|r| r["target"] == target && r["chain_parent"] == parent).collect()
}

/// Wait until `count` runs of `target` have `chain_parent = parent`; returns them.
async fn wait_children(gw: &Gateway, target: &str, parent: &str, count: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = children(gw, target, parent).await;
        if found.len() >= count {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "{} of {count} {target} runs with parent {parent} after {timeout:?}\nlog:\n{}",
                found.len(),
                gw.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The trigger id of a run.
async fn trigger_of(gw: &Gateway, run_id: &str) -> String {
    gw.get_json(&format!("/v1/runs/{run_id}")).await["trigger_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_chain_fires_its_downstream_once_with_the_upstream_ref_and_shows_the_tree() {
    let gw = Gateway::start_with(20.0, Duration::from_secs(6), A_TO_B).await;
    let ids = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "main"}, "labels": {"team": "api"}})).await;
    let up = gw.wait_for_run(&ids[0], Duration::from_secs(60), is_terminal).await;
    assert_eq!(up["state"], "succeeded", "{up:#}");
    let down = wait_children(&gw, "web-e2e", &ids[0], 1, Duration::from_secs(30)).await;
    let down_id = down[0]["id"].as_str().unwrap().to_string();
    // How long after the upstream's end the downstream run was stored (the consumer is woken by
    // the end's commit in this process).
    let up_events = gw.get_json(&format!("/v1/runs/{}", ids[0])).await["events"].clone();
    let end = up_events.as_array().unwrap().iter().find(|e| e["state"] == "succeeded").unwrap().clone();
    let ended = chrono::DateTime::parse_from_rfc3339(end["created_at"].as_str().unwrap()).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(down[0]["created_at"].as_str().unwrap()).unwrap();
    let lag = (created - ended).to_std().unwrap_or_default();
    eprintln!("chain firing lag (upstream end -> downstream stored): {lag:?}");
    assert!(lag < Duration::from_secs(3), "{lag:?}");
    let done = gw.wait_for_run(&down_id, Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["ref"]["branch"], "main");
    assert_eq!(done["parameters"]["BROWSER"], "firefox", "rendered from the upstream: {done:#}");
    assert_eq!(done["requested_by"], "chain:api-to-e2e");

    // The tree, from the root or from the child.
    let root = trigger_of(&gw, &ids[0]).await;
    let child_trigger = done["trigger_id"].as_str().unwrap();
    for from in [root.as_str(), child_trigger] {
        let tree = gw.get_json(&format!("/v1/triggers/{from}/tree")).await;
        assert_eq!(tree["root_trigger_id"], root.as_str());
        let nodes = tree["triggers"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{tree:#}");
        assert_eq!((nodes[0]["depth"].as_u64(), nodes[1]["depth"].as_u64()), (Some(0), Some(1)));
        assert_eq!(nodes[1]["chain"], "api-to-e2e");
        assert_eq!(nodes[1]["parent_run_ids"], json!([ids[0]]));
        assert_eq!(nodes[1]["trigger"]["source"], "chain:api-to-e2e");
    }
    // `cigw status` draws the tree under the run, from the run or from the root trigger.
    for id in [down_id.as_str(), root.as_str()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cigw"))
            .args(["status", id])
            .env_remove("CIGW_CONFIG")
            .env("CIGW_URL", &gw.url)
            .env("CIGW_TOKEN", support::ADMIN_TOKEN)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("chain tree (root trigger {root}):")), "{text}");
        assert!(text.contains(&format!("└─ api-build  succeeded  run {}", ids[0])), "{text}");
        assert!(text.contains(&format!("   └─ [chain api-to-e2e] trigger {child_trigger}")), "{text}");
        assert!(text.contains(&format!("      └─ web-e2e  succeeded  run {down_id}")), "{text}");
    }
    // Later reads of the same events (the consumer keeps running) fire nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(children(&gw, "web-e2e", &ids[0]).await.len(), 1);
    assert_eq!(gw.providers.harness.builds().total(), 2, "{:?}", gw.providers.harness.builds().all());

    // Hostile reads: an unknown trigger is a JSON 404; no token is a 401.
    let r = gw.request(reqwest::Method::GET, "/v1/triggers/no-such-trigger/tree").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found", "{body}");
    let r = gw.anonymous(reqwest::Method::GET, &format!("/v1/triggers/{root}/tree")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(gw.anonymous(reqwest::Method::GET, "/v1/joins").send().await.unwrap().status(), 401);

    // A failed upstream does not fire a `succeeded` chain.
    let failed = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "fail-unit"}})).await;
    let f = gw.wait_for_run(&failed[0], Duration::from_secs(60), is_terminal).await;
    assert_eq!(f["state"], "failed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(children(&gw, "web-e2e", &failed[0]).await.is_empty());
}

const FAN_IN: &str = r#"
[chains.api-and-web-to-legacy]
when.all_of = ["api-build", "web-e2e"]
then.targets = ["legacy-basic"]
"#;

#[tokio::test]
async fn a_fan_in_by_root_trigger_fires_once_when_both_are_green() {
    let gw = Gateway::start_with(20.0, Duration::from_secs(6), FAN_IN).await;
    let ids = gw
        .trigger(json!({"targets": ["api-build", "web-e2e"], "ref": {"branch": "main", "sha": "0123abcd"},
                                "overrides": {"api-build": {"ref": {"branch": "main"}}}}))
        .await;
    // While one is still out the join waits for it (both may end within one look).
    let deadline = Instant::now() + Duration::from_secs(60);
    let legacy = loop {
        let joins = gw.get_json("/v1/joins").await;
        if let Some(j) = joins["joins"].as_array().unwrap().first() {
            assert_eq!(j["chain"], "api-and-web-to-legacy");
            assert_eq!(j["join"], "root");
            assert_eq!(j["waiting_for"].as_array().unwrap().len(), 1, "{joins:#}");
        }
        let found: Vec<Value> = gw.all_runs().await.into_iter().filter(|r| r["target"] == "legacy-basic").collect();
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no legacy-basic run\nlog:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let parent = legacy[0]["chain_parent"].as_str().unwrap();
    assert!(ids.contains(&parent.to_string()));
    let done = gw.wait_for_run(legacy[0]["id"].as_str().unwrap(), Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let tree = gw.get_json(&format!("/v1/triggers/{}/tree", trigger_of(&gw, &ids[0]).await)).await;
    let node = &tree["triggers"][1];
    let mut parents: Vec<String> =
        node["parent_run_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    parents.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(parents, expected, "both upstream runs are the join's parents: {tree:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.all_runs().await.iter().filter(|r| r["target"] == "legacy-basic").count(), 1, "fired once");
    assert!(gw.get_json("/v1/joins").await["joins"].as_array().unwrap().is_empty());

    // Another root trigger is another join.
    let again = gw.trigger(json!({"targets": ["api-build", "web-e2e"], "ref": {"branch": "main"}})).await;
    for id in &again {
        gw.wait_for_run(id, Duration::from_secs(60), is_terminal).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.all_runs().await.iter().filter(|r| r["target"] == "legacy-basic").count() < 2 {
        assert!(Instant::now() < deadline, "the second root's join did not fire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SHA_JOIN: &str = r#"
[chains.lint-and-e2e-by-sha]
when.all_of = ["api-lint", "web-e2e"]
join = "sha"
then.targets = ["legacy-pro"]
"#;

#[tokio::test]
async fn a_cross_provider_sha_join_starts_a_codeship_build_from_separate_requests() {
    let gw = Gateway::start_with(20.0, Duration::from_secs(6), SHA_JOIN).await;
    let sha = "abc1234def";
    let circle = gw.trigger(json!({"targets": ["api-lint"], "ref": {"branch": "main", "sha": sha}})).await;
    let done = gw.wait_for_run(&circle[0], Duration::from_secs(60), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    // Another commit's run does not complete this join.
    let other = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main", "sha": "fff0000"}})).await;
    gw.wait_for_run(&other[0], Duration::from_secs(60), is_terminal).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joins = gw.get_json("/v1/joins").await;
        let open = joins["joins"].as_array().unwrap();
        if let Some(j) = open.iter().find(|j| j["join_key"] == sha) {
            assert_eq!(j["join"], "sha");
            assert_eq!(j["waiting_for"], json!(["web-e2e"]), "{joins:#}");
            assert_eq!(j["members"][0]["run_id"], circle[0].as_str());
            break;
        }
        assert!(Instant::now() < deadline, "no open join for {sha}: {joins:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.all_runs().await.iter().all(|r| r["target"] != "legacy-pro"));

    let codefresh = gw.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main", "sha": sha}})).await;
    gw.wait_for_run(&codefresh[0], Duration::from_secs(60), is_terminal).await;
    let legacy = wait_children(&gw, "legacy-pro", &codefresh[0], 1, Duration::from_secs(30)).await;
    let built = gw.wait_for_run(legacy[0]["id"].as_str().unwrap(), Duration::from_secs(60), is_terminal).await;
    assert_eq!(built["state"], "succeeded", "{built:#}");
    assert_eq!(built["provider"], "codeship");
    assert_eq!(built["ref"]["sha"], sha, "the Codeship build pins the joined commit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.all_runs().await.iter().filter(|r| r["target"] == "legacy-pro").count(), 1);
}

const BLOCKING_JOIN: &str = r#"
[chains.both-green]
when.all_of = ["api-build", "web-e2e"]
then.targets = ["legacy-basic"]
"#;

#[tokio::test]
async fn a_failed_upstream_blocks_the_join_until_its_rerun_succeeds() {
    let gw = Gateway::start_with(20.0, Duration::from_secs(6), BLOCKING_JOIN).await;
    gw.providers.codefresh.configure(|c| c.failing_branches = vec!["flaky".into()]);
    let ids = gw.trigger(json!({"targets": ["api-build", "web-e2e"], "ref": {"branch": "flaky"}})).await;
    let runs: Vec<Value> = {
        let mut out = Vec::new();
        for id in &ids {
            out.push(gw.wait_for_run(id, Duration::from_secs(60), is_terminal).await);
        }
        out
    };
    let web = runs.iter().find(|r| r["target"] == "web-e2e").unwrap();
    assert_eq!(web["state"], "failed", "{web:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joins = gw.get_json("/v1/joins").await;
        if let Some(j) = joins["joins"].as_array().unwrap().first()
            && j["members"].as_array().unwrap().len() == 2
        {
            assert_eq!(j["waiting_for"], json!(["web-e2e"]), "{joins:#}");
            let failed = j["members"].as_array().unwrap().iter().find(|m| m["target"] == "web-e2e").unwrap();
            assert_eq!((failed["state"].as_str(), failed["done"].as_bool()), (Some("failed"), Some(false)));
            break;
        }
        assert!(Instant::now() < deadline, "the join did not record both: {joins:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(gw.all_runs().await.iter().all(|r| r["target"] != "legacy-basic"), "blocked by the failure");

    // The provider is fixed; a rerun of the failed run counts with its result.
    gw.providers.codefresh.configure(|c| c.failing_branches.clear());
    let (status, rerun) = gw.post_json(&format!("/v1/runs/{}/rerun", web["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, 202, "{rerun}");
    let rerun_id = rerun["id"].as_str().or(rerun["run"]["id"].as_str()).expect("rerun id").to_string();
    let r = gw.wait_for_run(&rerun_id, Duration::from_secs(60), is_terminal).await;
    assert_eq!(r["state"], "succeeded", "{r:#}");
    let legacy = wait_children(&gw, "legacy-basic", &rerun_id, 1, Duration::from_secs(30)).await;
    assert_eq!(legacy.len(), 1);
    assert!(gw.get_json("/v1/joins").await["joins"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_half_complete_join_expires_with_an_event() {
    let extra = r#"
[chains.short-lived]
when.all_of = ["api-build", "web-e2e"]
join_ttl = "2s"
then.targets = ["legacy-basic"]
"#;
    let gw = Gateway::start_with(20.0, Duration::from_secs(4), extra).await;
    let ids = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "main"}})).await;
    gw.wait_for_run(&ids[0], Duration::from_secs(60), is_terminal).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.count_events(&ids[0], "join_expired").await == 0 {
        assert!(Instant::now() < deadline, "no join_expired event\nlog:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run = gw.get_json(&format!("/v1/runs/{}", ids[0])).await;
    let event = run["events"].as_array().unwrap().iter().find(|e| e["kind"] == "join_expired").unwrap().clone();
    assert_eq!(event["data"]["chain"], "short-lived", "{event:#}");
    assert_eq!(event["data"]["waiting_for"], json!(["web-e2e"]));
    assert!(gw.get_json("/v1/joins").await["joins"].as_array().unwrap().is_empty());
    assert_eq!(gw.count_events(&ids[0], "join_expired").await, 1, "expired once");
}

#[tokio::test]
async fn a_gateway_killed_while_the_upstream_finishes_fires_the_downstream_once() {
    // Builds of about 3 s: CircleCI's callbacks tell the end, so the gateway reads a running
    // build only now and then (8 × its age), and a shorter one may be seen only once it ended.
    let mut gw = Gateway::start_with(20.0, Duration::from_secs(60), A_TO_B).await;
    // Window 1: the upstream ends at the provider while no gateway runs.
    let ids = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "main"}})).await;
    gw.wait_for_run(&ids[0], Duration::from_secs(30), |s| s == "running").await;
    gw.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.spawn().await;
    let up = gw.wait_for_run(&ids[0], Duration::from_secs(60), is_terminal).await;
    assert_eq!(up["state"], "succeeded");
    wait_children(&gw, "web-e2e", &ids[0], 1, Duration::from_secs(30)).await;

    // Window 2: kill the moment the upstream's end is visible (its event committed; the firing
    // may or may not have happened), restart, and count.
    let ids2 = gw.trigger(json!({"targets": ["api-build"], "ref": {"branch": "main"}})).await;
    gw.wait_for_run(&ids2[0], Duration::from_secs(60), is_terminal).await;
    gw.kill();
    gw.spawn().await;
    for id in [&ids[0], &ids2[0]] {
        let found = wait_children(&gw, "web-e2e", id, 1, Duration::from_secs(30)).await;
        assert_eq!(found.len(), 1);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in [&ids[0], &ids2[0]] {
        assert_eq!(children(&gw, "web-e2e", id).await.len(), 1, "fired exactly once for {id}\nlog:\n{}", gw.log());
    }
}
