//! The adapter against wiremock with CircleCI's JSON: paths, headers, bodies, error mapping,
//! retries, pagination and aggregation through the HTTP layer.

use std::time::Duration;

use cigw_circleci::config::{AccountConfig, TargetConfig};
use cigw_circleci::{CircleciAccount, CircleciTarget};
use cigw_core::config::Problems;
use cigw_core::retry::RetryPolicy;
use cigw_core::{
    CiTarget, ConcurrencyPolicy, Decision, Error, GitRef, ParamType, ParamValue, ParameterSpec, Parameters,
    ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, RunState, TargetSpec, TriggerOutcome, TriggerSpec,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PIPELINE: &str = "e411ea74-c64a-4d60-9292-115e782802ed";
const DEFINITION: &str = "2338d0ae-5e60-4dba-9e4c-d3ed8ea6e4c2";

fn schemas() -> Value {
    serde_json::from_str(include_str!("resources/openapi-subset.json")).unwrap()
}

/// Every request's body must validate against the official request schema of its operation.
fn assert_valid(kind: &str, name: &str, instance: &Value) {
    let schema = schemas()[kind][name].clone();
    assert!(schema.is_object(), "no schema {kind}.{name}");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?} in {instance}");
}

fn target_spec(parameters: Vec<ParameterSpec>) -> TargetSpec {
    TargetSpec {
        name: "web".into(),
        provider: ProviderKind::Circleci,
        account: "main".into(),
        default_branch: "main".into(),
        parameters,
        max_duration: None,
        concurrency: ConcurrencyPolicy::Queue,
        debounce: None,
        description: None,
    }
}

fn string_param(name: &str) -> ParameterSpec {
    ParameterSpec {
        name: name.into(),
        kind: ParamType::String,
        default: None,
        allowed: None,
        required: false,
        secret: false,
        description: None,
    }
}

struct Setup {
    server: MockServer,
    account: CircleciAccount,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tune: impl FnOnce(&mut AccountConfig)) -> Setup {
    let server = MockServer::start().await;
    // The base URL has a path of its own, which every call must keep.
    let base = Url::parse(&format!("{}/api/v2", server.uri())).unwrap();
    let mut cfg = AccountConfig::new(base, SecretString::from("test-token-123"));
    cfg.transport.retry = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        max_retries: 3,
        deadline: Duration::from_secs(5),
    };
    cfg.app_url = Url::parse("https://app.example.com").unwrap();
    tune(&mut cfg);
    Setup { server, account: CircleciAccount::new("main", cfg).unwrap() }
}

impl Setup {
    fn target(&self, fields: Value) -> CircleciTarget {
        self.target_with(fields, vec![])
    }

    fn target_with(&self, fields: Value, parameters: Vec<ParameterSpec>) -> CircleciTarget {
        let mut problems = Problems::default();
        let t =
            TargetConfig::parse(&target_spec(parameters), "targets.web", fields.as_object().unwrap(), &mut problems);
        assert!(!problems.has_errors(), "{problems:?}");
        self.account.target_from("web", t.unwrap())
    }

    fn gh(&self) -> CircleciTarget {
        self.target(json!({"project_slug": "gh/acme/web"}))
    }

    async fn catch_all(&self) {
        // Any request no test expected answers 500 naming itself, so a wrong path fails loudly.
        Mock::given(wiremock::matchers::any())
            .respond_with(|r: &Request| {
                ResponseTemplate::new(500)
                    .set_body_json(json!({"message": format!("unexpected {} {}", r.method, r.url)}))
            })
            .with_priority(255)
            .mount(&self.server)
            .await;
    }
}

fn spec(git_ref: GitRef) -> TriggerSpec {
    TriggerSpec { run_id: "run-1".into(), git_ref, parameters: Parameters::new(), requested_by: "test".into() }
}

fn created() -> Value {
    json!({"number": 2, "state": "pending", "id": PIPELINE, "created_at": "2020-01-15T15:32:36.605Z"})
}

