//! The adapter against a wiremock server answering with real Codefresh JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use cigw_codefresh::config::{AccountConfig, PipelineLocator, RunOptions, TargetConfig};
use cigw_codefresh::{CodefreshAccount, CodefreshTarget};
use cigw_core::provider::ProviderAccount;
use cigw_core::retry::RetryPolicy;
use cigw_core::{
    CiTarget, Decision, Error, GitRef, ParamValue, Parameters, ProviderRunRef, RecentQuery, RerunOptions, RunState,
    TriggerOutcome, TriggerSpec,
};
use secrecy::SecretString;
use serde_json::json;
use url::Url;
use wiremock::matchers::{any, body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "65f0aaaabbbbccccddddeeee.s3cr3t-api-key";
const BUILD: &str = "65f0c0ffee0123456789abcd";
const PROGRESS: &str = "65f0c0ffee0123456789abce";
const RUN: &str = "0192a3b4-run-0001";

fn build_json(status: &str) -> serde_json::Value {
    let mut b: serde_json::Value = serde_json::from_str(include_str!("resources/build_running.json")).unwrap();
    b["status"] = status.into();
    b
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        max_retries: 3,
        deadline: Duration::from_secs(5),
    }
}

fn settings(base: &str) -> AccountConfig {
    let mut s = AccountConfig::new(Url::parse(base).unwrap(), SecretString::from(KEY));
    s.transport.retry = quick_retry();
    s.transport.timeout = Duration::from_secs(2);
    s
}

fn account(server: &MockServer) -> CodefreshAccount {
    CodefreshAccount::new("cf", settings(&format!("{}/api", server.uri()))).unwrap()
}

fn pipeline_target(server: &MockServer, locator: PipelineLocator) -> CodefreshTarget {
    account(server).target_from(
        "api",
        TargetConfig {
            pipeline: locator,
            trigger: Some("acme/api".into()),
            variables: BTreeMap::from([("LOG_LEVEL".to_string(), "debug".to_string())]),
            options: RunOptions { no_cache: true, ..RunOptions::default() },
            contexts: vec![],
        },
    )
}

fn target(server: &MockServer) -> CodefreshTarget {
    pipeline_target(server, PipelineLocator::Name("demo/api-build".into()))
}

fn spec() -> TriggerSpec {
    let mut parameters = Parameters::new();
    parameters.insert("ENV", ParamValue::String("staging".into()), false);
    parameters.insert("COUNT", ParamValue::Int(3), false);
    parameters.insert("DEPLOY_TOKEN", ParamValue::String("tok-123".into()), true);
    TriggerSpec {
        run_id: RUN.into(),
        git_ref: GitRef::branch("main").with_sha("52b992e783d2f84dd0123c70ac8623b4f0f938d1"),
        parameters,
        requested_by: "token:qa".into(),
    }
}

/// Answers every request no other mock matched with a 500 naming it, so a wrong path fails
/// loudly instead of as a confusing mismatch.
async fn catch_all(server: &MockServer) {
    Mock::given(any())
        .respond_with(|req: &Request| {
            ResponseTemplate::new(500).set_body_string(format!("unexpected request {} {}", req.method, req.url))
        })
        .with_priority(u8::MAX)
        .mount(server)
        .await;
}

fn run_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("Location", format!("/api/builds/{BUILD}")).set_body_json(json!(BUILD))
}

