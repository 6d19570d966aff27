//! Property tests of everything that reads Codefresh's answers: arbitrary bytes and arbitrary JSON
//! shaped like Codefresh's build and list objects never make the adapter panic, and every status
//! string maps to a run state.

use cigw_codefresh::error::{error_message, parse_error};
use cigw_codefresh::models::{Annotation, Build, BuildStatus, Pipeline, WorkflowList};
use cigw_codefresh::status::{message, run_state};
use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error, RunState};
use cigw_sim::arbitrary::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

const BUILD_STATUSES: &[&str] =
    &["pending", "delayed", "elected", "running", "pending-approval", "terminating", "success", "error", "terminated"];

fn build_json() -> impl Strategy<Value = Value> {
    let annotations = prop_oneof![
        prop::collection::btree_map(".{0,10}", any_json(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        prop::collection::vec(shaped(vec![("key", text_of(&["cigw_run_id"])), ("value", any_json().boxed())]), 0..4)
            .prop_map(Value::Array),
    ];
    shaped(vec![
        ("id", text_of(&["65f0c0ffee0123456789abcd"])),
        ("_id", text_of(&["65f0c0ffee0123456789abcd"])),
        ("status", text_of(BUILD_STATUSES)),
        ("created", any_time_text().boxed()),
        ("started", any_time_text().boxed()),
        ("finished", any_time_text().boxed()),
        ("updated", any_time_text().boxed()),
        ("progress", text_of(&["65f0c0ffee0123456789abce"])),
        ("pipelineName", text_of(&["web/e2e"])),
        ("serviceId", text_of(&["65f0c0ffee0123456789abcf"])),
        ("branchName", text_of(&["main"])),
        ("revision", text_of(&["0123456789abcdef0123456789abcdef01234567"])),
        ("trigger", text_of(&["build", "launch-image"])),
        ("pipelineTriggerName", text_of(&["push"])),
        ("pendingLicense", any::<bool>().prop_map(Value::Bool).boxed()),
        ("annotations", annotations.boxed()),
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
        let _ = error_message(status, &body);
        let e = parse_error(&Answer::new("Codefresh", status, headers.clone(), body.clone()), kind);
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
    fn any_build_status_string_maps_to_a_run_state(s in ".{0,40}", pending_license in any::<bool>()) {
        let status = BuildStatus::from(s.clone());
        prop_assert_eq!(status.as_str(), s.as_str());
        let state: RunState = run_state(&status);
        if matches!(status, BuildStatus::Unknown(_)) {
            prop_assert_eq!(state, RunState::Running, "an unknown status never ends a run");
        }
        let _ = message(&status, pending_license);
        let _ = status.is_final();
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(b) = serde_json::from_slice::<Build>(&body) {
            let _ = b.build_id();
            let _ = b.annotation("cigw_run_id");
        }
        if let Ok(list) = serde_json::from_slice::<WorkflowList>(&body)
            && let Some(p) = list.pagination
        {
            let _ = p.next_after(1);
        }
        let _ = serde_json::from_slice::<Vec<Annotation>>(&body);
        let _ = serde_json::from_slice::<Pipeline>(&body);
        // The trigger answer: the build id as a JSON string.
        let _ = serde_json::from_slice::<String>(&body);
    }

    #[test]
    fn builds_and_lists_shaped_like_codefresh_decode_without_panicking(
        builds in prop::collection::vec(build_json(), 0..6),
        total in prop::option::of(any_json()),
        session in prop::option::of(any_json()),
        next_page in prop::option::of(any_json()),
        current in any::<u64>(),
        key in prop::sample::select(vec!["cigw_run_id", "", "x"]),
    ) {
        for b in &builds {
            if let Ok(build) = serde_json::from_value::<Build>(b.clone()) {
                let _ = build.build_id();
                let _ = build.annotation(key);
                let state = run_state(&build.status);
                let _ = message(&build.status, build.pending_license.unwrap_or(false));
                let _ = state;
            }
        }
        let mut list = serde_json::json!({"workflows": {"docs": builds}});
        if let Some(t) = total {
            list["workflows"]["total"] = t;
        }
        let mut pagination = Map::new();
        if let Some(s) = session {
            pagination.insert("sessionId".into(), s);
        }
        if let Some(n) = next_page {
            pagination.insert("nextPage".into(), n);
        }
        list["pagination"] = Value::Object(pagination);
        if let Ok(list) = serde_json::from_value::<WorkflowList>(list)
            && let Some(p) = list.pagination
            && let Some(next) = p.next_after(current)
        {
            prop_assert!(next > current, "pagination always moves forward");
        }
    }
}

mod through_the_client {
    //! The same, end to end through the adapter: a server answering the adapter's calls with
    //! generated statuses and bodies never makes `status`, `find_recent` or `trigger` panic.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use cigw_codefresh::config::RunOptions;
    use cigw_codefresh::{AccountConfig, CodefreshAccount, PipelineLocator, TargetConfig};
    use cigw_core::retry::RetryPolicy;
    use cigw_core::{CiTarget, GitRef, Parameters, ProviderRunRef, RecentQuery, TriggerSpec};
    use proptest::prelude::*;
    use secrecy::SecretString;
    use serde_json::{Value, json};
    use url::Url;
    use wiremock::matchers::{any as any_request, method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::{any_json, build_json, shaped, text_of};

    /// Mostly a success status (so bodies get decoded), sometimes anything.
    fn answer_status() -> impl Strategy<Value = u16> {
        prop_oneof![8 => Just(200u16), 2 => 100u16..=599]
    }

    /// A body: a generated value, arbitrary JSON, or arbitrary bytes.
    fn body(object: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => object.prop_map(|v| v.to_string().into_bytes()),
            1 => any_json().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..256),
        ]
    }

    fn list_json() -> BoxedStrategy<Value> {
        (prop::collection::vec(build_json(), 0..5), prop::option::of(any_json()))
            .prop_map(|(docs, next)| {
                json!({"workflows": {"docs": docs, "total": 5}, "pagination": {"nextPage": next.unwrap_or(Value::Null)}})
            })
            .boxed()
    }

    fn pipeline_json() -> BoxedStrategy<Value> {
        shaped(vec![(
            "metadata",
            shaped(vec![("id", text_of(&["65f0c0ffee0123456789abcf"])), ("name", text_of(&["web/e2e"]))]).boxed(),
        )])
        .boxed()
    }

    fn annotations_json() -> BoxedStrategy<Value> {
        prop::collection::vec(shaped(vec![("key", text_of(&["cigw_run_id"])), ("value", any_json().boxed())]), 0..4)
            .prop_map(Value::Array)
            .boxed()
    }

    fn respond(status: u16, body: &[u8]) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json")
    }

    #[test]
    fn any_answers_to_the_adapters_calls_never_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let server = rt.block_on(MockServer::start());
        let mut settings = AccountConfig::new(
            Url::parse(&format!("{}/api", server.uri())).expect("URL"),
            SecretString::from("65f0aaaabbbbccccddddeeee.key".to_string()),
        );
        settings.transport.retry = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries: 1,
            deadline: Duration::from_secs(1),
        };
        let account = CodefreshAccount::new("cf", settings).expect("account");
        let target = account.target_from(
            "web",
            TargetConfig {
                pipeline: PipelineLocator::Name("web/e2e".into()),
                trigger: None,
                variables: BTreeMap::new(),
                options: RunOptions::default(),
                contexts: vec![],
            },
        );
        let run = ProviderRunRef {
            id: "65f0c0ffee0123456789abcd".into(),
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
            let build = json!({"id": run.id, "status": "success"}).to_string().into_bytes();
            let list = json!({"workflows": {"docs": []}}).to_string().into_bytes();
            let pipeline = json!({"metadata": {"id": "65f0c0ffee0123456789abcf"}}).to_string().into_bytes();
            let answers = Answers {
                build: (200, &build),
                list: (200, &list),
                pipeline: (200, &pipeline),
                annotations: (200, b"[]"),
                run: (200, b"\"65f0c0ffee0123456789abcd\""),
            };
            mount(&server, answers).await;
            let status = target.status(&run).await.expect("well-formed answers decode");
            assert_eq!(status.state, cigw_core::RunState::Succeeded);
        });
        let config = ProptestConfig { cases: 96, ..ProptestConfig::default() };
        proptest!(config, |(
            build in (answer_status(), body(build_json().boxed())),
            list in (answer_status(), body(list_json())),
            pipeline in (answer_status(), body(pipeline_json())),
            annotations in (answer_status(), body(annotations_json())),
            run_answer in (answer_status(), body(prop_oneof![".{0,30}".prop_map(Value::from), any_json()].boxed())),
            since in -8_000_000_000_000i64..8_000_000_000_000i64,
        )| {
            rt.block_on(async {
                let answers = Answers {
                    build: (build.0, &build.1),
                    list: (list.0, &list.1),
                    pipeline: (pipeline.0, &pipeline.1),
                    annotations: (annotations.0, &annotations.1),
                    run: (run_answer.0, &run_answer.1),
                };
                mount(&server, answers).await;
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

    /// Status and body of each kind of call.
    struct Answers<'a> {
        build: (u16, &'a [u8]),
        list: (u16, &'a [u8]),
        pipeline: (u16, &'a [u8]),
        annotations: (u16, &'a [u8]),
        run: (u16, &'a [u8]),
    }

    async fn mount(server: &MockServer, a: Answers<'_>) {
        server.reset().await;
        let get = |re: &str| Mock::given(method("GET")).and(path_regex(re));
        get(r"/api/workflow$").respond_with(respond(a.list.0, a.list.1)).mount(server).await;
        get(r"/api/pipelines/").respond_with(respond(a.pipeline.0, a.pipeline.1)).mount(server).await;
        get(r"/api/annotations").respond_with(respond(a.annotations.0, a.annotations.1)).mount(server).await;
        Mock::given(method("POST")).respond_with(respond(a.run.0, a.run.1)).mount(server).await;
        Mock::given(any_request()).respond_with(respond(a.build.0, a.build.1)).with_priority(10).mount(server).await;
    }
}