fn pipeline_json(state: &str, created_at: &str) -> Value {
    json!({
        "id": PIPELINE, "errors": [], "project_slug": "gh/acme/web", "number": 2, "state": state,
        "created_at": created_at, "updated_at": created_at,
        "trigger": {"type": "api", "received_at": created_at, "actor": {"login": "bot", "avatar_url": null}},
        "vcs": {"provider_name": "GitHub", "origin_repository_url": "https://github.com/acme/web",
                "target_repository_url": "https://github.com/acme/web", "revision": "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
                "branch": "main"}
    })
}

fn workflow(id: &str, name: &str, status: &str, created_at: &str) -> Value {
    let terminal = ["success", "failed", "error", "canceled", "unauthorized", "not_run"].contains(&status);
    json!({
        "pipeline_id": PIPELINE, "id": id, "name": name, "project_slug": "gh/acme/web", "status": status,
        "started_by": "a0a0a0a0-0000-0000-0000-000000000000", "pipeline_number": 2, "created_at": created_at,
        "stopped_at": if terminal { Value::String(created_at.to_string()) } else { Value::Null }
    })
}

async fn mount_status(s: &Setup, pipeline: Value, workflows: Vec<Value>, date: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(pipeline).insert_header("date", date))
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}/workflow")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": workflows, "next_page_token": null}))
                .insert_header("date", date),
        )
        .mount(&s.server)
        .await;
}