#[tokio::test]
async fn trigger_posts_the_run_with_one_encoded_segment_and_the_run_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/pipelines/run/demo%2Fapi-build"))
        .and(query_param("reqId", RUN))
        .and(header("authorization", KEY))
        .and(header("content-type", "application/json"))
        .respond_with(run_answer())
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;

    let outcome = target(&server).trigger(&spec()).await.unwrap();
    let TriggerOutcome::Started(run) = outcome else { panic!("{outcome:?}") };
    assert_eq!(run.id, BUILD);
    assert_eq!(run.attempt, 1);
    let base = server.uri();
    assert_eq!(run.url.as_deref(), Some(format!("{base}/build/{BUILD}").as_str()));

    let requests = server.received_requests().await.unwrap();
    let req = &requests[0];
    assert_eq!(req.url.path(), "/api/pipelines/run/demo%2Fapi-build", "the name is one path segment");
    let ua = req.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(ua.starts_with("cigw/"), "{ua}");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "branch": "main",
            "sha": "52b992e783d2f84dd0123c70ac8623b4f0f938d1",
            "trigger": "acme/api",
            "variables": [
                {"key": "LOG_LEVEL", "value": "debug"},
                {"key": "COUNT", "value": "3"},
                {"key": "DEPLOY_TOKEN", "value": "tok-123", "encrypted": true},
                {"key": "ENV", "value": "staging"}
            ],
            "annotations": {"cigw_run_id": RUN, "cigw_requested_by": "token:qa"},
            "options": {"noCache": true}
        })
    );
}

#[tokio::test]
async fn authorization_is_the_raw_key_without_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "_id": "u1", "userName": "qa", "activeAccountName": "acme"
        })))
        .mount(&server)
        .await;
    account(&server).check_online().await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers.get("authorization").unwrap().to_str().unwrap(), KEY);
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/codefresh/api/pipelines/run/demo%2Fapi-build"))
        .respond_with(run_answer())
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    let account = CodefreshAccount::new("cf", settings(&format!("{}/codefresh/api/", server.uri()))).unwrap();
    let t = account.target_from(
        "api",
        TargetConfig {
            pipeline: PipelineLocator::Name("demo/api-build".into()),
            trigger: None,
            variables: BTreeMap::new(),
            options: RunOptions::default(),
            contexts: vec![],
        },
    );
    let TriggerOutcome::Started(run) = t.trigger(&spec()).await.unwrap() else { panic!() };
    assert_eq!(run.url.unwrap(), format!("{}/codefresh/build/{BUILD}", server.uri()));
}

#[tokio::test]
async fn a_pipeline_id_is_sent_as_is() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/pipelines/run/65e0aaaabbbbccccddddeeee"))
        .and(query_param("reqId", RUN))
        .respond_with(run_answer())
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    let t = pipeline_target(&server, PipelineLocator::Id("65e0aaaabbbbccccddddeeee".into()));
    assert!(matches!(t.trigger(&spec()).await.unwrap(), TriggerOutcome::Started(_)));
}

#[tokio::test]
async fn rate_limited_trigger_is_retried_with_the_same_req_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/pipelines/run/demo%2Fapi-build"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(json!({"message": "Too many requests"}))
                .insert_header("Retry-After", "0"),
        )
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/pipelines/run/demo%2Fapi-build"))
        .respond_with(run_answer())
        .expect(1)
        .mount(&server)
        .await;
    let TriggerOutcome::Started(run) = target(&server).trigger(&spec()).await.unwrap() else { panic!() };
    assert_eq!(run.id, BUILD);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        let req_ids: Vec<String> =
            r.url.query_pairs().filter(|(k, _)| k == "reqId").map(|(_, v)| v.into_owned()).collect();
        assert_eq!(req_ids, [RUN], "every attempt carries the run id as reqId");
    }
}

#[tokio::test]
async fn a_5xx_answer_to_a_trigger_is_ambiguous_and_not_retried() {
    for status in [500, 502, 503, 504] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({"message": "upstream"})))
            .expect(1)
            .mount(&server)
            .await;
        let e = target(&server).trigger(&spec()).await.unwrap_err();
        assert!(matches!(e, Error::MaybeSent { .. }), "{status}: {e:?}");
    }
}

#[tokio::test]
async fn a_timed_out_trigger_is_ambiguous_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(run_answer().set_delay(Duration::from_millis(600)))
        .expect(1)
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}/api", server.uri()));
    s.transport.timeout = Duration::from_millis(150);
    let t = CodefreshAccount::new("cf", s).unwrap().target_from(
        "api",
        TargetConfig {
            pipeline: PipelineLocator::Name("demo/api-build".into()),
            trigger: None,
            variables: BTreeMap::new(),
            options: RunOptions::default(),
            contexts: vec![],
        },
    );
    let e = t.trigger(&spec()).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "{e:?}");
}

