//! The Codefresh simulator: auth, errors, ids, life cycle, knobs, and its build objects checked
//! against the field table of providers/codefresh.md §3.

use std::time::Duration;

use cigw_sim::Harness;
use cigw_sim::codefresh::{self, CodefreshSim, CodefreshSimConfig, DEFAULT_API_KEY, DEFAULT_PIPELINE};
use serde_json::{Value, json};

const FIELDS: &str = include_str!("resources/codefresh/build_fields.json");
const UNAUTHORIZED: &str =
    r#"{"status":401,"code":"2401","name":"UNAUTHORIZED_ERROR","message":"Unauthorized","context":{}}"#;

struct Api {
    http: reqwest::Client,
    base: String,
    harness: Harness,
    sim: CodefreshSim,
    _server: cigw_sim::SimServer,
}

impl Api {
    async fn start(config: CodefreshSimConfig) -> Api {
        let harness = Harness::new();
        let (sim, server) = codefresh::start(&harness, config).await;
        Api { http: reqwest::Client::new(), base: format!("{}/api", server.url()), harness, sim, _server: server }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String) {
        let mut req =
            self.http.request(method, format!("{}{path}", self.base)).header("Authorization", DEFAULT_API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self.send(method, path, body).await;
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn run(&self, branch: &str, req_id: &str) -> String {
        let body = json!({"branch": branch, "sha": "52b992e783d2f84dd0123c70ac8623b4f0f938d1",
            "variables": [{"key": "ENV", "value": "qa"}, {"key": "TOKEN", "value": "x", "encrypted": true}],
            "annotations": {"cigw_run_id": req_id}, "options": {"noCache": true}});
        let v = self
            .json(reqwest::Method::POST, &format!("/pipelines/run/demo%2Fapi-build?reqId={req_id}"), Some(body))
            .await;
        v.as_str().expect("the run answer is a JSON string").to_string()
    }

    async fn status(&self, id: &str) -> String {
        self.json(reqwest::Method::GET, &format!("/builds/{id}?noAccount=false"), None).await["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn advance(&self, secs: u64) {
        self.harness.clock().advance(Duration::from_secs(secs));
    }
}

fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Check one build object against the §3 field table.
fn check_fields(build: &Value) {
    let table: Value = serde_json::from_str(FIELDS).unwrap();
    let obj = build.as_object().unwrap();
    for f in table["required"].as_array().unwrap() {
        assert!(obj.contains_key(f.as_str().unwrap()), "missing `{f}` in {build}");
    }
    let statuses: Vec<&str> = table["statuses"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for (k, v) in obj {
        let kinds = table["fields"][k].as_array().unwrap_or_else(|| panic!("`{k}` is not in the field table"));
        let ok = kinds.iter().any(|kind| match kind.as_str().unwrap() {
            "objectid" => v.as_str().is_some_and(is_object_id),
            "status" => v.as_str().is_some_and(|s| statuses.contains(&s)),
            "time" => v.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "null" => v.is_null(),
            other => panic!("unknown kind {other}"),
        });
        assert!(ok, "`{k}` = {v} is not one of {kinds:?}");
    }
}

#[tokio::test]
async fn unauthenticated_calls_get_the_exact_401_body() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    for auth in [None, Some("wrong-key".to_string()), Some(format!("Bearer {DEFAULT_API_KEY}"))] {
        let mut req = api.http.get(format!("{}/user", api.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.text().await.unwrap(), UNAUTHORIZED);
    }
    let r = api.http.get(format!("{}/user", api.base)).header("x-access-token", DEFAULT_API_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    api.sim.add_restricted_key("restricted");
    let r = api.http.get(format!("{}/user", api.base)).header("Authorization", "restricted").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn unknown_pipelines_are_pipeline_not_found() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let (status, body) =
        api.send(reqwest::Method::POST, "/pipelines/run/demo%2Fnope", Some(json!({"branch": "main"}))).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_i64(), v["name"].as_str()), (Some(404), Some("PIPELINE_NOT_FOUND_ERROR")));
    // An unencoded name is two segments and reaches no pipeline.
    let (status, _) = api.send(reqwest::Method::POST, "/pipelines/run/demo/api-build", Some(json!({}))).await;
    assert_eq!(status, 404);
    assert_eq!(api.harness.builds().total(), 0);
}

#[tokio::test]
async fn builds_have_object_ids_distinct_progress_ids_and_a_location() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let r = api
        .http
        .post(format!("{}/pipelines/run/demo%2Fapi-build?reqId=r1", api.base))
        .header("Authorization", DEFAULT_API_KEY)
        .json(&json!({"branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"].to_str().unwrap(), "application/json; charset=utf-8");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body: String = r.json().await.unwrap();
    assert_eq!(location, format!("/api/builds/{body}"));
    assert!(is_object_id(&body), "{body}");
    let build = api.json(reqwest::Method::GET, &format!("/builds/{body}"), None).await;
    let progress = build["progress"].as_str().unwrap();
    assert!(is_object_id(progress) && progress != body);
    // Terminating by the build id is the classic mistake: it is not a progress id.
    let (status, _) = api.send(reqwest::Method::DELETE, &format!("/progress/{body}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(api.harness.builds().count("r1"), 1);
}

#[tokio::test]
async fn life_cycle_follows_the_clock_and_objects_match_the_field_table() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let ok = api.run("main", "ok").await;
    let bad = api.run("fail-tests", "bad").await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        for id in [&ok, &bad] {
            check_fields(&api.json(reqwest::Method::GET, &format!("/builds/{id}"), None).await);
        }
        let s = api.status(&ok).await;
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        api.advance(2);
    }
    assert_eq!(seen, ["pending", "elected", "running", "success"]);
    assert_eq!(api.status(&bad).await, "error");
    let b = api.json(reqwest::Method::GET, &format!("/builds/{ok}"), None).await;
    assert!(b["started"].is_string() && b["finished"].is_string());
    assert_eq!(b["pipelineName"], DEFAULT_PIPELINE);
}

#[tokio::test]
async fn terminate_goes_through_terminating_to_terminated() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let id = api.run("main", "t").await;
    api.advance(5);
    assert_eq!(api.status(&id).await, "running");
    let progress = api.sim.build(&id).unwrap().progress;
    api.json(reqwest::Method::DELETE, &format!("/progress/{progress}"), None).await;
    assert_eq!(api.status(&id).await, "terminating");
    api.advance(5);
    assert_eq!(api.status(&id).await, "terminated");
    // Terminating a finished build changes nothing.
    api.json(reqwest::Method::DELETE, &format!("/progress/{progress}"), None).await;
    assert_eq!(api.status(&id).await, "terminated");
}

#[tokio::test]
async fn approval_branch_waits_until_approved_or_denied() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let a = api.run("needs-approval", "a").await;
    let d = api.run("needs-approval", "d").await;
    api.advance(60);
    assert_eq!(api.status(&a).await, "pending-approval");
    let (status, _) = api.send(reqwest::Method::GET, &format!("/workflow/{a}/pending-approval/approve"), None).await;
    assert_eq!(status, 200);
    api.json(reqwest::Method::GET, &format!("/workflow/{d}/pending-approval/deny"), None).await;
    assert_eq!(api.status(&a).await, "running");
    assert_eq!(api.status(&d).await, "error");
    api.advance(20);
    assert_eq!(api.status(&a).await, "success");
    let (status, _) = api.send(reqwest::Method::GET, &format!("/workflow/{a}/pending-approval/approve"), None).await;
    assert_eq!(status, 400, "only a pending-approval build can be approved");
}

#[tokio::test]
async fn builds_over_the_concurrency_knob_are_delayed() {
    let api = Api::start(CodefreshSimConfig { max_concurrent: Some(1), ..Default::default() }).await;
    let first = api.run("main", "c1").await;
    let second = api.run("main", "c2").await;
    assert_eq!(api.status(&first).await, "pending");
    assert_eq!(api.status(&second).await, "delayed");
    let b = api.json(reqwest::Method::GET, &format!("/builds/{second}"), None).await;
    check_fields(&b);
    assert_eq!(b["pendingLicense"], true);
    api.advance(15);
    assert_eq!(api.status(&first).await, "success");
    assert_eq!(api.status(&second).await, "pending", "admitted once a builder is free");
    api.advance(15);
    assert_eq!(api.status(&second).await, "success");
}

#[tokio::test]
async fn rebuild_copies_branch_sha_and_variables() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let id = api.run("fail-tests", "orig").await;
    api.advance(30);
    let new = api.json(reqwest::Method::GET, &format!("/builds/rebuild/{id}"), None).await;
    let new = new.as_str().unwrap();
    assert!(is_object_id(new) && new != id);
    let (o, n) = (api.sim.build(&id).unwrap(), api.sim.build(new).unwrap());
    assert_eq!((&n.branch, &n.sha, &n.variables, &n.options), (&o.branch, &o.sha, &o.variables, &o.options));
    assert_eq!(n.rebuild_of.as_deref(), Some(id.as_str()));
    assert!(n.annotations.is_empty(), "annotations belong to the original build");
    api.advance(30);
    assert_eq!(api.status(new).await, "error");
}