#[tokio::test]
async fn classic_trigger_posts_branch_with_token_and_keeps_the_base_path() {
    let s = setup().await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .and(header("Circle-Token", "test-token-123"))
        .and(header("accept", "application/json"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"branch": "feature/design-new-api"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    let out = s.gh().trigger(&spec(GitRef::branch("feature/design-new-api"))).await.unwrap();
    let TriggerOutcome::Started(r) = out else { panic!("{out:?}") };
    assert_eq!(r.id, PIPELINE);
    assert_eq!(r.number, Some(2));
    assert_eq!(r.attempt, 1);
    assert_eq!(r.url.as_deref(), Some("https://app.example.com/pipelines/github/acme/web/2"));
    let req = &s.server.received_requests().await.unwrap()[0];
    let ua = req.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(ua.starts_with("cigw/"), "{ua}");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_valid("requests", "triggerPipeline", &body);
    assert_valid("responses", "triggerPipeline.201", &created());
}

#[tokio::test]
async fn tag_and_typed_parameters_with_the_run_id_where_declared() {
    let s = setup().await;
    s.catch_all().await;
    let expected = json!({"tag": "v3.1.4159", "parameters": {"deploy_prod": true, "count": 3, "env": "prod",
                          "cigw_run_id": "run-1"}});
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .and(body_json(expected.clone()))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    let t = s.target_with(json!({"project_slug": "gh/acme/web"}), vec![string_param("cigw_run_id")]);
    let mut params = Parameters::new();
    params.insert("deploy_prod", ParamValue::Bool(true), false);
    params.insert("count", ParamValue::Int(3), false);
    params.insert("env", ParamValue::String("prod".into()), true);
    let mut sp = spec(GitRef::tag("v3.1.4159"));
    sp.parameters = params;
    assert!(matches!(t.trigger(&sp).await.unwrap(), TriggerOutcome::Started(_)));
    assert_valid("requests", "triggerPipeline", &expected);
}

#[tokio::test]
async fn slug_segments_are_encoded_one_by_one() {
    let s = setup().await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/ac%25me/we%3Fb/pipeline"))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    let t = s.target(json!({"project_slug": "gh/ac%me/we?b"}));
    t.trigger(&spec(GitRef::branch("main"))).await.unwrap();
}

#[tokio::test]
async fn definition_trigger_uses_pipeline_run_with_three_segments() {
    let s = setup().await;
    s.catch_all().await;
    let expected = json!({"definition_id": DEFINITION, "config": {"branch": "main"}, "checkout": {"branch": "main"}});
    Mock::given(method("POST"))
        .and(path("/api/v2/project/circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat/pipeline/run"))
        .and(body_json(expected.clone()))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    let t = s.target(json!({"project_slug": "circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat",
                            "definition_id": DEFINITION}));
    let out = t.trigger(&spec(GitRef::branch("main"))).await.unwrap();
    assert!(matches!(out, TriggerOutcome::Started(ref r) if r.id == PIPELINE), "{out:?}");
    assert_valid("requests", "triggerPipelineRun", &expected);
    assert_valid("responses", "triggerPipelineRun.201", &created());
}

#[tokio::test]
async fn pipeline_run_200_is_nothing_to_run() {
    let s = setup().await;
    s.catch_all().await;
    let answer = json!({"message": "Ignoring pipeline due to CI skip in the commit"});
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline/run"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer.clone()))
        .expect(1)
        .mount(&s.server)
        .await;
    let t = s.target(json!({"project_slug": "gh/acme/web", "definition_id": DEFINITION}));
    let out = t.trigger(&spec(GitRef::tag("v1"))).await.unwrap();
    assert_eq!(out, TriggerOutcome::NothingToRun { message: "Ignoring pipeline due to CI skip in the commit".into() });
    assert_valid("responses", "triggerPipelineRun.200", &answer);
    let req = &s.server.received_requests().await.unwrap()[0];
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["config"], json!({"tag": "v1"}));
    assert_valid("requests", "triggerPipelineRun", &body);
}

#[tokio::test]
async fn a_sha_is_refused_unless_the_target_ignores_it() {
    let s = setup().await;
    s.catch_all().await;
    let pinned = GitRef::branch("main").with_sha("1dc6aa6");
    let err = s.gh().trigger(&spec(pinned.clone())).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { ref message } if message.contains("ignore_sha")), "{err:?}");
    assert!(s.server.received_requests().await.unwrap().is_empty());
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .and(body_json(json!({"branch": "main"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    let t = s.target(json!({"project_slug": "gh/acme/web", "ignore_sha": true}));
    assert!(t.ignore_sha());
    assert_eq!(t.check_ref(&pinned), Ok(()));
    assert!(s.gh().check_ref(&pinned).unwrap_err().contains("ignore_sha"));
    t.trigger(&spec(pinned)).await.unwrap();
}

#[tokio::test]
async fn refs_and_parameters_are_checked_before_sending() {
    let s = setup().await;
    s.catch_all().await;
    let both = GitRef { branch: Some("a".into()), tag: Some("b".into()), sha: None };
    assert!(matches!(s.gh().trigger(&spec(both)).await, Err(Error::InvalidRequest { .. })));
    assert!(matches!(s.gh().trigger(&spec(GitRef::default())).await, Err(Error::InvalidRequest { .. })));
    let mut sp = spec(GitRef::branch("main"));
    sp.parameters.insert("long", ParamValue::String("x".repeat(513)), false);
    let err = s.gh().trigger(&sp).await.unwrap_err();
    assert!(err.to_string().contains("longer than 512"), "{err}");
    let mut sp = spec(GitRef::branch("main"));
    for i in 0..101 {
        sp.parameters.insert(format!("p{i}"), ParamValue::Bool(true), false);
    }
    assert!(s.gh().trigger(&sp).await.unwrap_err().to_string().contains("at most 100"));
    assert!(s.server.received_requests().await.unwrap().is_empty());
}

async fn trigger_error(answer: ResponseTemplate) -> Error {
    let s = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .respond_with(answer)
        .mount(&s.server)
        .await;
    s.gh().trigger(&spec(GitRef::branch("main"))).await.unwrap_err()
}

#[tokio::test]
async fn error_rows_through_http() {
    let json_body = |status: u16, m: &str| ResponseTemplate::new(status).set_body_json(json!({"message": m}));
    let e = trigger_error(json_body(400, "Unexpected argument(s): GHA_Actor")).await;
    assert!(matches!(e, Error::InvalidRequest { ref message } if message == "Unexpected argument(s): GHA_Actor"));
    let e = trigger_error(json_body(401, "Invalid token provided.")).await;
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    let e = trigger_error(json_body(403, "Permission denied")).await;
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    let e = trigger_error(json_body(404, "Project not found")).await;
    assert!(matches!(e, Error::NotFound { ref message } if message.starts_with("Project not found")), "{e:?}");
    let e = trigger_error(json_body(409, "conflict")).await;
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let e = trigger_error(json_body(422, "bad")).await;
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    let e = trigger_error(ResponseTemplate::new(418).set_body_string("I'm a teapot")).await;
    assert!(matches!(e, Error::Other { ref message } if message.contains("I'm a teapot")), "{e:?}");
}

#[tokio::test]
async fn a_5xx_trigger_is_maybe_sent_and_never_repeated() {
    let s = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "Internal server error."})))
        .expect(1)
        .mount(&s.server)
        .await;
    let e = s.gh().trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "{e:?}");
}

