//! Property tests of everything that reads Codeship's answers: arbitrary bytes and arbitrary JSON
//! shaped like Codeship's build, list and auth objects never make the adapter panic, every status
//! string maps to a run state, and any clock reading gives a bounded rate-limit wait.

use std::time::Duration;

use cigw_codeship::error::{error_messages, parse_error, until_next_minute};
use cigw_codeship::models::{AuthResponse, Build, BuildEnvelope, BuildList, BuildStatus, next_link};
use cigw_codeship::status::run_state;
use cigw_codeship::target::normalize_branch;
use cigw_core::transport::Answer;
use cigw_core::{CallKind, Error, RunState};
use cigw_sim::arbitrary::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

const BUILD_STATUSES: &[&str] = &[
    "initiated",
    "waiting",
    "testing",
    "success",
    "error",
    "failed",
    "stopped",
    "infrastructure_failure",
    "ignored",
    "blocked",
];

fn build_json() -> impl Strategy<Value = Value> {
    let links = shaped(vec![
        ("pipelines", text_of(&["https://api.codeship.com/v2/x/pipelines"])),
        ("services", text_of(&["https://api.codeship.com/v2/x/services"])),
        ("steps", text_of(&["https://api.codeship.com/v2/x/steps"])),
    ]);
    shaped(vec![
        ("uuid", text_of(&["25a90d60-4ea1-0136-4a97-0ad3b8a17c9b"])),
        ("project_uuid", text_of(&["83605ef0-76f8-0135-8810-6e5f001a2e3c"])),
        ("project_id", any::<i64>().prop_map(Value::from).boxed()),
        ("organization_uuid", text_of(&["28123f10-e33d-5533-b53f-111ef8d7b14f"])),
        ("ref", text_of(&["heads/main", "heads/", "tags/v1"])),
        ("branch", text_of(&["main", ""])),
        ("commit_sha", text_of(&["0123456789abcdef0123456789abcdef01234567"])),
        ("commit_message", text_of(&["fix"])),
        ("username", text_of(&["ci"])),
        ("status", text_of(BUILD_STATUSES)),
        ("queued_at", any_time_text().boxed()),
        ("allocated_at", any_time_text().boxed()),
        ("finished_at", any_time_text().boxed()),
        ("links", links.boxed()),
        ("pr_number", any::<i64>().prop_map(Value::from).boxed()),
    ])
}

