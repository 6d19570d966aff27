//! The adapter against wiremock with the official client's fixtures: auth, token cache,
//! trigger and correlation, status rows, errors and limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use cigw_codeship::{AccountConfig, CodeshipAccount, ProjectType, TargetConfig};
use cigw_core::provider::ProviderFactory;
use cigw_core::{
    CiTarget, Error, GitRef, ParamValue, Parameters, ProviderRunRef, RecentQuery, RerunOptions, RunState,
    TriggerOutcome, TriggerSpec,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use wiremock::matchers::{any, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ORG: &str = "28123f10-e33d-5533-b53f-111ef8d7b14f";
const PROJECT: &str = "0059df30-7701-0135-8810-6e5f001a2e3c";
const BUILD: &str = "25a3dd8c-eb3e-4e75-1298-8cbcbe621342";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/resources/codeship-go/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn builds_path() -> String {
    format!("/v2/organizations/{ORG}/projects/{PROJECT}/builds")
}

fn build_path(uuid: &str) -> String {
    format!("{}/{uuid}", builds_path())
}

/// A settable clock.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Utc.with_ymd_and_hms(2026, 1, 15, 10, 20, 30).unwrap())))
    }
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
    fn advance(&self, secs: i64) {
        *self.0.lock() += chrono::Duration::seconds(secs);
    }
}

struct Setup {
    server: MockServer,
    clock: TestClock,
    account: CodeshipAccount,
}

impl Setup {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(change: impl FnOnce(&mut AccountConfig)) -> Self {
        cigw_core::telemetry::init_for_tests();
        let server = MockServer::start().await;
        let clock = TestClock::new();
        let mut cfg = common::fast_config(&format!("{}/v2", server.uri()), "ci@example.com", "s3cret-pw", ORG);
        change(&mut cfg);
        let c = clock.clone();
        let account = CodeshipAccount::with_clock("main", cfg, Arc::new(move || c.now())).unwrap();
        Self { server, clock, account }
    }

    /// `/auth` answering `token`, valid for an hour from the clock's now.
    async fn auth(&self, token: &str) -> &Self {
        self.auth_until(token, self.clock.now() + chrono::Duration::hours(1), None).await
    }

    async fn auth_until(&self, token: &str, expires_at: DateTime<Utc>, times: Option<u64>) -> &Self {
        let mut body = fixture_json("auth/success.json");
        body["access_token"] = token.into();
        body["expires_at"] = expires_at.timestamp().into();
        let basic = base64::engine::general_purpose::STANDARD.encode("ci@example.com:s3cret-pw");
        let mut mock = Mock::given(method("POST"))
            .and(path("/v2/auth"))
            .and(header("authorization", format!("Basic {basic}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body));
        if let Some(n) = times {
            mock = mock.up_to_n_times(n);
        }
        mock.mount(&self.server).await;
        self
    }

    async fn catch_all(&self) {
        Mock::given(any())
            .respond_with(|r: &Request| {
                ResponseTemplate::new(500).set_body_string(format!("unexpected request {} {}", r.method, r.url))
            })
            .with_priority(100)
            .mount(&self.server)
            .await;
    }

    fn target(&self, project_type: Option<ProjectType>) -> Arc<dyn CiTarget> {
        Arc::new(self.account.target_from("web", TargetConfig { project_uuid: PROJECT.into(), project_type }))
    }
}

fn spec(git_ref: GitRef) -> TriggerSpec {
    TriggerSpec { run_id: "run-1".into(), git_ref, parameters: Parameters::new(), requested_by: "test".into() }
}

fn build_json(uuid: &str, status: &str, branch: &str, sha: &str, queued_at: Option<DateTime<Utc>>) -> Value {
    let mut b = fixture_json("builds/get.json")["build"].clone();
    b["uuid"] = uuid.into();
    b["status"] = status.into();
    b["branch"] = branch.into();
    b["ref"] = format!("heads/{branch}").into();
    b["commit_sha"] = sha.into();
    b["queued_at"] = queued_at.map_or(Value::Null, |t| t.to_rfc3339().into());
    b["allocated_at"] = Value::Null;
    b["finished_at"] = Value::Null;
    b
}

// ---- authentication -------------------------------------------------------------------------

#[tokio::test]
async fn auth_success_then_bearer_calls_under_the_base_path() {
    let s = Setup::new().await;
    s.auth("token-1").await;
    s.catch_all().await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .and(header("authorization", "Bearer token-1"))
        .and(header("accept", "application/json"))
        .and(header("user-agent", concat!("cigw/", env!("CARGO_PKG_VERSION"))))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .expect(1)
        .mount(&s.server)
        .await;
    let status = s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap();
    assert_eq!(status.state, RunState::Succeeded);
    assert_eq!(status.raw_status, "success");
    assert_eq!(status.observed_at, s.clock.now());
    assert!(status.finished_at.is_some() && status.created_at.is_some());
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_and_nothing_is_sent() {
    let s = Setup::new().await;
    Mock::given(method("POST"))
        .and(path("/v2/auth"))
        .respond_with(ResponseTemplate::new(401).set_body_string(fixture("auth/unauthorized.json")))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Basic)).trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(&e, Error::Unauthenticated { message } if message.contains("Unauthorized")), "{e:?}");
    assert!(!e.to_string().contains("s3cret-pw"));
}

#[tokio::test]
async fn two_factor_refusal_in_a_200_body_is_a_configuration_error() {
    let s = Setup::new().await;
    Mock::given(method("POST"))
        .and(path("/v2/auth"))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("auth/two_factor.json")))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Basic)).trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(&e, Error::Unauthenticated { message } if message.contains("two-factor")), "{e:?}");
    assert!(!e.is_retryable(cigw_core::CallKind::Idempotent));
}