#[tokio::test]
async fn the_workflow_list_pages_newest_first_with_a_session() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let pipeline = api.sim.pipeline_id(DEFAULT_PIPELINE).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.run("main", &format!("l{i}")).await);
        api.advance(1);
    }
    api.run("other", "x").await;
    let day = api.harness.clock().now().format("%Y-%m-%d");
    let path =
        format!("/workflow?limit=2&page=1&pipeline={pipeline}&branchName=main&startDate={day}&paginationReset=true");
    let r = api.http.get(format!("{}{path}", api.base)).header("Authorization", DEFAULT_API_KEY).send().await.unwrap();
    let session = r.headers()["x-pagination-session-id"].to_str().unwrap().to_string();
    let page1: Value = r.json().await.unwrap();
    assert_eq!(page1["workflows"]["total"], 5);
    assert_eq!(page1["pagination"]["sessionId"], session.as_str());
    assert_eq!(page1["pagination"]["nextPage"], 2);
    let got: Vec<&str> =
        page1["workflows"]["docs"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    for d in page1["workflows"]["docs"].as_array().unwrap() {
        check_fields(d);
    }
    // A build created mid-walk does not shift the session's pages.
    api.advance(1);
    api.run("main", "late").await;
    let r = api
        .http
        .get(format!("{}/workflow?limit=2&page=3&pipeline={pipeline}&branchName=main", api.base))
        .header("Authorization", DEFAULT_API_KEY)
        .header("X-Pagination-Session-Id", &session)
        .send()
        .await
        .unwrap();
    let page3: Value = r.json().await.unwrap();
    let got: Vec<&str> =
        page3["workflows"]["docs"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[0].as_str()]);
    assert!(page3["pagination"]["nextPage"].is_null());
    let annotations = api
        .json(reqwest::Method::GET, &format!("/annotations?entityType=build&entityId={}&key=cigw_run_id", ids[0]), None)
        .await;
    assert_eq!(annotations[0]["value"], "l0");
}

#[tokio::test]
async fn req_id_dedupe_is_a_knob_off_by_default() {
    let api = Api::start(CodefreshSimConfig::default()).await;
    let a = api.run("main", "same").await;
    let b = api.run("main", "same").await;
    assert_ne!(a, b);
    assert_eq!(api.harness.builds().count("same"), 2);
    let api = Api::start(CodefreshSimConfig { dedupe_req_id: true, ..Default::default() }).await;
    let a = api.run("main", "same").await;
    let b = api.run("main", "same").await;
    assert_eq!(a, b);
    assert_eq!(api.harness.builds().count("same"), 1);
}