#[tokio::test]
async fn a_5xx_status_read_is_retried() {
    let s = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}")))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "Service unavailable."})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&s.server)
        .await;
    mount_status(&s, pipeline_json("created", "2024-05-01T10:00:00Z"), vec![], "Wed, 01 May 2024 10:00:10 GMT").await;
    let st = s.gh().status(&ProviderRunRef::new(PIPELINE)).await.unwrap();
    assert_eq!(st.state, RunState::Queued);
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let mut cfg = AccountConfig::new(Url::parse("http://127.0.0.1:1/api/v2").unwrap(), SecretString::from("t"));
    cfg.transport.retry = RetryPolicy::none();
    let account = CircleciAccount::new("main", cfg).unwrap();
    let config = TargetConfig::parse(
        &target_spec(vec![]),
        "targets.web",
        json!({"project_slug": "gh/a/b"}).as_object().unwrap(),
        &mut Problems::default(),
    );
    let t = account.target_from("web", config.unwrap());
    let e = t.trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(e, Error::NotSent { .. }), "{e:?}");
}

#[tokio::test]
async fn a_timeout_is_maybe_sent() {
    let s = setup_with(|c| {
        c.transport.timeout = Duration::from_millis(100);
        c.transport.retry = RetryPolicy::none();
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()).set_delay(Duration::from_millis(400)))
        .mount(&s.server)
        .await;
    let e = s.gh().trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "{e:?}");
}

#[tokio::test]
async fn rate_limits_honour_retry_after_then_succeed() {
    let s = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0").set_body_string("Rate limited."))
        .up_to_n_times(2)
        .expect(2)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .respond_with(ResponseTemplate::new(201).set_body_json(created()))
        .expect(1)
        .mount(&s.server)
        .await;
    assert!(matches!(s.gh().trigger(&spec(GitRef::branch("main"))).await.unwrap(), TriggerOutcome::Started(_)));
}

#[tokio::test]
async fn a_persistent_rate_limit_is_reported_with_its_wait() {
    let s = setup_with(|c| c.transport.retry.max_retries = 1).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"message": "Rate limit exceeded."})),
        )
        .expect(2)
        .mount(&s.server)
        .await;
    let e = s.gh().status(&ProviderRunRef::new(PIPELINE)).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d.is_zero()), "{e:?}");
}