#[tokio::test]
async fn token_is_reused_until_a_minute_before_expiry_then_refreshed() {
    let s = Setup::new().await;
    let expires = s.clock.now() + chrono::Duration::seconds(600);
    s.auth_until("token-1", expires, Some(1)).await;
    s.auth_until("token-2", expires + chrono::Duration::hours(1), Some(1)).await;
    s.catch_all().await;
    for (token, times) in [("token-1", 2), ("token-2", 1)] {
        Mock::given(method("GET"))
            .and(path(build_path(BUILD)))
            .and(header("authorization", format!("Bearer {token}")))
            .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
            .expect(times)
            .mount(&s.server)
            .await;
    }
    let target = s.target(Some(ProjectType::Pro));
    let run = ProviderRunRef::new(BUILD);
    target.status(&run).await.unwrap();
    s.clock.advance(600 - 61);
    target.status(&run).await.unwrap();
    s.clock.advance(2);
    target.status(&run).await.unwrap();
    let auths = s.server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/v2/auth").count();
    assert_eq!(auths, 2);
}

#[tokio::test]
async fn a_401_mid_flight_reauthenticates_once_and_replays_the_trigger() {
    let s = Setup::new().await;
    s.auth_until("token-1", s.clock.now() + chrono::Duration::hours(1), Some(1)).await;
    s.auth_until("token-2", s.clock.now() + chrono::Duration::hours(1), Some(1)).await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errors": ["Unauthorized"]})))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .and(header("authorization", "Bearer token-2"))
        .and(body_json(json!({"ref": "heads/main"})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    let outcome = s.target(Some(ProjectType::Basic)).trigger(&spec(GitRef::branch("main"))).await.unwrap();
    assert_eq!(outcome, TriggerOutcome::AcceptedWithoutId { sent_at: s.clock.now() });
}

#[tokio::test]
async fn a_second_401_is_unauthenticated() {
    let s = Setup::new().await;
    s.auth("token-1").await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errors": ["Unauthorized"]})))
        .expect(2)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    let auths = s.server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/v2/auth").count();
    assert_eq!(auths, 2, "one exchange, one re-exchange after the 401");
}

#[tokio::test]
async fn fifty_concurrent_calls_exchange_one_token() {
    let s = Setup::new().await;
    let mut body = fixture_json("auth/success.json");
    body["expires_at"] = (s.clock.now() + chrono::Duration::hours(1)).timestamp().into();
    Mock::given(method("POST"))
        .and(path("/v2/auth"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body).set_delay(Duration::from_millis(150)))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .and(header("authorization", "Bearer token"))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .expect(50)
        .mount(&s.server)
        .await;
    let target = s.target(Some(ProjectType::Pro));
    let run = ProviderRunRef::new(BUILD);
    let results = futures::future::join_all((0..50).map(|_| target.status(&run))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[tokio::test]
async fn organization_is_matched_by_name_case_insensitively_or_by_uuid() {
    for wanted in ["CodeShip", &ORG.to_uppercase()] {
        let s = Setup::with(|c| c.organization = wanted.to_string()).await;
        s.auth("token").await;
        s.catch_all().await;
        Mock::given(method("GET"))
            .and(path(build_path(BUILD)))
            .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
            .expect(1)
            .mount(&s.server)
            .await;
        s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap();
    }
    let s = Setup::with(|c| c.organization = "elsewhere".into()).await;
    s.auth("token").await;
    let e = s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { message } if message.contains("elsewhere") && message.contains("codeship (28123f10")),
        "{e:?}"
    );
}

// ---- trigger and correlation ----------------------------------------------------------------

#[tokio::test]
async fn trigger_sends_heads_ref_and_sha_and_gets_no_id() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"ref": "heads/feature/x", "commit_sha": "185ab4c7dc4eda2a027c284f7a669cac3f50a5ed"})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .and(body_json(json!({"ref": "heads/main"})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    let target = s.target(Some(ProjectType::Basic));
    let git_ref = GitRef::branch("refs/heads/feature/x").with_sha("185ab4c7dc4eda2a027c284f7a669cac3f50a5ed");
    let outcome = target.trigger(&spec(git_ref)).await.unwrap();
    assert_eq!(outcome, TriggerOutcome::AcceptedWithoutId { sent_at: s.clock.now() });
    target.trigger(&spec(GitRef::branch("main"))).await.unwrap();
}

#[tokio::test]
async fn parameters_tags_and_empty_branches_are_refused_without_a_request() {
    let s = Setup::new().await;
    s.auth("token").await;
    Mock::given(any()).respond_with(ResponseTemplate::new(202)).expect(0).mount(&s.server).await;
    let target = s.target(Some(ProjectType::Basic));
    let mut with_params = spec(GitRef::branch("main"));
    with_params.parameters.insert("env", ParamValue::String("prod".into()), false);
    assert!(matches!(target.trigger(&with_params).await, Err(Error::InvalidRequest { .. })));
    assert!(matches!(target.trigger(&spec(GitRef::tag("v1"))).await, Err(Error::Unsupported { .. })));
    assert!(matches!(target.trigger(&spec(GitRef::branch("refs/heads/"))).await, Err(Error::InvalidRequest { .. })));
    assert!(target.check_ref(&GitRef::tag("v1")).is_err());
    assert!(target.check_ref(&GitRef::branch("heads/")).is_err());
    assert!(target.check_ref(&GitRef::branch("main").with_sha("abcdef1")).is_ok());
}

#[tokio::test]
async fn find_recent_after_the_empty_202_walks_pages_and_keeps_null_timestamps() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    let now = s.clock.now();
    let link = |page: u32, rel: &str| {
        format!(
            "<https://api.codeship.com/v2/organizations/{ORG}/projects/{PROJECT}/builds?page={page}&per_page=50>; rel=\"{rel}\""
        )
    };
    let page = |builds: Vec<Value>, n: u32| json!({"builds": builds, "page": n, "per_page": 50, "total": 5});
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(builds_path()))
        .and(query_param("page", "1"))
        .and(query_param("per_page", "50"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", format!("{}, {}", link(2, "next"), link(3, "last")))
                .set_body_json(page(
                    vec![
                        build_json(
                            "a-recent",
                            "testing",
                            "main",
                            "aaaaaaa111",
                            Some(now - chrono::Duration::seconds(10)),
                        ),
                        build_json("b-other-branch", "testing", "dev", "aaaaaaa111", Some(now)),
                    ],
                    1,
                )),
        )
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(builds_path()))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", format!("{}, {}", link(3, "next"), link(1, "first")))
                .set_body_json(page(
                    vec![
                        build_json("c-initiated", "initiated", "main", "aaaaaaa111", None),
                        build_json("d-old", "success", "main", "aaaaaaa111", Some(now - chrono::Duration::days(1))),
                    ],
                    2,
                )),
        )
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(builds_path()))
        .and(query_param("page", "3"))
        .respond_with(ResponseTemplate::new(200).insert_header("link", link(4, "next")).set_body_json(page(
            vec![build_json("e-old", "success", "main", "aaaaaaa111", Some(now - chrono::Duration::days(2)))],
            3,
        )))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(builds_path()))
        .and(query_param("page", "4"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&s.server)
        .await;

    let target = s.target(Some(ProjectType::Pro));
    let TriggerOutcome::AcceptedWithoutId { sent_at } =
        target.trigger(&spec(GitRef::branch("main").with_sha("AAAAAAA111"))).await.unwrap()
    else {
        panic!("expected no id")
    };
    let query = RecentQuery { since: sent_at, branch: Some("main".into()), tag: None, sha: Some("AAAAAAA".into()) };
    let candidates = target.find_recent(&query).await.unwrap();
    let ids: Vec<&str> = candidates.iter().map(|c| c.run_ref.id.as_str()).collect();
    assert_eq!(ids, ["c-initiated", "a-recent"], "newest first; null queued_at counts as just created");
    assert_eq!(candidates[0].created_at, now);
    assert!(candidates.iter().all(|c| c.correlation_id.is_none() && c.run_ref.attempt == 1));
    assert_eq!(candidates[1].branch.as_deref(), Some("main"));
    assert_eq!(candidates[1].sha.as_deref(), Some("aaaaaaa111"));
    assert!(target.find_recent(&RecentQuery { tag: Some("v1".into()), ..query }).await.unwrap().is_empty());
}

