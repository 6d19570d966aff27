//! The CircleCI simulator's answers against the official schemas (copied from
//! shared/specs/circleci-openapi.json into tests/resources/circleci/), and its documented
//! behaviours.
//!
//! Documented exceptions (DESIGN.md §2), where the provider notes win over the spec:
//! - workflow status `queued` is missing from the spec's enum: the schema check adds it;
//! - a 429 may carry the plain-text body `Rate limited.` instead of `{"message"}`.

use std::sync::Arc;
use std::time::Duration;

use cigw_sim::circleci::{
    self, CircleciSim, CircleciSimConfig, DEFAULT_DEFINITION_ID, DEFAULT_PROJECT, DEFAULT_TOKEN, SimProject,
    UndeclaredParameters, WebhookTarget, sign_v1,
};
use cigw_sim::{Fault, Harness, ScriptedFault, SimServer};
use parking_lot::Mutex;
use serde_json::{Value, json};

fn schema(name: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("resources/circleci/openapi-subset.json")).unwrap();
    let mut s = all["responses"][name].clone();
    assert!(s.is_object(), "no schema {name}");
    // Exception: CircleCI documents the `queued` workflow status; the spec's enum lacks it.
    if let Some(e) = s.pointer_mut("/properties/items/items/properties/status/enum").and_then(Value::as_array_mut)
        && name.starts_with("listWorkflows")
    {
        e.push(json!("queued"));
    }
    s
}