#[tokio::test]
async fn workflows_are_followed_across_pages() {
    let s = setup().await;
    s.catch_all().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(pipeline_json("created", "2024-05-01T10:00:00Z")))
        .mount(&s.server)
        .await;
    let page1 = json!({"items": [workflow("aaaaaaaa-0000-0000-0000-000000000001", "build", "success", "2024-05-01T10:00:05Z")],
                       "next_page_token": "tok2"});
    let page2 = json!({"items": [workflow("aaaaaaaa-0000-0000-0000-000000000002", "test", "failed", "2024-05-01T10:00:05Z")],
                       "next_page_token": null});
    for p in [&page1, &page2] {
        assert_valid("responses", "listWorkflowsByPipelineId.200", p);
    }
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}/workflow")))
        .and(query_param_is_missing("page-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page1))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/pipeline/{PIPELINE}/workflow")))
        .and(query_param("page-token", "tok2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page2))
        .expect(1)
        .mount(&s.server)
        .await;
    let st = s.gh().status(&ProviderRunRef::new(PIPELINE)).await.unwrap();
    assert_eq!(st.state, RunState::Failed, "{st:?}");
    assert_eq!(st.steps.len(), 2);
    assert_eq!(st.raw_status, "pipeline created; build success, test failed");
    assert_eq!(st.url.as_deref(), Some("https://app.example.com/pipelines/github/acme/web/2"));
}

/// One aggregation row per case, through the HTTP layer.
#[tokio::test]
async fn aggregation_rows_through_http() {
    let at = "2024-05-01T10:00:00Z";
    let soon = "Wed, 01 May 2024 10:00:10 GMT";
    let late = "Wed, 01 May 2024 10:05:00 GMT";
    let w = |n: &str, st: &str| workflow(&format!("0000000{}-0000-0000-0000-000000000000", n.len()), n, st, at);
    let mut errored = pipeline_json("errored", at);
    errored["errors"] = json!([{"type": "config", "message": "Unexpected argument(s): foo"}]);
    let cases: Vec<(Value, Vec<Value>, &str, RunState)> = vec![
        (pipeline_json("pending", at), vec![], late, RunState::Queued),
        (pipeline_json("created", at), vec![], soon, RunState::Queued),
        (errored, vec![], soon, RunState::Failed),
        (pipeline_json("created", at), vec![w("a", "success"), w("bb", "queued")], soon, RunState::Running),
        (pipeline_json("created", at), vec![w("a", "on_hold"), w("bb", "success")], soon, RunState::Blocked),
        (pipeline_json("created", at), vec![w("a", "unauthorized"), w("bb", "success")], soon, RunState::Failed),
        (pipeline_json("created", at), vec![w("a", "canceled"), w("bb", "success")], soon, RunState::Canceled),
        (pipeline_json("created", at), vec![w("a", "not_run"), w("bb", "success")], soon, RunState::Succeeded),
        (pipeline_json("created", at), vec![w("a", "not_run")], soon, RunState::Skipped),
        (pipeline_json("created", at), vec![], late, RunState::Skipped),
    ];
    for (i, (pipeline, workflows, date, expected)) in cases.into_iter().enumerate() {
        let s = setup().await;
        assert_valid("responses", "getPipelineById.200", &pipeline);
        mount_status(&s, pipeline, workflows, date).await;
        let st = s.gh().status(&ProviderRunRef::new(PIPELINE)).await.unwrap();
        assert_eq!(st.state, expected, "case {i}: {st:?}");
        if expected == RunState::Failed && st.steps.is_empty() {
            assert_eq!(st.message.as_deref(), Some("config: Unexpected argument(s): foo"));
        }
    }
}

#[tokio::test]
async fn the_setup_grace_can_be_set_per_target() {
    let s = setup().await;
    mount_status(&s, pipeline_json("created", "2024-05-01T10:00:00Z"), vec![], "Wed, 01 May 2024 10:01:30 GMT").await;
    let st = s.gh().status(&ProviderRunRef::new(PIPELINE)).await.unwrap();
    assert_eq!(st.state, RunState::Skipped);
    let patient = s.target(json!({"project_slug": "gh/acme/web", "setup_grace": "5m"}));
    assert_eq!(patient.status(&ProviderRunRef::new(PIPELINE)).await.unwrap().state, RunState::Queued);
}

#[tokio::test]
async fn cancel_cancels_every_running_workflow() {
    let s = setup().await;
    s.catch_all().await;
    let at = "2024-05-01T10:00:00Z";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![
            workflow("11111111-0000-0000-0000-000000000000", "build", "running", at),
            workflow("22222222-0000-0000-0000-000000000000", "deploy", "on_hold", at),
            workflow("33333333-0000-0000-0000-000000000000", "lint", "success", at),
        ],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    for id in ["11111111-0000-0000-0000-000000000000", "22222222-0000-0000-0000-000000000000"] {
        Mock::given(method("POST"))
            .and(path(format!("/api/v2/workflow/{id}/cancel")))
            .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message": "Accepted."})))
            .expect(1)
            .mount(&s.server)
            .await;
    }
    s.gh().cancel(&ProviderRunRef::new(PIPELINE)).await.unwrap();
}

#[tokio::test]
async fn rerun_from_failed_returns_the_new_workflows_as_the_next_attempt() {
    let s = setup().await;
    s.catch_all().await;
    let at = "2024-05-01T10:00:00Z";
    let old = "11111111-0000-0000-0000-000000000000";
    let new = "0e53027b-521a-4c40-9042-47e72b3c63a3";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![
            workflow(old, "test", "failed", at),
            workflow("22222222-0000-0000-0000-000000000000", "lint", "success", at),
        ],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v2/workflow/{old}/rerun")))
        .and(body_json(json!({"from_failed": true})))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"workflow_id": new})))
        .expect(1)
        .mount(&s.server)
        .await;
    let out = s.gh().rerun(&ProviderRunRef::new(PIPELINE), RerunOptions { failed_only: true }).await.unwrap();
    let TriggerOutcome::Started(r) = out else { panic!("{out:?}") };
    assert_eq!((r.id.as_str(), r.attempt), (PIPELINE, 2));
    assert_eq!(r.extra, json!({"workflow_ids": [new]}));
    assert_valid("requests", "rerunWorkflow", &json!({"from_failed": true}));
    assert_valid("responses", "rerunWorkflow.202", &json!({"workflow_id": new}));
    // The new workflow is not listed yet: attempt 2 is queued, not the old failure.
    let st = s.gh().status(&r).await.unwrap();
    assert_eq!(st.state, RunState::Queued, "{st:?}");
}