// ---- status, cancel, rerun ------------------------------------------------------------------

#[tokio::test]
async fn every_status_row_maps_through_the_wire() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    let rows = [
        ("initiated", false, RunState::Queued),
        ("waiting", false, RunState::Queued),
        ("testing", false, RunState::Running),
        ("success", true, RunState::Succeeded),
        ("error", true, RunState::Failed),
        ("failed", true, RunState::Failed),
        ("stopped", true, RunState::Canceled),
        ("infrastructure_failure", true, RunState::Error),
        ("ignored", true, RunState::Skipped),
        ("blocked", true, RunState::Skipped),
        ("mystery", false, RunState::Running),
        ("mystery", true, RunState::Error),
    ];
    let target = s.target(Some(ProjectType::Pro));
    for (i, (status, finished, expected)) in rows.into_iter().enumerate() {
        let uuid = format!("build-{i}");
        let mut b = build_json(&uuid, status, "main", "abc", Some(s.clock.now()));
        if finished {
            b["finished_at"] = s.clock.now().to_rfc3339().into();
        }
        Mock::given(method("GET"))
            .and(path(build_path(&uuid)))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "build": b })))
            .mount(&s.server)
            .await;
        let got = target.status(&ProviderRunRef::new(&uuid)).await.unwrap();
        assert_eq!(got.state, expected, "{status} (finished: {finished})");
        assert_eq!(got.raw_status, status);
        assert_eq!(got.finished_at.is_some(), expected.is_terminal());
    }
}

