//! Property tests of everything that reads CircleCI's answers: arbitrary bytes and arbitrary JSON
//! shaped like CircleCI's objects never make the adapter panic, and every status string maps to
//! a run state.

use std::time::Duration;

use cigw_circleci::error::{error_message, parse_error};
use cigw_circleci::models::{Page, Pipeline, PipelineCreation, Workflow, WorkflowStatus};
use cigw_circleci::slug::ProjectSlug;
use cigw_circleci::status::{newest_per_name, run_state, workflow_state};
use cigw_circleci::webhook::{WebhookEvent, verify_signature};
use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error, RunState};
use cigw_sim::arbitrary::*;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Map, Value};

const WORKFLOW_STATUSES: &[&str] =
    &["success", "running", "not_run", "failed", "error", "failing", "on_hold", "canceled", "unauthorized", "queued"];
const PIPELINE_STATES: &[&str] = &["created", "errored", "setup-pending", "setup", "pending"];

fn workflow_json() -> impl Strategy<Value = Value> {
    shaped(vec![
        ("id", text_of(&["5034460f-c7c4-4c43-9457-de07e2029e7b"])),
        ("name", text_of(&["build", "deploy", "setup"])),
        ("status", text_of(WORKFLOW_STATUSES)),
        ("created_at", any_time_text().boxed()),
        ("stopped_at", any_time_text().boxed()),
        ("tag", text_of(&["setup"])),
        ("pipeline_id", text_of(&["e411ea74-c64a-4d60-9292-115e782802ed"])),
    ])
}