#[tokio::test]
async fn attempt_two_reads_the_newest_workflow_per_name() {
    let s = setup().await;
    let new = "0e53027b-521a-4c40-9042-47e72b3c63a3";
    mount_status(
        &s,
        pipeline_json("created", "2024-05-01T10:00:00Z"),
        vec![
            workflow("11111111-0000-0000-0000-000000000000", "test", "failed", "2024-05-01T10:00:00Z"),
            workflow(new, "test", "success", "2024-05-01T10:03:00Z"),
        ],
        "Wed, 01 May 2024 10:05:00 GMT",
    )
    .await;
    let run = ProviderRunRef { attempt: 2, extra: json!({"workflow_ids": [new]}), ..ProviderRunRef::new(PIPELINE) };
    assert_eq!(s.gh().status(&run).await.unwrap().state, RunState::Succeeded);
}

#[tokio::test]
async fn a_running_pipeline_cannot_be_rerun() {
    let s = setup().await;
    let at = "2024-05-01T10:00:00Z";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![workflow("11111111-0000-0000-0000-000000000000", "t", "running", at)],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    let e = s.gh().rerun(&ProviderRunRef::new(PIPELINE), RerunOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
}

#[tokio::test]
async fn approve_finds_the_approval_request_id() {
    let s = setup().await;
    s.catch_all().await;
    let at = "2024-05-01T10:00:00Z";
    let wf = "11111111-0000-0000-0000-000000000000";
    let request = "c65b68ef-e73b-4bf2-be9a-7a322a9df150";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![workflow(wf, "deploy", "on_hold", at)],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    let jobs = json!({"items": [
        {"id": "aaaaaaaa-0000-0000-0000-000000000001", "name": "build", "type": "build", "status": "success",
         "started_at": at, "dependencies": [], "project_slug": "gh/acme/web", "job_number": 7},
        {"id": request, "name": "hold", "type": "approval", "status": "on_hold", "approval_request_id": request,
         "started_at": null, "dependencies": ["aaaaaaaa-0000-0000-0000-000000000001"], "project_slug": "gh/acme/web"}
    ], "next_page_token": null});
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/workflow/{wf}/job")))
        .respond_with(ResponseTemplate::new(200).set_body_json(jobs))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v2/workflow/{wf}/approve/{request}")))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message": "Accepted."})))
        .expect(1)
        .mount(&s.server)
        .await;
    s.gh().approve(&ProviderRunRef::new(PIPELINE), Decision::Approve).await.unwrap();
}