#[tokio::test]
async fn cancel_posts_stop_and_accepts_a_refusal_of_a_finished_build() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path(format!("{}/stop", build_path("running"))))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/stop", build_path("done"))))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"errors": ["Build has already finished"]})))
        .expect(1)
        .mount(&s.server)
        .await;
    let target = s.target(Some(ProjectType::Basic));
    target.cancel(&ProviderRunRef::new("running")).await.unwrap();
    target.cancel(&ProviderRunRef::new("done")).await.unwrap();
    let e = target.cancel(&ProviderRunRef::new("../../auth")).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
}

#[tokio::test]
async fn basic_rerun_is_the_same_uuid_with_the_next_attempt() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    let finished = fixture_json("builds/get.json");
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_json(&finished))
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/restart", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    let target = s.target(Some(ProjectType::Basic));
    let first = ProviderRunRef::new(BUILD);
    let TriggerOutcome::Started(again) = target.rerun(&first, RerunOptions::default()).await.unwrap() else {
        panic!("a Basic restart keeps the uuid")
    };
    assert_eq!((again.id.as_str(), again.attempt), (BUILD, 2));
    // Until Codeship starts the new run, the build shows the previous result: not the new run's.
    let status = target.status(&again).await.unwrap();
    assert_eq!(status.state, RunState::Queued, "{status:?}");
    assert_eq!(target.status(&first).await.unwrap().state, RunState::Succeeded);
    let e = target.rerun(&first, RerunOptions { failed_only: true }).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }));
}

