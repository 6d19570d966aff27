//! Hooks end to end on the simulators: a real-shaped GitHub push to the sandbox's `github` hook
//! builds api-build (CircleCI) and a real-shaped GitLab merge request opened against
//! `production` builds web-e2e (Codefresh) at the MR's commit, both to success. A repeated
//! delivery answers its first result, also after a restart. `cigw hooks`, `cigw hook test` and
//! `cigw hook replay` work against the running gateway.

mod support;

use std::time::Duration;

use cigw_core::signature::hmac_sha256;
use serde_json::Value;
use support::{ADMIN_TOKEN, Gateway};

const GITHUB_PUSH: &str = include_str!("resources/hooks/github-push.json");
const GITLAB_MR: &str = include_str!("resources/hooks/gitlab-merge-request.json");
/// The sandbox's `github` hook secret (config/sandbox.toml).
const GITHUB_SECRET: &str = "sandbox-github-secret";

const GITLAB_HOOK: &str = r#"
[hooks.gitlab]
scheme = "gitlab"
secrets = ["gitlab-e2e-token"]

[[hooks.gitlab.rules]]
name = "mr-opened-against-production"
all = [
  { header = "X-Gitlab-Event", equals = "Merge Request Hook" },
  { pointer = "/object_attributes/action", equals = "open" },
  { pointer = "/object_attributes/target_branch", equals = "production" },
]
targets = ["web-e2e"]
ref = { branch = "{{ body.object_attributes.source_branch }}", sha = "{{ body.object_attributes.last_commit.id }}" }
parameters = { BROWSER = "firefox" }
labels = { mr = "{{ body.object_attributes.url }}" }
"#;

async fn github_push(gw: &Gateway, delivery: &str) -> reqwest::Response {
    let signature = format!("sha256={}", hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), &[GITHUB_PUSH.as_bytes()])));
    gw.anonymous(reqwest::Method::POST, "/hooks/github")
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .body(GITHUB_PUSH)
        .send()
        .await
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value, bool) {
    let status = response.status().as_u16();
    let repeated = response.headers().get("cigw-delivery-repeated").is_some();
    (status, response.json().await.unwrap(), repeated)
}

async fn cigw(gw: &Gateway, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cigw"))
        .args(args)
        .env("CIGW_URL", &gw.url)
        .env("CIGW_TOKEN", ADMIN_TOKEN)
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn github_pushes_and_gitlab_merge_requests_build_the_right_targets() {
    let mut gw = Gateway::start_with(20.0, Duration::from_secs(3), GITLAB_HOOK).await;

    // GitHub push to main → api-build on main, the pushed sha recorded on the trigger.
    let (status, first, repeated) = json_of(github_push(&gw, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await).await;
    assert_eq!(status, 202, "{first}");
    assert!(!repeated);
    assert_eq!(
        (first["rule"].as_str(), first["runs"][0]["target"].as_str()),
        (Some("push-to-branch"), Some("api-build"))
    );
    let run_id = first["runs"][0]["id"].as_str().unwrap().to_string();
    let run = gw.wait_for_run(&run_id, Duration::from_secs(60), support::is_terminal).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["ref"]["branch"], "main", "{run}");
    let trigger = gw.get_json(&format!("/v1/triggers/{}", first["trigger_id"].as_str().unwrap())).await;
    assert_eq!(trigger["source"], "hook:github");
    assert_eq!(trigger["requested_by"], "hook:github");
    assert_eq!(trigger["labels"]["sha"], "4f2c9a7e1b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a");
    assert_eq!(trigger["labels"]["pusher"], "ada-l");
    assert_eq!(trigger["labels"]["hook_delivery"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");

    // GitLab merge request opened against production → web-e2e at the MR's last commit.
    let mr = |uuid: &str, body: String| {
        gw.anonymous(reqwest::Method::POST, "/hooks/gitlab")
            .header("Content-Type", "application/json")
            .header("X-Gitlab-Event", "Merge Request Hook")
            .header("X-Gitlab-Event-UUID", uuid)
            .header("X-Gitlab-Token", "gitlab-e2e-token")
            .body(body)
            .send()
    };
    let (status, opened, _) =
        json_of(mr("9cb1b6b1-0e6a-4a4a-9a55-1e4f6c2d8e10", GITLAB_MR.into()).await.unwrap()).await;
    assert_eq!(status, 202, "{opened}");
    let web_run = opened["runs"][0]["id"].as_str().unwrap().to_string();
    let run = gw.wait_for_run(&web_run, Duration::from_secs(60), support::is_terminal).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["target"], "web-e2e");
    assert_eq!(run["ref"]["branch"], "release/2026.12", "{run}");
    assert_eq!(run["ref"]["sha"], "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "{run}");
    // The same MR updated (not opened) starts nothing.
    let updated = GITLAB_MR.replace("\"action\": \"open\"", "\"action\": \"update\"");
    let (status, missed, _) = json_of(mr("9cb1b6b1-0e6a-4a4a-9a55-1e4f6c2d8e11", updated).await.unwrap()).await;
    assert_eq!((status, missed["matched"].as_bool()), (200, Some(false)), "{missed}");
    assert_eq!(gw.all_runs().await.len(), 2);

    // A repeated delivery answers its first result, before and after a restart.
    let (status, again, repeated) = json_of(github_push(&gw, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await).await;
    assert_eq!((status, &again, repeated), (202, &first, true));
    gw.terminate().await;
    gw.spawn().await;
    let (status, after_restart, repeated) =
        json_of(github_push(&gw, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await).await;
    assert_eq!((status, &after_restart, repeated), (202, &first, true));
    assert_eq!(gw.all_runs().await.len(), 2, "no delivery started a second build");

    // The CLI: the listing, a dry run of the fixture, and a replay of the unmatched MR.
    let (code, out, err) = cigw(&gw, &["hooks"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("HOOK"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("github") && l.contains("push-to-branch") && l.contains("api-build")),
        "{out}"
    );
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resources/hooks/github-push.json");
    let (code, out, err) =
        cigw(&gw, &["hook", "test", "github", "--body", fixture, "--header", "X-GitHub-Event: push"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("hook github: rule `push-to-branch` matches"), "{out}");
    assert!(out.contains("\"branch\": \"main\""), "{out}");
    let (code, out, err) = cigw(&gw, &["hook", "test", "github", "--body", fixture, "--header", "nonsense"]).await;
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(err.contains("--header `nonsense`"), "{err}");
    let (code, out, err) =
        cigw(&gw, &["hook", "replay", "gitlab", "9cb1b6b1-0e6a-4a4a-9a55-1e4f6c2d8e11", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no rule matches") && out.contains("`/object_attributes/action` is \"update\""), "{out}");
    let (code, out, err) = cigw(&gw, &["hook", "replay", "github", "72d3162e-cc78-11e3-81ab-4c9367dc0958"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("hook github: delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 replayed"), "{out}");
    assert_eq!(gw.all_runs().await.len(), 3, "a replay is a new trigger");
    let (code, _, err) = cigw(&gw, &["hook", "replay", "github", "no-such-delivery"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no remembered delivery `no-such-delivery`"), "{err}");
}