#[tokio::test]
async fn a_refused_connection_is_not_sent_and_retried() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut s = settings(&format!("http://127.0.0.1:{port}/api"));
    s.transport.retry.max_retries = 2;
    let t = CodefreshAccount::new("cf", s).unwrap().target_from(
        "api",
        TargetConfig {
            pipeline: PipelineLocator::Name("demo/api-build".into()),
            trigger: None,
            variables: BTreeMap::new(),
            options: RunOptions::default(),
            contexts: vec![],
        },
    );
    let e = t.trigger(&spec()).await.unwrap_err();
    assert!(matches!(e, Error::NotSent { .. }), "{e:?}");
}

#[tokio::test]
async fn idempotent_calls_retry_gateway_errors() {
    for status in [502, 503, 504] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/api/builds/{BUILD}")))
            .respond_with(ResponseTemplate::new(status).set_body_string("Bad gateway"))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/api/builds/{BUILD}")))
            .and(query_param("noAccount", "false"))
            .respond_with(ResponseTemplate::new(200).set_body_json(build_json("running")))
            .expect(1)
            .mount(&server)
            .await;
        let s = target(&server).status(&ProviderRunRef::new(BUILD)).await.unwrap();
        assert_eq!(s.state, RunState::Running, "{status}");
    }
}

#[tokio::test]
async fn idempotent_calls_do_not_retry_a_500() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_string(include_str!("resources/error_500.json")))
        .expect(1)
        .mount(&server)
        .await;
    let e = target(&server).status(&ProviderRunRef::new(BUILD)).await.unwrap_err();
    assert!(matches!(e, Error::Other { .. }), "{e:?}");
    assert!(e.to_string().contains("INTERNAL_SERVER_ERROR"), "{e}");
}