fn pipeline_json() -> impl Strategy<Value = Value> {
    let errors = prop::collection::vec(
        shaped(vec![("type", text_of(&["config", "permission"])), ("message", text_of(&["bad config"]))]),
        0..3,
    )
    .prop_map(Value::Array);
    let vcs = shaped(vec![
        ("branch", text_of(&["main"])),
        ("tag", text_of(&["v1"])),
        ("revision", text_of(&["0123456789abcdef0123456789abcdef01234567"])),
    ]);
    let parameters = prop::collection::btree_map(".{0,10}", any_json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()));
    shaped(vec![
        ("id", text_of(&["e411ea74-c64a-4d60-9292-115e782802ed"])),
        (
            "number",
            prop_oneof![3 => any::<u32>().prop_map(Value::from), 1 => any::<i64>().prop_map(Value::from)].boxed(),
        ),
        ("state", text_of(PIPELINE_STATES)),
        ("created_at", any_time_text().boxed()),
        ("errors", errors.boxed()),
        ("vcs", vcs.boxed()),
        ("trigger_parameters", parameters.boxed()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_error_answer_maps_without_panicking(
        status in any_status(),
        headers in retry_after_headers(),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), any_json().prop_map(|v| v.to_string().into_bytes())],
        kind in any_kind(),
    ) {
        let message = error_message(status, &body);
        prop_assert!(message.chars().count() <= 501, "an error message quotes at most 500 characters");
        let e = parse_error(&Answer::new("CircleCI", status, headers.clone(), body.clone()), kind);
        // A trigger answered with a 5xx may have started a build: never retried blindly.
        if status.is_server_error() && kind == CallKind::StartsBuild {
            prop_assert!(!e.is_retryable(CallKind::StartsBuild), "{e:?}");
        }
        if status.as_u16() == 429 {
            prop_assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
        }
        let _ = e.to_string();
        let _ = e.retry_after();
    }

    #[test]
    fn any_workflow_status_string_maps_to_a_run_state(s in ".{0,40}") {
        let status = WorkflowStatus::parse(&s);
        prop_assert_eq!(status.as_str(), s.as_str());
        let state: RunState = workflow_state(&status);
        if matches!(status, WorkflowStatus::Unknown(_)) {
            prop_assert_eq!(state, RunState::Running, "an unknown status never ends a run");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = serde_json::from_slice::<Pipeline>(&body);
        let _ = serde_json::from_slice::<PipelineCreation>(&body);
        let _ = serde_json::from_slice::<Page<Workflow>>(&body);
        if let Ok(event) = WebhookEvent::parse(&body) {
            let _ = event.callback();
            let _ = event.project_slug();
        }
        let secrets = [SecretString::from("secret".to_string())];
        let header = String::from_utf8_lossy(&body);
        let _ = verify_signature(&secrets, Some(&header), &body);
        let _ = ProjectSlug::parse(&header);
    }

    #[test]
    fn pipelines_and_workflows_shaped_like_circleci_aggregate_without_panicking(
        pipeline in pipeline_json(),
        workflows in prop::collection::vec(workflow_json(), 0..6),
        next_page_token in prop::option::of(any_json()),
        now in any_now(),
        grace_secs in any::<u64>(),
    ) {
        let mut page = serde_json::json!({"items": workflows});
        if let Some(t) = next_page_token {
            page["next_page_token"] = t;
        }
        let page: Option<Page<Workflow>> = serde_json::from_value(page).ok();
        let creation = serde_json::from_value::<PipelineCreation>(pipeline.clone());
        let _ = creation;
        if let (Ok(pipeline), Some(page)) = (serde_json::from_value::<Pipeline>(pipeline), page) {
            let newest = newest_per_name(&page.items);
            let result = run_state(&pipeline, &newest, now, Duration::from_secs(grace_secs));
            if pipeline.state.as_str() == "errored" {
                prop_assert_eq!(result.state, RunState::Failed);
            }
        }
    }

    #[test]
    fn webhook_payloads_shaped_like_circleci_parse_without_panicking(
        id in prop::option::of(text_of(&["3888f21b-eaa7-38e3-8f3d-75a63bba8895"])),
        kind in text_of(&["workflow-completed", "job-completed", "ping"]),
        happened_at in any_time_text(),
        project in shaped(vec![("id", text_of(&["84996744"])), ("name", text_of(&["api"])), ("slug", text_of(&["github/acme/api", "gh/acme/api", "bitbucket/a/b", "circleci/x/y"]))]),
        pipeline in shaped(vec![("id", text_of(&["e411ea74-c64a-4d60-9292-115e782802ed"])), ("number", prop_oneof![3 => any::<u32>().prop_map(Value::from), 1 => any::<i64>().prop_map(Value::from)].boxed())]),
        workflow in workflow_json(),
    ) {
        let mut event = serde_json::json!({"type": kind, "happened_at": happened_at, "project": project,
                                           "pipeline": pipeline, "workflow": workflow});
        if let Some(id) = id {
            event["id"] = id;
        }
        let body = event.to_string();
        if let Ok(e) = WebhookEvent::parse(body.as_bytes()) {
            let _ = e.callback();
            let _ = e.project_slug();
        }
    }
}

mod through_the_client {
    //! The same, end to end through the adapter: a server answering the adapter's calls with
    //! generated statuses and bodies never makes `status`, `find_recent` or `trigger` panic.

    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use cigw_circleci::CircleciAccount;
    use cigw_circleci::config::{AccountConfig, TargetConfig};
    use cigw_core::config::Problems;
    use cigw_core::retry::RetryPolicy;
    use cigw_core::{
        CiTarget, ConcurrencyPolicy, GitRef, Parameters, ProviderKind, ProviderRunRef, RecentQuery, TargetSpec,
        TriggerSpec,
    };
    use proptest::prelude::*;
    use secrecy::SecretString;
    use serde_json::{Value, json};
    use url::Url;
    use wiremock::matchers::{any as any_request, method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::{any_json, pipeline_json, workflow_json};

    /// Mostly a success status (so bodies get decoded), sometimes anything.
    fn answer_status() -> impl Strategy<Value = u16> {
        prop_oneof![6 => Just(200u16), 1 => Just(201u16), 2 => 100u16..=599]
    }

    /// A body: a generated object, arbitrary JSON, or arbitrary bytes.
    fn body(object: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => object.prop_map(|v| v.to_string().into_bytes()),
            1 => any_json().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..256),
        ]
    }

    fn page(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        (prop::collection::vec(item, 0..5), prop::option::of(prop_oneof![Just(Value::Null), Just(json!("next"))]))
            .prop_map(|(items, next)| json!({"items": items, "next_page_token": next.unwrap_or(Value::Null)}))
            .boxed()
    }

    fn respond(status: u16, body: &[u8]) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json")
    }

    #[test]
    fn any_answers_to_the_adapters_calls_never_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let server = rt.block_on(MockServer::start());
        let mut cfg = AccountConfig::new(
            Url::parse(&format!("{}/api/v2", server.uri())).expect("URL"),
            SecretString::from("test-token".to_string()),
        );
        cfg.transport.retry = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries: 1,
            deadline: Duration::from_secs(1),
        };
        let account = CircleciAccount::new("main", cfg).expect("account");
        let spec = TargetSpec {
            name: "web".into(),
            provider: ProviderKind::Circleci,
            account: "main".into(),
            default_branch: "main".into(),
            parameters: vec![],
            max_duration: None,
            concurrency: ConcurrencyPolicy::Queue,
            debounce: None,
            description: None,
        };
        let mut problems = Problems::default();
        let fields = json!({"project_slug": "gh/acme/web"});
        let config = TargetConfig::parse(&spec, "targets.web", fields.as_object().expect("object"), &mut problems);
        let target = account.target_from("web", config.expect("target"));
        let run = ProviderRunRef {
            id: "e411ea74-c64a-4d60-9292-115e782802ed".into(),
            number: None,
            attempt: 1,
            url: None,
            extra: Value::Null,
        };
        let trigger = TriggerSpec {
            run_id: "run-1".into(),
            git_ref: GitRef::branch("main"),
            parameters: Parameters::new(),
            requested_by: "proptest".into(),
        };
        // The wiring first: well-formed answers decode into a status, so the generated ones
        // reach the decoding rather than only the error paths.
        rt.block_on(async {
            let pipeline = json!({"id": run.id, "state": "created", "created_at": "2026-01-01T00:00:00Z"});
            let workflows = json!({"items": [{"id": "w1", "name": "build", "status": "success",
                                             "created_at": "2026-01-01T00:00:01Z"}], "next_page_token": null});
            let empty = json!({"items": [], "next_page_token": null});
            let bytes = |v: &Value| v.to_string().into_bytes();
            mount(&server, (200, &bytes(&pipeline)), (200, &bytes(&workflows)), (200, &bytes(&empty))).await;
            let status = target.status(&run).await.expect("well-formed answers decode");
            assert_eq!(status.state, cigw_core::RunState::Succeeded);
        });
        let config = ProptestConfig { cases: 96, ..ProptestConfig::default() };
        proptest!(config, |(
            pipeline in (answer_status(), body(pipeline_json().boxed())),
            workflows in (answer_status(), body(page(workflow_json().boxed()))),
            pipelines in (answer_status(), body(page(pipeline_json().boxed()))),
            since in -8_000_000_000_000i64..8_000_000_000_000i64,
        )| {
            rt.block_on(async {
                mount(&server, (pipeline.0, &pipeline.1), (workflows.0, &workflows.1), (pipelines.0, &pipelines.1)).await;
                let limit = Duration::from_secs(10);
                let _ = tokio::time::timeout(limit, target.status(&run)).await;
                let query = RecentQuery {
                    since: Utc.timestamp_opt(since, 0).single().unwrap_or_default(),
                    branch: Some("main".into()),
                    tag: None,
                    sha: None,
                };
                let _ = tokio::time::timeout(limit, target.find_recent(&query)).await;
                let _ = tokio::time::timeout(limit, target.trigger(&trigger)).await;
            });
        });
    }

    /// Answer pipeline reads (and anything else) with `pipeline`, workflow lists with
    /// `workflows` and pipeline lists with `pipelines`.
    async fn mount(server: &MockServer, pipeline: (u16, &[u8]), workflows: (u16, &[u8]), pipelines: (u16, &[u8])) {
        server.reset().await;
        Mock::given(path_regex(r"/workflow$")).respond_with(respond(workflows.0, workflows.1)).mount(server).await;
        Mock::given(method("GET"))
            .and(path_regex(r"/project/.*/pipeline$"))
            .respond_with(respond(pipelines.0, pipelines.1))
            .mount(server)
            .await;
        Mock::given(any_request()).respond_with(respond(pipeline.0, pipeline.1)).with_priority(10).mount(server).await;
    }
}