#[tokio::test]
async fn pro_rerun_discovers_the_type_once_and_answers_without_id() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/organizations/{ORG}/projects/{PROJECT}")))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("projects/get.json")))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/restart", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(202))
        .expect(2)
        .mount(&s.server)
        .await;
    let target = s.target(None);
    for _ in 0..2 {
        let outcome = target.rerun(&ProviderRunRef::new(BUILD), RerunOptions::default()).await.unwrap();
        assert_eq!(outcome, TriggerOutcome::AcceptedWithoutId { sent_at: s.clock.now() });
    }
}

#[tokio::test]
async fn restarting_an_unfinished_build_is_a_conflict() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    let running = json!({"build": build_json(BUILD, "testing", "main", "abc", Some(s.clock.now()))});
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_json(running))
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/restart", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&s.server)
        .await;
    let e = s
        .target(Some(ProjectType::Basic))
        .rerun(&ProviderRunRef::new(BUILD), RerunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Conflict { message } if message.contains("testing")), "{e:?}");
}

// ---- errors and limits ----------------------------------------------------------------------

#[tokio::test]
async fn forbidden_without_body_is_a_rate_limit_until_the_next_minute() {
    let s = Setup::with(|c| {
        c.transport.retry.max_retries = 0;
    })
    .await;
    s.auth("token").await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap_err();
    // The clock stands at :30 past the minute.
    assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30)), "{e:?}");
}

#[tokio::test]
async fn a_rate_limited_read_is_retried() {
    let s = Setup::new().await;
    s.auth("token").await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(403))
        .up_to_n_times(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .mount(&s.server)
        .await;
    let status = s.target(Some(ProjectType::Pro)).status(&ProviderRunRef::new(BUILD)).await.unwrap();
    assert_eq!(status.state, RunState::Succeeded);
}

#[tokio::test]
async fn forbidden_with_errors_is_permission_denied_and_not_retried() {
    let s = Setup::new().await;
    s.auth("token").await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"errors": ["Forbidden: missing scope build.write"]})),
        )
        .expect(1)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Pro)).trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(&e, Error::PermissionDenied { message } if message.contains("build.write")), "{e:?}");
}

#[tokio::test]
async fn every_error_shape_maps_once() {
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(
            ResponseTemplate::new(400).set_body_string(fixture("errors.json").replace("%s", "ref is required")),
        )
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path("missing")))
        .respond_with(ResponseTemplate::new(404).set_body_string(fixture("not_found.json").replace("%s", "build")))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path("flaky")))
        .respond_with(ResponseTemplate::new(503))
        .expect(4)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path("garbled")))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/restart", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .mount(&s.server)
        .await;
    Mock::given(method("GET"))
        .and(path(build_path("throttled")))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .expect(4)
        .mount(&s.server)
        .await;

    let target = s.target(Some(ProjectType::Basic));
    let e = target.trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidRequest { message } if message == "ref is required"), "{e:?}");
    let e = target.status(&ProviderRunRef::new("missing")).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { message } if message == "build not found"), "{e:?}");
    let e = target.status(&ProviderRunRef::new("flaky")).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "5xx on a read is retried, then unavailable: {e:?}");
    let e = target.status(&ProviderRunRef::new("garbled")).await.unwrap_err();
    assert!(matches!(e, Error::Other { .. }), "{e:?}");
    let e = target.rerun(&ProviderRunRef::new(BUILD), RerunOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "5xx on a restart may have started a build: {e:?}");
    let e = target.status(&ProviderRunRef::new("throttled")).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { retry_after: Some(d) } if d.is_zero()), "{e:?}");
}