#[tokio::test]
async fn every_status_row_through_the_api() {
    let rows = [
        ("pending", RunState::Queued),
        ("delayed", RunState::Queued),
        ("elected", RunState::Running),
        ("running", RunState::Running),
        ("pending-approval", RunState::Blocked),
        ("terminating", RunState::Canceling),
        ("success", RunState::Succeeded),
        ("error", RunState::Failed),
        ("terminated", RunState::Canceled),
        ("some-future-status", RunState::Running),
    ];
    let server = MockServer::start().await;
    for (i, (status, _)) in rows.iter().enumerate() {
        let id = format!("65f0c0ffee0123456789ab{i:02}");
        let mut b = build_json(status);
        b["id"] = id.clone().into();
        if *status == "success" || *status == "error" || *status == "terminated" {
            b["finished"] = "2026-03-01T10:03:00.000Z".into();
        }
        Mock::given(method("GET"))
            .and(path(format!("/api/builds/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(b))
            .mount(&server)
            .await;
    }
    let t = target(&server);
    for (i, (status, state)) in rows.iter().enumerate() {
        let s = t.status(&ProviderRunRef::new(format!("65f0c0ffee0123456789ab{i:02}"))).await.unwrap();
        assert_eq!((s.raw_status.as_str(), s.state), (*status, *state));
        assert_eq!(s.created_at, Some(Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()));
        assert!(s.url.as_deref().unwrap().ends_with(&format!("/build/65f0c0ffee0123456789ab{i:02}")));
    }
}

#[tokio::test]
async fn error_envelopes_map_to_the_taxonomy() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(u16, String, Check)> = vec![
        (401, include_str!("resources/error_401.json").to_string(), |e| matches!(e, Error::Unauthenticated { .. })),
        (403, r#"{"message":"You do not have permissions to perform this action"}"#.into(), |e| {
            matches!(e, Error::PermissionDenied { .. })
        }),
        (
            404,
            r#"{"status":404,"code":"1404","name":"PIPELINE_NOT_FOUND_ERROR","message":"Could not find pipeline demo/api-build","context":{}}"#.into(),
            |e| matches!(e, Error::NotFound { message } if message.contains("PIPELINE_NOT_FOUND_ERROR")),
        ),
        (400, r#"{"message":"Invalid branch"}"#.into(), |e| matches!(e, Error::InvalidRequest { .. })),
    ];
    for (status, body, check) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .expect(1)
            .mount(&server)
            .await;
        let e = target(&server).trigger(&spec()).await.unwrap_err();
        assert!(check(&e), "{status}: {e:?}");
    }
}

#[tokio::test]
async fn legacy_service_targets_post_the_old_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/builds/65e0aaaabbbbccccddddeeee"))
        .and(body_partial_json(json!({"branch": "main", "variables": {"ENV": "staging", "COUNT": "3"},
            "buildFlags": {"nocache": true}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(BUILD)))
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    let t = account(&server).target_from(
        "legacy",
        TargetConfig {
            pipeline: PipelineLocator::Service("65e0aaaabbbbccccddddeeee".into()),
            trigger: None,
            variables: BTreeMap::new(),
            options: RunOptions { no_cache: true, ..RunOptions::default() },
            contexts: vec![],
        },
    );
    let mut s = spec();
    let mut p = Parameters::new();
    p.insert("ENV", ParamValue::String("staging".into()), false);
    p.insert("COUNT", ParamValue::Int(3), false);
    s.parameters = p;
    let TriggerOutcome::Started(run) = t.trigger(&s).await.unwrap() else { panic!() };
    assert_eq!(run.id, BUILD);
}

#[tokio::test]
async fn tags_are_refused_before_any_call() {
    let server = MockServer::start().await;
    catch_all(&server).await;
    let mut s = spec();
    s.git_ref = GitRef::tag("v1.0.0");
    let e = target(&server).trigger(&s).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { operation: "tag" }), "{e:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn cancel_terminates_the_progress_not_the_build() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/builds/{BUILD}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(build_json("running")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/api/progress/{PROGRESS}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": PROGRESS, "status": "terminating"})))
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    target(&server).cancel(&ProviderRunRef::new(BUILD)).await.unwrap();
}

#[tokio::test]
async fn cancel_of_a_finished_build_sends_no_terminate() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/builds/{BUILD}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(build_json("success")))
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    target(&server).cancel(&ProviderRunRef::new(BUILD)).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn rerun_restarts_and_answers_the_new_build() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/builds/rebuild/{BUILD}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!("65f0c0ffee0123456789ffff")))
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    let t = target(&server);
    let TriggerOutcome::Started(run) = t.rerun(&ProviderRunRef::new(BUILD), RerunOptions::default()).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((run.id.as_str(), run.attempt), ("65f0c0ffee0123456789ffff", 1));
    let e = t.rerun(&ProviderRunRef::new(BUILD), RerunOptions { failed_only: true }).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { operation: "rerun_failed_only" }), "{e:?}");
}

#[tokio::test]
async fn a_rerun_that_may_have_started_is_not_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/builds/rebuild/{BUILD}")))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let e = target(&server).rerun(&ProviderRunRef::new(BUILD), RerunOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::MaybeSent { .. }), "{e:?}");
}

