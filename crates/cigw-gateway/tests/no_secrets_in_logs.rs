//! A full flow (trigger → terminal on all three providers' simulators through the real adapters,
//! signed CircleCI callbacks, an API token, an event stream, a secret parameter) with every log
//! line captured at debug level as JSON, then searched for every configured secret.
//!
//! Its own test binary: it installs the process-wide subscriber.

use std::time::Duration;

use cigw_sim::receiver::{NotificationReceiver, SANDBOX_NOTIFICATION_SECRET};
use cigw_sim::sandbox::{CIRCLECI_WEBHOOK_SECRET, SandboxProviders};
use serde_json::{Value, json};

mod sandbox_support;
use sandbox_support::{capture_logs, get_json, post_json, quick_flow_overrides, serve_sandbox};

/// The sandbox's provider credentials (config/sandbox.toml).
const CIRCLECI_TOKEN: &str = "sim-circleci-token";
const CODEFRESH_KEY: &str = "5f0c0ffee0123456789abcd0.sim-codefresh-key";
const CODESHIP_PASSWORD: &str = "codeship-password";
/// The value of the secret parameter `SENTRY_TOKEN` of `web-e2e`.
const SECRET_PARAMETER: &str = "sentry-secret-7f3a9c41d2";
/// The sandbox's `github` hook secret (config/sandbox.toml).
const HOOK_SECRET: &str = "sandbox-github-secret";
/// A signature no secret made.
const FORGED_SIGNATURE: &str = "sha256=0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_at_debug_level_logs_no_secret() {
    // The production JSON format (CIGW_LOG_FORMAT=json), with span fields, at debug for every crate.
    let captured = capture_logs("debug");

    let providers = SandboxProviders::start(60.0, Duration::from_secs(3)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    providers.send_circleci_webhooks_to(format!("http://{addr}/callbacks/circleci/sandbox"));
    let dir = tempfile::tempdir().unwrap();
    let admin = cigw_gateway::auth::generate_token();
    // The sandbox's notification goes to a receiver that checks its signature.
    let receiver = NotificationReceiver::start(&[SANDBOX_NOTIFICATION_SECRET]).await.unwrap();
    let mut overrides = quick_flow_overrides(&providers, dir.path(), &admin);
    overrides.push(("notifications.sandbox-receiver.url".to_string(), format!("{}/events", receiver.url())));
    let served = serve_sandbox(listener, &overrides).await;

    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    // A token made through the API, used to follow the stream.
    let body = json!({"name": "watcher", "scopes": ["read", "trigger"]});
    let created = post_json(&http, &format!("{base}/v1/tokens"), &admin, &body).await;
    let watcher = created["secret"].as_str().expect("a token secret").to_string();
    let mut stream = http.get(format!("{base}/v1/events")).bearer_auth(&watcher).send().await.unwrap();
    assert_eq!(stream.status(), 200);

    let body = json!({
        "targets": ["api-build", "web-e2e", "legacy-basic"],
        "ref": {"branch": "main"},
        "overrides": {"web-e2e": {"parameters": {"SENTRY_TOKEN": SECRET_PARAMETER}}},
    });
    let accepted = post_json(&http, &format!("{base}/v1/triggers"), &watcher, &body).await;
    let runs: Vec<String> =
        accepted["runs"].as_array().expect("runs").iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(runs.len(), 3, "{accepted}");

    let mut streamed = String::new();
    for run in &runs {
        let mut last = Value::Null;
        for _ in 0..20 {
            last = get_json(&http, &format!("{base}/v1/runs/{run}?wait=5"), &watcher).await;
            if ["succeeded", "failed", "canceled", "skipped", "error"].contains(&last["state"].as_str().unwrap_or("")) {
                break;
            }
        }
        assert_eq!(last["state"], "succeeded", "{last}");
    }
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_millis(300), stream.chunk()).await {
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(streamed.contains("\"state\":\"succeeded\""), "the stream followed the runs: {streamed}");
    assert!(!streamed.contains(SECRET_PARAMETER), "events mask secret parameters");

    // Every run's finished event reached the receiver, signed.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver
        .received()
        .iter()
        .filter(|e| e.event["context"]["type"].as_str().unwrap().contains("finished"))
        .count()
        < 3
    {
        assert!(tokio::time::Instant::now() < end, "notifications: {:?}", receiver.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.refused(), 0);
    let notified = serde_json::to_string(&receiver.received()).unwrap();
    assert!(!notified.contains(SECRET_PARAMETER), "notifications mask secret parameters");
    // The sandbox's signed GitHub hook: a good delivery, a forged one and a dry run with the
    // signature checked, none of which may log the secret or a signature.
    let push = json!({"ref": "refs/heads/main", "after": "4f2c9a7e1b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a", "pusher": {"name": "ada"}})
        .to_string();
    let signature = format!(
        "sha256={}",
        hex::encode(cigw_core::signature::hmac_sha256(HOOK_SECRET.as_bytes(), &[push.as_bytes()]))
    );
    for (sig, want) in [(signature.as_str(), 202), (FORGED_SIGNATURE, 401)] {
        let response = http
            .post(format!("{base}/hooks/github"))
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("d-{want}"))
            .header("X-Hub-Signature-256", sig)
            .body(push.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), want);
        let text = response.text().await.unwrap();
        assert!(!text.contains(HOOK_SECRET) && !text.contains(&signature), "{text}");
    }
    let body = json!({"headers": {"X-GitHub-Event": "push", "X-Hub-Signature-256": FORGED_SIGNATURE},
                      "body": {"ref": "refs/heads/x"}, "verify": true});
    let dry = post_json(&http, &format!("{base}/v1/hooks/github/test"), &admin, &body).await;
    assert_eq!(dry["signature"]["valid"], false, "{dry}");

    served.shut_down().await;
    drop(providers);

    let logs = captured.text();
    // The capture is real: provider calls and requests were logged with their spans.
    assert!(logs.contains("\"provider_call\""), "provider call spans are logged");
    assert!(logs.contains("\"operation\":\"trigger\"") && logs.contains("\"run_id\""), "span fields are logged");
    assert!(logs.contains("\"request_id\""), "request spans are logged");
    for line in logs.lines().take(50) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ci@example.com:{CODESHIP_PASSWORD}"));
    for (what, secret) in [
        ("Codeship basic credentials", basic.as_str()),
        ("CircleCI token", CIRCLECI_TOKEN),
        ("CircleCI webhook secret", CIRCLECI_WEBHOOK_SECRET),
        ("Codefresh API key", CODEFRESH_KEY),
        ("Codeship password", CODESHIP_PASSWORD),
        ("admin token", admin.as_str()),
        ("API token", watcher.as_str()),
        ("secret parameter", SECRET_PARAMETER),
        ("notification secret", SANDBOX_NOTIFICATION_SECRET),
        ("notification secret (base64)", SANDBOX_NOTIFICATION_SECRET.trim_start_matches("whsec_")),
        ("GitHub hook secret", HOOK_SECRET),
        ("GitHub hook signature", signature.as_str()),
        ("forged hook signature", FORGED_SIGNATURE),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