#[tokio::test]
async fn transport_errors_are_not_sent_or_maybe_sent() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = common::fast_config(&format!("http://127.0.0.1:{port}/v2"), "e", "p", ORG);
    let account = CodeshipAccount::new("down", cfg).unwrap();
    let e = Arc::new(
        account
            .target_from("web", TargetConfig { project_uuid: PROJECT.into(), project_type: Some(ProjectType::Basic) }),
    )
    .trigger(&spec(GitRef::branch("main")))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NotSent { .. }), "{e:?}");

    let s = Setup::with(|c| c.transport.timeout = Duration::from_millis(200)).await;
    s.auth("token").await;
    Mock::given(method("POST"))
        .and(path(builds_path()))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_millis(600)))
        .expect(1)
        .mount(&s.server)
        .await;
    let e = s.target(Some(ProjectType::Basic)).trigger(&spec(GitRef::branch("main"))).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "a timed-out trigger is not retried: {e:?}");
}

#[tokio::test]
async fn one_limiter_is_shared_by_every_target_of_the_account() {
    let s = Setup::with(|c| c.transport.rate_limit = Some(cigw_core::RateLimit::parse("20/s").unwrap())).await;
    s.auth("token").await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds/get.json")))
        .mount(&s.server)
        .await;
    let a = Arc::new(
        s.account.target_from("a", TargetConfig { project_uuid: PROJECT.into(), project_type: Some(ProjectType::Pro) }),
    );
    let b = Arc::new(
        s.account.target_from("b", TargetConfig { project_uuid: PROJECT.into(), project_type: Some(ProjectType::Pro) }),
    );
    let run = ProviderRunRef::new(BUILD);
    let started = std::time::Instant::now();
    // One auth and six reads, spaced 50 ms apart by the one limiter.
    let (ra, rb) = futures::join!(
        async {
            for _ in 0..3 {
                a.status(&run).await.unwrap();
            }
        },
        async {
            for _ in 0..3 {
                b.status(&run).await.unwrap();
            }
        }
    );
    let _ = (ra, rb);
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
}

// ---- configuration and factory --------------------------------------------------------------