#[tokio::test]
async fn approve_and_deny_use_the_pending_approval_endpoints() {
    let server = MockServer::start().await;
    for verb in ["approve", "deny"] {
        Mock::given(method("GET"))
            .and(path(format!("/api/workflow/{BUILD}/pending-approval/{verb}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
    }
    catch_all(&server).await;
    let t = target(&server);
    t.approve(&ProviderRunRef::new(BUILD), Decision::Approve).await.unwrap();
    t.approve(&ProviderRunRef::new(BUILD), Decision::Deny).await.unwrap();
}

#[tokio::test]
async fn find_recent_resolves_the_pipeline_pages_and_reads_annotations() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/pipelines/demo%2Fapi-build"))
        .respond_with(ResponseTemplate::new(200).set_body_string(include_str!("resources/pipeline.json")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/workflow"))
        .and(query_param("page", "1"))
        .and(query_param("pipeline", "65e0aaaabbbbccccddddeeee"))
        .and(query_param("branchName", "main"))
        .and(query_param("startDate", "2026-02-27"))
        .and(query_param("paginationReset", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_string(include_str!("resources/workflow_list_page1.json")))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/workflow"))
        .and(query_param("page", "2"))
        .and(header("X-Pagination-Session-Id", "sess-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(include_str!("resources/workflow_list_page2.json")))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/annotations"))
        .and(query_param("entityType", "build"))
        .and(query_param("entityId", "65f0c0ffee0123456789ab02"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{
            "_id": "a1", "accountId": "acc", "entityId": "65f0c0ffee0123456789ab02", "entityType": "build",
            "key": "cigw_run_id", "value": RUN
        }])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/annotations"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Annotations not found"})))
        .mount(&server)
        .await;
    catch_all(&server).await;

    let t = target(&server);
    let since = Utc.with_ymd_and_hms(2026, 2, 27, 8, 0, 0).unwrap();
    let q = RecentQuery { since, branch: Some("main".into()), tag: None, sha: None };
    let found = t.find_recent(&q).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.run_ref.id.as_str()).collect();
    assert_eq!(ids, ["65f0c0ffee0123456789ab02", "65f0c0ffee0123456789ab01", "65f0c0ffee0123456789ab00"]);
    assert_eq!(found[0].correlation_id.as_deref(), Some(RUN));
    assert_eq!(found[1].correlation_id, None);
    assert_eq!(found[0].sha.as_deref(), Some("52b992e783d2f84dd0123c70ac8623b4f0f938d1"));

    // A short sha filters by prefix; the pipeline id is resolved only once.
    let q = RecentQuery {
        since: Utc.with_ymd_and_hms(2026, 2, 27, 8, 0, 0).unwrap(),
        branch: Some("main".into()),
        tag: None,
        sha: Some("aaaa92e".into()),
    };
    let found = t.find_recent(&q).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.run_ref.id.as_str()).collect();
    assert_eq!(ids, ["65f0c0ffee0123456789ab01"]);
}

#[tokio::test]
async fn debug_output_never_shows_the_key() {
    let server = MockServer::start().await;
    let a = account(&server);
    let t = target(&server);
    let arc: Arc<dyn CiTarget> =
        Arc::new(pipeline_target(&server, PipelineLocator::Id("65e0aaaabbbbccccddddeeee".into())));
    for shown in [format!("{a:?}"), format!("{t:?}"), format!("{arc:?}"), format!("{:?}", a.client())] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}

#[tokio::test]
async fn a_follow_only_target_reads_and_terminates_a_build_from_its_id_alone() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/builds/{BUILD}")))
        .and(header("Authorization", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(build_json("running")))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/api/progress/{PROGRESS}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": PROGRESS, "status": "terminating"})))
        .expect(1)
        .mount(&server)
        .await;
    catch_all(&server).await;
    let run = ProviderRunRef::new(BUILD);
    let follower = account(&server).follow_target("removed-api", &run).expect("Codefresh builds can be followed");
    let caps = follower.capabilities();
    assert!(caps.cancel && !caps.rerun && !caps.approve, "{caps:?}");

    let status = follower.status(&run).await.unwrap();
    assert_eq!(status.state, RunState::Running);
    assert_eq!(status.url.as_deref(), Some(format!("{}/build/{BUILD}", server.uri()).as_str()), "{status:?}");
    follower.cancel(&run).await.unwrap();

    let e = follower.trigger(&spec()).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { operation: "trigger" }), "{e:?}");
    let e = follower.rerun(&run, RerunOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let e = follower.approve(&run, Decision::Approve).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let query = RecentQuery { since: Utc::now(), branch: None, tag: None, sha: None };
    let e = follower.find_recent(&query).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}