#[tokio::test]
async fn deny_cancels_the_held_workflow() {
    let s = setup().await;
    s.catch_all().await;
    let at = "2024-05-01T10:00:00Z";
    let wf = "11111111-0000-0000-0000-000000000000";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![workflow(wf, "deploy", "on_hold", at)],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/api/v2/workflow/{wf}/cancel")))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message": "Accepted."})))
        .expect(1)
        .mount(&s.server)
        .await;
    s.gh().approve(&ProviderRunRef::new(PIPELINE), Decision::Deny).await.unwrap();
}

#[tokio::test]
async fn find_recent_lists_by_branch_and_reads_the_run_id_parameter() {
    let s = setup().await;
    s.catch_all().await;
    let mut newest = pipeline_json("created", "2024-05-01T10:00:00Z");
    newest["trigger_parameters"] = json!({"cigw_run_id": "run-42"});
    let mut older = pipeline_json("created", "2024-05-01T09:00:00Z");
    older["id"] = json!("bbbbbbbb-0000-0000-0000-000000000000");
    let mut too_old = pipeline_json("created", "2024-04-01T09:00:00Z");
    too_old["id"] = json!("cccccccc-0000-0000-0000-000000000000");
    let page1 = json!({"items": [newest, older], "next_page_token": "more"});
    let page2 = json!({"items": [too_old], "next_page_token": "even-more"});
    assert_valid("responses", "listPipelinesForProject.200", &page1);
    Mock::given(method("GET"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .and(query_param("branch", "main"))
        .and(query_param_is_missing("page-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page1))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/project/gh/acme/web/pipeline"))
        .and(query_param("page-token", "more"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page2))
        .expect(1)
        .mount(&s.server)
        .await;
    let since = "2024-05-01T08:00:00Z".parse().unwrap();
    let found = s
        .gh()
        .find_recent(&RecentQuery { since, branch: Some("main".into()), tag: None, sha: Some("1dc6aa6".into()) })
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].run_ref.id, PIPELINE);
    assert_eq!(found[0].correlation_id.as_deref(), Some("run-42"));
    assert_eq!(found[1].correlation_id, None);
    assert_eq!(found[1].branch.as_deref(), Some("main"));
    assert_eq!(found[1].sha.as_deref(), Some("1dc6aa69429bff4806ad6afe58d3d8f57e25973e"));
}

