//! Every request the adapter makes (recorded by the simulator) is an operation of the official
//! Codefresh spec, with only declared query parameters and every required one.
//!
//! Documented exceptions: `reqId` on `pipelines-run` (sent by the official SDK since 1.13, newer
//! than the spec; providers/codefresh.md §1), the spec's trailing slash on the legacy
//! `/builds/{serviceId}/`, and `GET /workflow/{id}/pending-approval/*` whose path parameter the
//! spec names `buildId`.

use std::collections::BTreeMap;
use std::time::Duration;

use cigw_codefresh::CodefreshAccount;
use cigw_codefresh::config::{AccountConfig, PipelineLocator, RunOptions, TargetConfig};
use cigw_core::provider::ProviderAccount;
use cigw_core::retry::RetryPolicy;
use cigw_core::{
    CiTarget, Decision, GitRef, ParamValue, Parameters, RecentQuery, RerunOptions, TriggerOutcome, TriggerSpec,
};
use cigw_sim::Harness;
use cigw_sim::codefresh::{self, CodefreshSimConfig, DEFAULT_API_KEY, DEFAULT_PIPELINE};
use secrecy::SecretString;
use serde_json::Value;
use url::Url;

const SPEC: &str = include_str!("resources/openapi_paths.json");

fn settings(url: &str) -> AccountConfig {
    let mut s = AccountConfig::new(Url::parse(&format!("{url}/api")).unwrap(), SecretString::from(DEFAULT_API_KEY));
    s.transport.retry = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retries: 1,
        deadline: Duration::from_secs(2),
    };
    s
}

fn target(account: &CodefreshAccount, pipeline: PipelineLocator) -> cigw_codefresh::CodefreshTarget {
    account.target_from(
        "contract",
        TargetConfig {
            pipeline,
            trigger: Some("acme/api".into()),
            variables: BTreeMap::new(),
            options: RunOptions::default(),
            contexts: vec![],
        },
    )
}

/// The spec operation matching a raw request path (below `/api`) and method.
fn operation<'a>(spec: &'a Value, method: &str, raw_path: &str) -> Option<(&'a str, &'a Value)> {
    let segs: Vec<&str> = raw_path.trim_matches('/').split('/').collect();
    spec["paths"].as_object()?.iter().find_map(|(template, ops)| {
        let t: Vec<&str> = template.trim_matches('/').split('/').collect();
        let fits =
            t.len() == segs.len() && t.iter().zip(&segs).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        let op = ops.get(method.to_ascii_lowercase())?;
        fits.then_some((template.as_str(), op))
    })
}

#[tokio::test]
async fn every_adapter_request_is_a_spec_operation_with_declared_parameters() {
    let spec: Value = serde_json::from_str(SPEC).unwrap();
    let harness = Harness::new();
    let (sim, server) = codefresh::start(&harness, CodefreshSimConfig::default()).await;
    let account = CodefreshAccount::new("cf", settings(&server.url())).unwrap();
    let named = target(&account, PipelineLocator::Name(DEFAULT_PIPELINE.into()));

    let mut params = Parameters::new();
    params.insert("ENV", ParamValue::String("qa".into()), false);
    params.insert("TOKEN", ParamValue::String("t0k".into()), true);
    let spec_for = |branch: &str| TriggerSpec {
        run_id: format!("run-{branch}"),
        git_ref: GitRef::branch(branch).with_sha("52b992e783d2f84dd0123c70ac8623b4f0f938d1"),
        parameters: params.clone(),
        requested_by: "contract".into(),
    };
    account.check_online().await.unwrap();
    let TriggerOutcome::Started(run) = named.trigger(&spec_for("main")).await.unwrap() else { panic!() };
    named.status(&run).await.unwrap();
    harness.clock().advance(Duration::from_secs(5));
    named.cancel(&run).await.unwrap();
    harness.clock().advance(Duration::from_secs(10));
    named.rerun(&run, RerunOptions::default()).await.unwrap();
    let TriggerOutcome::Started(gated) = named.trigger(&spec_for("needs-approval")).await.unwrap() else { panic!() };
    harness.clock().advance(Duration::from_secs(5));
    named.approve(&gated, Decision::Approve).await.unwrap();
    let since = harness.clock().now() - chrono::Duration::hours(1);
    let found =
        named.find_recent(&RecentQuery { since, branch: Some("main".into()), tag: None, sha: None }).await.unwrap();
    assert!(found.iter().any(|c| c.run_ref.id == run.id && c.correlation_id.as_deref() == Some("run-main")));
    let by_id = target(&account, PipelineLocator::Id(sim.pipeline_id(DEFAULT_PIPELINE).unwrap()));
    by_id.trigger(&spec_for("by-id")).await.unwrap();
    let legacy = account.target_from(
        "legacy",
        TargetConfig {
            pipeline: PipelineLocator::Service(sim.pipeline_id(DEFAULT_PIPELINE).unwrap()),
            trigger: None,
            variables: BTreeMap::new(),
            options: RunOptions { no_cache: true, ..RunOptions::default() },
            contexts: vec![],
        },
    );
    let mut legacy_spec = spec_for("legacy");
    legacy_spec.parameters = Parameters::new();
    legacy.trigger(&legacy_spec).await.unwrap();

    let requests = harness.recorder().requests();
    assert!(requests.len() >= 12, "{requests:#?}");
    let mut seen = std::collections::BTreeSet::new();
    for r in &requests {
        let below = r.path.strip_prefix("/api").unwrap_or_else(|| panic!("{} is outside the base path", r.path));
        let (template, op) = operation(&spec, r.method.as_str(), below)
            .unwrap_or_else(|| panic!("{} {} is not an operation of the official spec", r.method, r.path));
        let op_id = op["operationId"].as_str().unwrap();
        seen.insert(op_id.to_string());
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let sent: Vec<String> = url::form_urlencoded::parse(r.query.as_deref().unwrap_or("").as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect();
        for name in &sent {
            let exception = op_id == "pipelines-run" && name == "reqId";
            assert!(
                declared.contains(&name.as_str()) || exception,
                "{op_id} ({template}): query `{name}` is not in the spec"
            );
        }
        for p in op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "query" && p["required"] == true) {
            assert!(sent.iter().any(|s| s == p["name"].as_str().unwrap()), "{op_id}: required `{}` missing", p["name"]);
        }
        assert_eq!(r.header("authorization"), Some("<redacted>"), "every call is authenticated");
        if op_id == "pipelines-run" {
            let q: BTreeMap<String, String> =
                url::form_urlencoded::parse(r.query.as_deref().unwrap().as_bytes()).into_owned().collect();
            assert!(q["reqId"].starts_with("run-"), "reqId carries the run id: {q:?}");
            assert!(!below.trim_start_matches("/pipelines/run/").contains('/'), "one path segment: {below}");
        }
    }
    let expected = [
        "users-get",
        "pipelines-run",
        "workflows-get-build",
        "progress-terminate",
        "workflows-restart",
        "workflow-approve",
        "pipelines-get",
        "workflows-list",
        "annotations-list",
        "workflows-build-by-service",
    ];
    for op in expected {
        assert!(seen.contains(op), "{op} was not exercised: {seen:?}");
    }
}