fn assert_schema(name: &str, body: &Value) {
    let validator = jsonschema::validator_for(&schema(name)).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{body:#}");
}

struct Sim {
    harness: Harness,
    sim: CircleciSim,
    server: SimServer,
    http: reqwest::Client,
}

async fn sim_with(config: CircleciSimConfig) -> Sim {
    let harness = Harness::new();
    let (sim, server) = circleci::start(&harness, config).await;
    Sim { harness, sim, server, http: reqwest::Client::new() }
}

async fn sim() -> Sim {
    sim_with(CircleciSimConfig { page_size: 2, ..CircleciSimConfig::default() }).await
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v2{path}", self.server.url())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).header("Circle-Token", DEFAULT_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    fn advance(&self, secs: u64) {
        self.harness.clock().advance(Duration::from_secs(secs));
    }

    async fn trigger(&self, body: Value) -> String {
        let (status, created) = self.post("/project/gh/acme/web/pipeline", body).await;
        assert_eq!(status, 201, "{created}");
        assert_schema("triggerPipeline.201", &created);
        created["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn trigger_pipeline_and_workflows_follow_the_schemas_and_the_life_cycle() {
    let s = sim().await;
    let id = s.trigger(json!({"branch": "main", "parameters": {"cigw_run_id": "run-7"}})).await;
    assert_eq!(s.harness.builds().count("run-7"), 1);
    let (status, p) = s.get(&format!("/pipeline/{id}")).await;
    assert_eq!(status, 200);
    assert_schema("getPipelineById.200", &p);
    assert_eq!(p["state"], "pending");
    // Workflows appear a few seconds after the 201.
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_eq!(w, json!({"items": [], "next_page_token": null}));
    s.advance(3);
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_schema("listWorkflowsByPipelineId.200", &w);
    assert_eq!(w["items"][0]["status"], "queued");
    s.advance(3);
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_eq!(w["items"][0]["status"], "running");
    s.advance(20);
    let (_, p) = s.get(&format!("/pipeline/{id}")).await;
    assert_eq!(p["state"], "created");
    assert_eq!(p["trigger_parameters"]["cigw_run_id"], "run-7");
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_schema("listWorkflowsByPipelineId.200", &w);
    let statuses: Vec<&str> = w["items"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["success", "success"]);
    let wf = w["items"][0]["id"].as_str().unwrap();
    let (_, jobs) = s.get(&format!("/workflow/{wf}/job")).await;
    assert_schema("listWorkflowJobs.200", &jobs);
    let (_, list) = s.get("/project/gh/acme/web/pipeline?branch=main").await;
    assert_schema("listPipelinesForProject.200", &list);
    assert_eq!(list["items"][0]["id"], id.as_str());
}

#[tokio::test]
async fn lists_are_paginated_with_page_tokens() {
    let s = sim().await;
    for _ in 0..3 {
        s.trigger(json!({"branch": "paged"})).await;
    }
    let (_, first) = s.get("/project/gh/acme/web/pipeline?branch=paged").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let token = first["next_page_token"].as_str().unwrap();
    let (_, second) = s.get(&format!("/project/gh/acme/web/pipeline?branch=paged&page-token={token}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_page_token"], Value::Null);
    assert_schema("listPipelinesForProject.200", &second);
}

#[tokio::test]
async fn auth_and_not_found_bodies() {
    let s = sim().await;
    let r = s.http.get(s.url("/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "You must log in first."}));
    let r = s.http.get(s.url("/me")).header("Circle-Token", "nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body, json!({"message": "Invalid token provided."}));
    assert_schema("error", &body);
    let r = s.http.get(s.url("/me")).basic_auth(DEFAULT_TOKEN, Some("")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http.get(s.url("/me")).bearer_auth(DEFAULT_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = s.post("/project/gh/acme/missing/pipeline", json!({"branch": "main"})).await;
    assert_eq!((status, body), (404, json!({"message": "Project not found"})));
    let (status, _) = s.get("/pipeline/e411ea74-c64a-4d60-9292-115e782802ed").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn trigger_rules_of_the_notes() {
    let s = sim().await;
    let (status, _) = s.post("/project/gh/acme/web/pipeline", json!({"branch": ""})).await;
    assert_eq!(status, 400, "an empty branch is refused");
    let (status, _) = s.post("/project/gh/acme/web/pipeline", json!({"branch": "a", "tag": "b"})).await;
    assert_eq!(status, 400, "branch and tag are exclusive");
    // The slug may come as one %2F-escaped segment on the classic endpoint…
    let (status, _) = s.post("/project/gh%2Facme%2Fweb/pipeline", json!({"branch": "main"})).await;
    assert_eq!(status, 201);
    // …but not on /pipeline/run.
    let body =
        json!({"definition_id": DEFAULT_DEFINITION_ID, "config": {"branch": "main"}, "checkout": {"branch": "main"}});
    let (status, _) = s.post("/project/gh%2Facme%2Fweb/pipeline/run", body.clone()).await;
    assert_eq!(status, 404);
    let (status, created) = s.post("/project/gh/acme/web/pipeline/run", body).await;
    assert_eq!(status, 201);
    assert_schema("triggerPipelineRun.201", &created);
    let skip = json!({"definition_id": DEFAULT_DEFINITION_ID, "config": {"branch": "ci-skip-x"}, "checkout": {"branch": "ci-skip-x"}});
    let (status, nothing) = s.post("/project/gh/acme/web/pipeline/run", skip).await;
    assert_eq!(status, 200);
    assert_schema("triggerPipelineRun.200", &nothing);
    let extra = json!({"definition_id": DEFAULT_DEFINITION_ID, "branch": "main"});
    let (status, bad) = s.post("/project/gh/acme/web/pipeline/run", extra).await;
    assert_eq!((status, &bad), (400, &json!({"message": "Unexpected request body provided."})));
    assert_schema("triggerPipelineRun.400", &bad);
    // GitHub App / GitLab projects cannot use the classic endpoint.
    s.sim.add_project(SimProject::new("circleci/OrgId/ProjId").with_definition("d"));
    let (status, _) = s.post("/project/circleci/OrgId/ProjId/pipeline", json!({"branch": "main"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn undeclared_parameters_are_refused_either_way() {
    let s = sim().await;
    let before = s.harness.builds().total();
    let (status, body) =
        s.post("/project/gh/acme/web/pipeline", json!({"branch": "main", "parameters": {"GHA_Actor": "x"}})).await;
    assert_eq!((status, body), (400, json!({"message": "Unexpected argument(s): GHA_Actor"})));
    assert_eq!(s.harness.builds().total(), before, "no build started");
    s.sim.set_undeclared_parameters(UndeclaredParameters::ErroredPipeline);
    let id = s.trigger(json!({"branch": "main", "parameters": {"GHA_Actor": "x"}})).await;
    let (_, p) = s.get(&format!("/pipeline/{id}")).await;
    assert_eq!(p["state"], "errored");
    assert_eq!(p["errors"], json!([{"type": "config", "message": "Unexpected argument(s): GHA_Actor"}]));
    assert_schema("getPipelineById.200", &p);
    s.advance(60);
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_eq!(w["items"], json!([]));
}

async fn workflows_of(s: &Sim, id: &str) -> Vec<Value> {
    let (_, w) = s.get(&format!("/pipeline/{id}/workflow")).await;
    assert_schema("listWorkflowsByPipelineId.200", &w);
    let mut items = w["items"].as_array().unwrap().clone();
    let mut token = w["next_page_token"].as_str().map(str::to_string);
    while let Some(t) = token {
        let (_, more) = s.get(&format!("/pipeline/{id}/workflow?page-token={t}")).await;
        items.extend(more["items"].as_array().unwrap().clone());
        token = more["next_page_token"].as_str().map(str::to_string);
    }
    items
}

fn by_name<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items.iter().find(|w| w["name"] == name).unwrap()
}

#[tokio::test]
async fn failing_branches_fail_and_rerun_makes_a_new_workflow() {
    let s = sim().await;
    let id = s.trigger(json!({"branch": "fail-tests"})).await;
    s.advance(10);
    assert_eq!(by_name(&workflows_of(&s, &id).await, "test")["status"], "failing");
    s.advance(10);
    let items = workflows_of(&s, &id).await;
    let test = by_name(&items, "test");
    assert_eq!(test["status"], "failed");
    let (status, rerun) =
        s.post(&format!("/workflow/{}/rerun", test["id"].as_str().unwrap()), json!({"from_failed": true})).await;
    assert_eq!(status, 202);
    assert_schema("rerunWorkflow.202", &rerun);
    assert_ne!(rerun["workflow_id"], test["id"]);
    let items = workflows_of(&s, &id).await;
    assert_eq!(items.iter().filter(|w| w["name"] == "test").count(), 2);
    let (status, _) = s
        .post(
            &format!("/workflow/{}/rerun", by_name(&items, "build")["id"].as_str().unwrap()),
            json!({"from_failed": true, "jobs": []}),
        )
        .await;
    assert_eq!(status, 400, "from_failed and jobs are exclusive");
}

#[tokio::test]
async fn pipelines_are_numbered_per_project_and_list_only_their_own_workflows() {
    let s = sim().await;
    s.sim.add_project(SimProject::new("gh/acme/docs"));
    let first = s.trigger(json!({"branch": "main"})).await;
    let (status, other) = s.post("/project/gh/acme/docs/pipeline", json!({"branch": "main"})).await;
    assert_eq!(status, 201, "{other}");
    let second = s.trigger(json!({"branch": "main"})).await;
    s.advance(10);
    let mut numbers = Vec::new();
    for id in [&first, other["id"].as_str().unwrap(), &second] {
        numbers.push(s.get(&format!("/pipeline/{id}")).await.1["number"].clone());
    }
    assert_eq!(numbers, [json!(1), json!(1), json!(2)]);
    for id in [&first, &second] {
        let items = workflows_of(&s, id).await;
        assert_eq!(items.len(), 2, "build and test: {items:?}");
        assert!(items.iter().all(|w| w["pipeline_id"] == id.as_str()), "{items:?}");
    }
    let (status, _) = s.get("/pipeline/00000000-0000-4000-8000-000000000000/workflow").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cancel_and_approval() {
    let s = sim().await;
    let id = s.trigger(json!({"branch": "main", "parameters": {"require_approval": true}})).await;
    s.advance(3 + 2 + 6);
    let items = workflows_of(&s, &id).await;
    let deploy = by_name(&items, "deploy");
    assert_eq!(deploy["status"], "on_hold");
    let wf = deploy["id"].as_str().unwrap();
    let (_, jobs) = s.get(&format!("/workflow/{wf}/job")).await;
    let mut all = jobs["items"].as_array().unwrap().clone();
    if let Some(t) = jobs["next_page_token"].as_str() {
        let (_, more) = s.get(&format!("/workflow/{wf}/job?page-token={t}")).await;
        all.extend(more["items"].as_array().unwrap().clone());
    }
    assert_schema("listWorkflowJobs.200", &json!({"items": all, "next_page_token": null}));
    let hold = all.iter().find(|j| j["type"] == "approval").unwrap();
    assert_eq!(hold["status"], "on_hold");
    let request = hold["approval_request_id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/workflow/{wf}/approve/not-the-request"), json!(null)).await;
    assert_eq!(status, 404);
    let (status, accepted) = s.post(&format!("/workflow/{wf}/approve/{request}"), json!(null)).await;
    assert_eq!(status, 202);
    assert_schema("approvePendingApprovalJobById.202", &accepted);
    s.advance(1);
    assert_eq!(by_name(&workflows_of(&s, &id).await, "deploy")["status"], "running");

    let other = s.trigger(json!({"branch": "main"})).await;
    s.advance(6);
    let build = by_name(&workflows_of(&s, &other).await, "build")["id"].as_str().unwrap().to_string();
    let (status, accepted) = s.post(&format!("/workflow/{build}/cancel"), json!(null)).await;
    assert_eq!((status, &accepted), (202, &json!({"message": "Accepted."})));
    assert_schema("cancelWorkflow.202", &accepted);
    s.advance(1);
    assert_eq!(by_name(&workflows_of(&s, &other).await, "build")["status"], "canceled");
}

#[tokio::test]
async fn rate_limits_carry_retry_after_and_sometimes_plain_text() {
    let s = sim().await;
    s.harness.faults().push(ScriptedFault::new(Fault::RateLimit { retry_after: Some(3) }).times(2));
    let r1 = s.http.get(s.url("/me")).header("Circle-Token", DEFAULT_TOKEN).send().await.unwrap();
    assert_eq!(r1.status(), 429);
    assert_eq!(r1.headers()["retry-after"], "3");
    assert_eq!(r1.json::<Value>().await.unwrap(), json!({"message": "Rate limit exceeded."}));
    let r2 = s.http.get(s.url("/me")).header("Circle-Token", DEFAULT_TOKEN).send().await.unwrap();
    assert_eq!(r2.status(), 429);
    // Exception: the plain-text body the notes document.
    assert_eq!(r2.text().await.unwrap(), "Rate limited.");
}

#[tokio::test]
async fn the_date_header_follows_the_simulated_clock() {
    let s = sim().await;
    s.advance(86_400 * 365);
    let r = s.http.get(s.url("/me")).header("Circle-Token", DEFAULT_TOKEN).send().await.unwrap();
    let date = r.headers()["date"].to_str().unwrap().to_string();
    let expected = s.harness.clock().now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    assert_eq!(date, expected);
}

#[tokio::test]
async fn finished_workflows_send_signed_webhooks() {
    let received: Arc<Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let webhook = WebhookTarget { url, secret: "hook-secret".into() };
    let s = sim_with(CircleciSimConfig { webhook: Some(webhook), ..CircleciSimConfig::default() }).await;
    let id = s.trigger(json!({"branch": "main"})).await;
    s.advance(30);
    // The background task notices within a few of its (real-time) polls.
    for _ in 0..100 {
        if received.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.sim.deliver_webhooks().await, 0, "nothing is delivered twice");
    let got = received.lock().clone();
    assert_eq!(got.len(), 2, "one event per workflow");
    for (headers, body) in &got {
        assert_eq!(headers["circleci-event-type"], "workflow-completed");
        assert_eq!(headers["user-agent"], "CircleCI-Webhook/1.0");
        assert_eq!(headers["circleci-signature"].to_str().unwrap(), sign_v1("hook-secret", body));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "workflow-completed");
        assert_eq!(event["pipeline"]["id"], id.as_str());
        assert_eq!(event["project"]["slug"], format!("github/{}", DEFAULT_PROJECT.split_once('/').unwrap().1));
        assert_eq!(event["workflow"]["status"], "success");
    }
}

#[test]
fn signatures_match_the_documented_vectors() {
    assert_eq!(
        sign_v1("secret", b"hello world"),
        "v1=734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a"
    );
    assert_eq!(
        sign_v1("hunter123", b"an-important-request-payload"),
        "v1=9be2242094a9a8c00c64306f382a7f9d691de910b4a266f67bd314ef18ac49fa"
    );
}