#[tokio::test]
async fn bearer_auth_is_an_option_and_check_online_reads_me() {
    use cigw_core::provider::ProviderAccount;
    let s = setup_with(|c| c.auth = cigw_circleci::config::AuthScheme::Bearer).await;
    s.catch_all().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/me"))
        .and(header("authorization", "Bearer test-token-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "x", "login": "bot", "name": "Bot"})))
        .expect(1)
        .mount(&s.server)
        .await;
    s.account.check_online().await.unwrap();
    let debug = format!("{:?} {:?}", s.account, s.gh());
    assert!(!debug.contains("test-token-123"), "{debug}");
}

#[tokio::test]
async fn callbacks_verify_the_signature_and_route_by_pipeline() {
    use cigw_core::provider::ProviderAccount;
    let s = setup_with(|c| {
        c.webhook_secrets = vec![SecretString::from("old-secret"), SecretString::from("new-secret")];
    })
    .await;
    let body = include_bytes!("resources/workflow-completed.json");
    let signed = cigw_circleci::webhook::sign_v1("new-secret", body);
    let headers = vec![
        ("Circleci-Signature".to_string(), signed),
        ("circleci-event-type".to_string(), "workflow-completed".to_string()),
    ];
    let event = s.account.verify_callback(&headers, body).unwrap().unwrap();
    assert_eq!(event.provider_run_id, "1285fe1d-d3a6-44fc-8886-8979558254c4");
    assert_eq!(event.event_id, "3888f21b-eaa7-38e3-8f3d-75a63bba8895");
    let forged = vec![("circleci-signature".to_string(), cigw_circleci::webhook::sign_v1("guess", body))];
    assert!(matches!(s.account.verify_callback(&forged, body), Err(Error::Unauthenticated { .. })));
    assert!(matches!(s.account.verify_callback(&[], body), Err(Error::Unauthenticated { .. })));
}

#[tokio::test]
async fn one_rate_limiter_per_account_spaces_requests() {
    let s = setup_with(|c| {
        c.transport.rate_limit = Some(cigw_core::RateLimit::parse("10/s").unwrap());
    })
    .await;
    mount_status(&s, pipeline_json("created", "2024-05-01T10:00:00Z"), vec![], "Wed, 01 May 2024 10:00:01 GMT").await;
    let a = s.gh();
    let b = s.target(json!({"project_slug": "gh/acme/other"}));
    let started = std::time::Instant::now();
    // 14 requests (7 status calls of 2 requests) through two targets of one account: the burst of
    // 10 passes, the other 4 wait about 100 ms each.
    for i in 0..7 {
        let t = if i % 2 == 0 { &a } else { &b };
        t.status(&ProviderRunRef::new(PIPELINE)).await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_follow_only_target_reads_and_cancels_a_pipeline_from_its_id_alone() {
    use cigw_core::provider::ProviderAccount;
    let s = setup().await;
    s.catch_all().await;
    let at = "2024-05-01T10:00:00Z";
    mount_status(
        &s,
        pipeline_json("created", at),
        vec![
            workflow("11111111-0000-0000-0000-000000000000", "build", "running", at),
            workflow("33333333-0000-0000-0000-000000000000", "lint", "success", at),
        ],
        "Wed, 01 May 2024 10:00:10 GMT",
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/workflow/11111111-0000-0000-0000-000000000000/cancel"))
        .and(header("Circle-Token", "test-token-123"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message": "Accepted."})))
        .expect(1)
        .mount(&s.server)
        .await;
    let mut run = ProviderRunRef::new(PIPELINE);
    run.url = Some("https://app.example.com/pipelines/github/acme/web/2".into());
    let follower = s.account.follow_target("removed-web", &run).expect("CircleCI pipelines can be followed");
    let caps = follower.capabilities();
    assert!(caps.cancel && !caps.rerun && !caps.approve && !caps.callbacks, "{caps:?}");

    let status = follower.status(&run).await.unwrap();
    assert_eq!(status.state, RunState::Running, "{status:?}");
    assert_eq!(status.raw_status, "pipeline created; build running, lint success");
    assert_eq!(status.url, run.url, "the link recorded at dispatch is kept");
    follower.cancel(&run).await.unwrap();

    let e = follower.trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { operation: "trigger" }), "{e:?}");
    let e = follower.rerun(&run, RerunOptions { failed_only: true }).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let e = follower.approve(&run, Decision::Deny).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let query = RecentQuery { since: chrono::Utc::now(), branch: None, tag: None, sha: None };
    let e = follower.find_recent(&query).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    // The workflows alone for the status of a running pipeline (no pipeline read), workflows +
    // one cancel for the cancel: nothing else.
    assert_eq!(s.server.received_requests().await.unwrap().len(), 3);
}