#[tokio::test]
async fn factory_builds_accounts_and_targets_and_keeps_the_base_path() {
    let server = MockServer::start().await;
    let mut body = fixture_json("auth/success.json");
    body["expires_at"] = (Utc::now() + chrono::Duration::hours(1)).timestamp().into();
    Mock::given(method("POST"))
        .and(path("/proxy/codeship/v2/auth"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/proxy/codeship/v2/organizations/{ORG}/projects")))
        .and(query_param("per_page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("projects/list.json")))
        .expect(1)
        .mount(&server)
        .await;
    let mut problems = cigw_core::config::Problems::default();
    let table = json!({
        "base_url": format!("{}/proxy/codeship/v2", server.uri()),
        "email": "ci@example.com", "password": "hunter2-password", "organization": "codeship",
    });
    let account =
        cigw_codeship::CodeshipFactory.account("main", "providers.codeship.main", &table, &mut problems).unwrap();
    assert!(!problems.has_errors(), "{problems:?}");
    assert!(account.describe().contains("sunset"));
    let shown = format!("{account:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("ci@example.com"), "{shown}");
    account.check_online().await.unwrap();

    let spec = |params: Vec<cigw_core::ParameterSpec>| cigw_core::TargetSpec {
        name: "web".into(),
        provider: cigw_core::ProviderKind::Codeship,
        account: "main".into(),
        default_branch: "main".into(),
        parameters: params,
        max_duration: None,
        concurrency: Default::default(),
        debounce: None,
        description: None,
    };
    let fields = json!({"project_uuid": PROJECT, "project_type": "basic"});
    let target = account.target(&spec(vec![]), "targets.web", fields.as_object().unwrap(), &mut problems).unwrap();
    assert_eq!(target.locator(), PROJECT);
    let caps = target.capabilities();
    assert!(caps.cancel && caps.rerun && caps.pin_sha);
    assert!(
        !caps.rerun_failed_only
            && !caps.approve
            && !caps.tag
            && !caps.parameters
            && !caps.trigger_returns_id
            && !caps.callbacks
    );

    let declared = cigw_core::ParameterSpec {
        name: "env".into(),
        kind: cigw_core::ParamType::String,
        default: None,
        allowed: None,
        required: false,
        secret: false,
        description: None,
    };
    let mut problems = cigw_core::config::Problems::default();
    assert!(account.target(&spec(vec![declared]), "targets.web", fields.as_object().unwrap(), &mut problems).is_none());
    let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("targets.web.parameters: a Codeship target cannot declare parameters"), "{shown:?}");
}

// ---- following a build after its target is removed -----------------------------------------

#[tokio::test]
async fn every_ref_records_its_project_and_can_be_followed_without_the_target() {
    use cigw_core::provider::ProviderAccount;
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    let now = s.clock.now();
    Mock::given(method("GET"))
        .and(path(builds_path()))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "builds": [build_json(BUILD, "testing", "main", "aaaaaaa111", Some(now))], "page": 1, "per_page": 50, "total": 1
        })))
        .mount(&s.server)
        .await;
    let mut testing = json!({"build": build_json(BUILD, "testing", "main", "aaaaaaa111", Some(now))});
    testing["build"]["allocated_at"] = now.to_rfc3339().into();
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .and(header("authorization", "Bearer token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&testing))
        .expect(1)
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/stop", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;

    let query = RecentQuery { since: now, branch: Some("main".into()), tag: None, sha: None };
    let candidates = s.target(Some(ProjectType::Basic)).find_recent(&query).await.unwrap();
    assert_eq!(candidates.len(), 1);
    let recorded = &candidates[0].run_ref;
    assert_eq!(recorded.extra, json!({"project_uuid": PROJECT, "project_type": "basic"}));
    // The ref goes through the store as JSON: the project survives the round trip.
    let stored: ProviderRunRef = serde_json::from_value(serde_json::to_value(recorded).unwrap()).unwrap();
    assert_eq!(&stored, recorded);

    let follower = s.account.follow_target("removed-web", &stored).expect("the ref names its project");
    assert_eq!(follower.capabilities(), cigw_core::Capabilities::FOLLOW_ONLY);
    let status = follower.status(&stored).await.unwrap();
    assert_eq!(status.state, RunState::Running, "{status:?}");
    follower.cancel(&stored).await.unwrap();
    for e in [
        follower.trigger(&spec(GitRef::branch("main"))).await.unwrap_err(),
        follower.rerun(&stored, RerunOptions::default()).await.unwrap_err(),
        follower.find_recent(&query).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }

    // A ref made before the project was recorded cannot be followed: Codeship needs the project.
    assert!(s.account.follow_target("removed-web", &ProviderRunRef::new(BUILD)).is_none());
    let mut bad = ProviderRunRef::new(BUILD);
    bad.extra = json!({"project_uuid": "../../auth"});
    assert!(s.account.follow_target("removed-web", &bad).is_none());
}

#[tokio::test]
async fn a_basic_restart_records_the_project_and_its_follower_waits_for_the_new_run() {
    use cigw_core::provider::ProviderAccount;
    let s = Setup::new().await;
    s.auth("token").await;
    s.catch_all().await;
    Mock::given(method("GET"))
        .and(path(build_path(BUILD)))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture_json("builds/get.json")))
        .mount(&s.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/restart", build_path(BUILD))))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&s.server)
        .await;
    let target = s.target(Some(ProjectType::Basic));
    let TriggerOutcome::Started(again) =
        target.rerun(&ProviderRunRef::new(BUILD), RerunOptions::default()).await.unwrap()
    else {
        panic!("a Basic restart keeps the uuid")
    };
    assert_eq!(again.extra["project_uuid"], PROJECT);
    assert_eq!(again.extra["project_type"], "basic");
    assert!(again.extra.get("restarted_at").is_some(), "{:?}", again.extra);
    let follower = s.account.follow_target("removed-web", &again).expect("the ref names its project");
    // Like the target, the follower does not read the previous run's result as the new one's.
    assert_eq!(follower.status(&again).await.unwrap().state, RunState::Queued);
}