fn auth_json() -> impl Strategy<Value = Value> {
    let organizations = prop::collection::vec(
        shaped(vec![
            ("uuid", text_of(&["28123f10-e33d-5533-b53f-111ef8d7b14f"])),
            ("name", text_of(&["Acme"])),
            (
                "scopes",
                prop::collection::vec(text_of(&["build.read", "build.write"]), 0..4).prop_map(Value::Array).boxed(),
            ),
        ]),
        0..3,
    )
    .prop_map(Value::Array);
    shaped(vec![
        ("access_token", text_of(&["tok"])),
        ("expires_at", any::<i64>().prop_map(Value::from).boxed()),
        ("organizations", organizations.boxed()),
        ("error", text_of(&["Unauthorized"])),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_error_answer_maps_without_panicking(
        status in any_status(),
        headers in retry_after_headers(),
        reason in prop::option::of(".{0,40}"),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), any_json().prop_map(|v| v.to_string().into_bytes())],
        kind in any_kind(),
        now in any_now(),
    ) {
        let _ = error_messages(&body);
        let mut answer = Answer::new("Codeship", status, headers.clone(), body.clone());
        answer.reason = reason.clone();
        let e = parse_error(&answer, kind, now);
        // A trigger answered with a 5xx may have started a build: never retried blindly.
        if status.is_server_error() && kind == CallKind::StartsBuild {
            prop_assert!(!e.is_retryable(CallKind::StartsBuild), "{e:?}");
        }
        if status.as_u16() == 429 {
            prop_assert!(matches!(e, Error::RateLimited { retry_after: Some(_) }), "{e:?}");
        }
        let _ = e.to_string();
        let _ = e.retry_after();
    }

    #[test]
    fn the_wait_for_the_next_minute_is_between_one_second_and_a_minute(now in any_now(), nanos in 0u32..2_000_000_000) {
        let now = now + chrono::Duration::nanoseconds(i64::from(nanos));
        let wait = until_next_minute(now);
        prop_assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn any_build_status_string_maps_to_a_run_state(s in ".{0,40}", finished in prop::option::of(any_now())) {
        let status = BuildStatus::parse(&s);
        prop_assert_eq!(status.as_str(), s.as_str());
        let (state, _message): (RunState, Option<String>) = run_state(&status, finished);
        if matches!(status, BuildStatus::Unknown(_)) {
            let expected = if finished.is_some() { RunState::Error } else { RunState::Running };
            prop_assert_eq!(state, expected);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(b) = serde_json::from_slice::<BuildEnvelope>(&body) {
            let _ = b.build.branch_name();
        }
        let _ = serde_json::from_slice::<BuildList>(&body);
        let _ = serde_json::from_slice::<AuthResponse>(&body);
        let text = String::from_utf8_lossy(&body);
        let _ = next_link(&text);
        let _ = normalize_branch(&text);
    }

    #[test]
    fn builds_lists_and_auth_answers_shaped_like_codeship_decode_without_panicking(
        builds in prop::collection::vec(build_json(), 0..6),
        total in prop::option::of(any_json()),
        page in prop::option::of(any_json()),
        auth in auth_json(),
    ) {
        for b in &builds {
            if let Ok(build) = serde_json::from_value::<Build>(b.clone()) {
                let _ = build.branch_name();
                let (state, _) = run_state(&build.status, build.finished_at);
                let _ = state;
            }
            let _ = serde_json::from_value::<BuildEnvelope>(serde_json::json!({"build": b}));
        }
        let mut list = Map::new();
        list.insert("builds".into(), Value::Array(builds));
        if let Some(t) = total {
            list.insert("total".into(), t);
        }
        if let Some(p) = page {
            list.insert("page".into(), p);
        }
        let _ = serde_json::from_value::<BuildList>(Value::Object(list));
        if let Ok(a) = serde_json::from_value::<AuthResponse>(auth) {
            let _ = format!("{a:?}");
        }
    }

    #[test]
    fn link_headers_shaped_like_codeship_yield_a_next_page_or_none(
        parts in prop::collection::vec((".{0,30}", prop::sample::select(vec!["next", "last", "prev", "first", "\"next\"", "next last", ""])), 0..5),
    ) {
        let header: Vec<String> = parts.iter().map(|(url, rel)| format!("<{url}>; rel={rel}")).collect();
        let _ = next_link(&header.join(", "));
    }
}

mod through_the_client {
    //! The same, end to end through the adapter: a server answering the adapter's calls (the
    //! token exchange included) with generated statuses and bodies, read on any clock, never
    //! makes `status`, `find_recent` or `trigger` panic.

    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use cigw_codeship::{AccountConfig, CodeshipAccount, ProjectType, TargetConfig};
    use cigw_core::retry::RetryPolicy;
    use cigw_core::{CiTarget, GitRef, Parameters, ProviderRunRef, RecentQuery, TriggerSpec};
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use url::Url;
    use wiremock::matchers::{any as any_request, method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::{any_json, any_now, auth_json, build_json};

    const ORGANIZATION: &str = "28123f10-e33d-5533-b53f-111ef8d7b14f";
    const PROJECT: &str = "83605ef0-76f8-0135-8810-6e5f001a2e3c";

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

    /// An auth answer that usually lets the calls through, with any expiry.
    fn working_auth() -> BoxedStrategy<Value> {
        prop_oneof![
            4 => any::<i64>().prop_map(|expires_at| json!({
                "access_token": "tok",
                "expires_at": expires_at,
                "organizations": [{"uuid": ORGANIZATION, "name": "Acme", "scopes": ["build.read", "build.write"]}]
            })),
            1 => auth_json(),
        ]
        .boxed()
    }

    fn list_json() -> BoxedStrategy<Value> {
        (prop::collection::vec(build_json(), 0..5), prop::option::of(any::<u64>()))
            .prop_map(|(builds, total)| json!({"builds": builds, "total": total, "per_page": 50, "page": 1}))
            .boxed()
    }

    fn respond(status: u16, body: &[u8]) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_raw(body.to_vec(), "application/json")
    }

    #[test]
    fn any_answers_to_the_adapters_calls_never_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let server = rt.block_on(MockServer::start());
        let run = ProviderRunRef {
            id: "25a90d60-4ea1-0136-4a97-0ad3b8a17c9b".into(),
            number: None,
            attempt: 1,
            url: None,
            extra: json!({"project_uuid": PROJECT, "project_type": "basic"}),
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
            let now = Utc::now();
            let auth = json!({"access_token": "tok", "expires_at": now.timestamp() + 3600,
                              "organizations": [{"uuid": ORGANIZATION, "name": "Acme",
                                                 "scopes": ["build.read", "build.write"]}]});
            let build = json!({"build": {"uuid": run.id, "status": "success", "finished_at": "2026-01-01T00:00:00Z"}});
            let list = json!({"builds": []});
            let bytes = |v: &Value| v.to_string().into_bytes();
            let answers = Answers {
                auth: (200, &bytes(&auth)),
                create: 202,
                list: (200, &bytes(&list)),
                build: (200, &bytes(&build)),
            };
            mount(&server, answers).await;
            let status = target_on(&server, now, false).status(&run).await.expect("well-formed answers decode");
            assert_eq!(status.state, cigw_core::RunState::Succeeded);
        });
        let config = ProptestConfig { cases: 96, ..ProptestConfig::default() };
        proptest!(config, |(
            auth in (answer_status(), body(working_auth())),
            build in (answer_status(), body(build_json().prop_map(|b| json!({"build": b})).boxed())),
            list in (answer_status(), body(list_json())),
            create_status in prop_oneof![4 => Just(202u16), 1 => 100u16..=599],
            now in any_now(),
            since in any_now(),
            pro in any::<bool>(),
        )| {
            rt.block_on(async {
                let answers = Answers {
                    auth: (auth.0, &auth.1),
                    create: create_status,
                    list: (list.0, &list.1),
                    build: (build.0, &build.1),
                };
                mount(&server, answers).await;
                // A new account per case, so every case exchanges a token on its own clock.
                let target = target_on(&server, now, pro);
                let limit = Duration::from_secs(10);
                let _ = tokio::time::timeout(limit, target.status(&run)).await;
                let query = RecentQuery { since, branch: Some("main".into()), tag: None, sha: None };
                let _ = tokio::time::timeout(limit, target.find_recent(&query)).await;
                let _ = tokio::time::timeout(limit, target.trigger(&trigger)).await;
            });
        });
    }

    /// Status and body of each kind of call.
    struct Answers<'a> {
        auth: (u16, &'a [u8]),
        create: u16,
        list: (u16, &'a [u8]),
        build: (u16, &'a [u8]),
    }

    async fn mount(server: &MockServer, a: Answers<'_>) {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path_regex(r"/v2/auth$"))
            .respond_with(respond(a.auth.0, a.auth.1))
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"/builds$"))
            .respond_with(ResponseTemplate::new(a.create))
            .mount(server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"/builds$"))
            .respond_with(respond(a.list.0, a.list.1))
            .mount(server)
            .await;
        Mock::given(any_request()).respond_with(respond(a.build.0, a.build.1)).with_priority(10).mount(server).await;
    }

    /// A target of a new account on `server` whose clock always reads `now`.
    fn target_on(server: &MockServer, now: DateTime<Utc>, pro: bool) -> Arc<cigw_codeship::CodeshipTarget> {
        let mut cfg = AccountConfig::new("ci@example.com".into(), "pw".into(), "Acme")
            .with_base_url(Url::parse(&format!("{}/v2", server.uri())).expect("URL"));
        cfg.transport.rate_limit = Some(cigw_core::RateLimit::parse("100000/min").expect("rate"));
        cfg.transport.retry = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries: 1,
            deadline: Duration::from_secs(1),
        };
        let clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> = Arc::new(move || now);
        let account = CodeshipAccount::with_clock("sim", cfg, clock).expect("account");
        Arc::new(account.target_from(
            "legacy",
            TargetConfig {
                project_uuid: PROJECT.into(),
                project_type: Some(if pro { ProjectType::Pro } else { ProjectType::Basic }),
            },
        ))
    }
}
