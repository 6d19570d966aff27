//! One trigger fanned out to all three providers through the real binary, followed to the end.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Gateway, is_terminal};

#[tokio::test]
async fn one_request_reaches_all_three_providers_and_ends() {
    let gw = Gateway::start(20.0, Duration::from_secs(10)).await;
    let (status, body) = gw
        .post_json(
            "/v1/triggers",
            json!({"targets": ["api-build", "web-e2e", "legacy-basic", "legacy-pro", "api-lint"], "ref": {"branch": "main"},
                   "overrides": {"api-lint": {"ref": {"branch": "fail-lint"}}}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for run in runs {
        let id = run["id"].as_str().unwrap();
        let done = gw.wait_for_run(id, Duration::from_secs(60), is_terminal).await;
        let expected = if run["target"] == "api-lint" { "failed" } else { "succeeded" };
        assert_eq!(done["state"], expected, "{done:#}");
        assert!(done["provider_ref"]["id"].is_string(), "{done:#}");
    }
    assert_eq!(gw.providers.harness.builds().total(), 5, "{:?}", gw.providers.harness.builds().all());
}
