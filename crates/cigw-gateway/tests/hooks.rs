//! Inbound hooks through the real router: each scheme's vectors and failure modes, hostile
//! clients, rules and templates, remembered deliveries (repeats answer the first result, also
//! from a second gateway on the same store), the dry run and replays.

mod api_support;

use std::time::Duration;

use api_support::{ADMIN, App, Reply, catalog};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use cigw_core::config::{Problems, Settings};
use cigw_core::hook::Hook;
use cigw_core::signature::hmac_sha256;
use cigw_gateway::state::AppState;
use serde_json::{Value, json};

fn hook(name: &str, toml_text: &str) -> Hook {
    let table: toml::Value = toml::from_str(toml_text).unwrap();
    let mut problems = Problems::default();
    let hook = Hook::parse(name, &serde_json::to_value(table).unwrap(), &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    hook.unwrap()
}

fn with_hooks(hooks: Vec<Hook>) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| s.hooks = hooks.into_iter().map(|h| (h.name.clone(), h)).collect()
}

const GITHUB: &str = r#"
scheme = "github"
secrets = ["It's a Secret to Everybody", "the-new-secret"]
[[rules]]
name = "push-to-main"
all = [{ header = "X-GitHub-Event", equals = "push" }, { pointer = "/ref", equals = "refs/heads/main" }]
targets = ["web-e2e"]
ref = { branch = "{{ body.ref | branch }}", sha = "{{ body.after }}" }
parameters = { env = "staging", retries = "{{ body.commits | length }}" }
labels = { pusher = "{{ body.pusher.name }}" }
[[rules]]
name = "tag"
all = [{ header = "X-GitHub-Event", equals = "push" }, { pointer = "/ref", glob = "refs/tags/v*" }]
targets = ["circle-build"]
ref = { tag = "{{ body.ref | tag }}" }
"#;

fn github_sig(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &[body])))
}

fn push(reference: &str) -> Value {
    json!({
        "ref": reference,
        "after": "4f2c9a7e1b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a",
        "commits": [{"id": "a"}, {"id": "b"}],
        "pusher": {"name": "ada"},
    })
}

/// A delivery with these headers and raw body.
fn delivery(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder().method(Method::POST).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(body.into()).unwrap()
}

async fn github(app: &App, event: &str, id: &str, secret: &str, body: &[u8]) -> Reply {
    let sig = github_sig(secret, body);
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", event),
        ("x-github-delivery", id),
        ("x-hub-signature-256", sig.as_str()),
    ];
    app.send(delivery("/hooks/gh", &headers, body.to_vec())).await
}

async fn stats(app: &App) -> Vec<cigw_store::HookDeliveryStats> {
    app.store().hook_delivery_stats(Utc::now()).await.unwrap()
}

#[tokio::test]
async fn the_github_documentation_vector_verifies_through_the_endpoint() {
    let app = App::with_settings(with_hooks(vec![hook("gh", GITHUB)])).await;
    let headers = |sig: &'static str| {
        [("content-type", "application/json"), ("x-github-event", "push"), ("x-hub-signature-256", sig)]
    };
    // GitHub's example: the signature is accepted, then the body (not JSON) is refused: the
    // signature was checked on the raw bytes before anything parsed them.
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let reply = app.send(delivery("/hooks/gh", &headers(good), "Hello, World!")).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    let bad = "sha256=857107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let reply = app.send(delivery("/hooks/gh", &headers(bad), "Hello, World!")).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(reply.body["message"].as_str().unwrap().contains("does not match any configured secret"), "{}", reply.text);
    assert!(stats(&app).await.is_empty(), "nothing remembered");
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn a_signed_push_triggers_once_and_a_repeat_answers_the_first_result() {
    let app = App::with_settings(with_hooks(vec![hook("gh", GITHUB)])).await;
    let body = serde_json::to_vec(&push("refs/heads/main")).unwrap();
    let first = github(&app, "push", "d-1", "It's a Secret to Everybody", &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["matched"], true);
    assert_eq!(first.body["rule"], "push-to-main");
    assert_eq!(first.body["delivery_id"], "d-1");
    let trigger_id = first.body["trigger_id"].as_str().unwrap().to_string();
    let trigger = app.store().get_trigger(&trigger_id).await.unwrap();
    assert_eq!((trigger.source.as_str(), trigger.requested_by.as_str()), ("hook:gh", "hook:gh"));
    assert_eq!(trigger.labels, json!({"pusher": "ada", "hook_delivery": "d-1"}));
    let run = &trigger.runs[0];
    assert_eq!(run.target, "web-e2e");
    assert_eq!(run.git_ref.branch.as_deref(), Some("main"));
    assert_eq!(run.git_ref.sha.as_deref(), Some("4f2c9a7e1b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a"));
    assert_eq!(run.parameters.masked_json()["retries"], 2);

    // The same delivery again (GitHub's "Redeliver", a retry after a timeout), signed with the
    // rotated secret this time: the first answer, nothing started.
    let again = github(&app, "push", "d-1", "the-new-secret", &body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["cigw-delivery-repeated"], "true");
    assert_eq!(app.run_count().await, 1);

    // A second gateway on the same store (a restart, another replica) answers the same.
    let (catalog, _) = catalog(&app.harness);
    let mut settings = (*app.state.settings).clone();
    settings.server.body_limit_bytes = 16 * 1024;
    let restarted = AppState::new(app.store().clone(), catalog, settings);
    let router = cigw_gateway::build_router(restarted);
    let sig = github_sig("the-new-secret", &body);
    let request = delivery(
        "/hooks/gh",
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "d-1"),
            ("x-hub-signature-256", &sig),
        ],
        body.clone(),
    );
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), first.body);
    assert_eq!(app.run_count().await, 1);

    // Another delivery id is another build; a tag matches the second rule.
    let tag = serde_json::to_vec(&push("refs/tags/v1.2.0")).unwrap();
    let tagged = github(&app, "push", "d-2", "It's a Secret to Everybody", &tag).await;
    assert_eq!(tagged.status, StatusCode::ACCEPTED, "{}", tagged.text);
    assert_eq!(tagged.body["rule"], "tag");
    assert_eq!(tagged.body["runs"][0]["target"], "circle-build");
    let stats = stats(&app).await;
    assert_eq!((stats[0].deliveries, stats[0].triggered), (2, 2));
}

#[tokio::test]
async fn pings_misses_and_template_errors_are_answered_and_start_nothing() {
    let app = App::with_settings(with_hooks(vec![hook("gh", GITHUB)])).await;
    let secret = "It's a Secret to Everybody";
    let ping = github(&app, "ping", "p-1", secret, br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text);
    assert_eq!(ping.body["pong"], true);
    assert_eq!(ping.body["zen"], "Keep it logically awesome.");

    let body = serde_json::to_vec(&push("refs/heads/dev")).unwrap();
    let miss = github(&app, "push", "m-1", secret, &body).await;
    assert_eq!(miss.status, StatusCode::OK, "{}", miss.text);
    assert_eq!(miss.body["matched"], false);
    let reason = miss.body["reason"].as_str().unwrap();
    assert!(reason.contains(r#"rule `push-to-main`: `/ref` is "refs/heads/dev", not "refs/heads/main""#), "{reason}");
    assert!(reason.contains("rule `tag`: `/ref` is \"refs/heads/dev\", which does not match glob `refs/tags/v*`"));
    assert_eq!(miss.body["rules"].as_array().unwrap().len(), 2);

    let mut no_pusher = push("refs/heads/main");
    no_pusher.as_object_mut().unwrap().remove("pusher");
    let body = serde_json::to_vec(&no_pusher).unwrap();
    let failed = github(&app, "push", "t-1", secret, &body).await;
    failed.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "template_error");
    let message = failed.body["message"].as_str().unwrap();
    assert!(message.contains("rules[0].labels.pusher") && message.contains("`body.pusher.name`"), "{message}");
    assert_eq!(failed.body["details"][0]["field"], "hooks.gh.rules[0].labels.pusher");
    assert_eq!(app.run_count().await, 0);

    // Remembered with their outcomes (not the ping); a fixed payload under the same id is
    // handled anew, because the first attempt started nothing.
    let listed = app.get("/v1/hooks/gh/deliveries", ADMIN).await;
    let outcomes: Vec<(&str, &str)> = listed.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["delivery_id"].as_str().unwrap(), d["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{}", listed.text);
    assert!(outcomes.contains(&("t-1", "template_error")) && outcomes.contains(&("m-1", "not_matched")));
    let fixed = serde_json::to_vec(&push("refs/heads/main")).unwrap();
    let retried = github(&app, "push", "t-1", secret, &fixed).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.text);
    assert_eq!(app.run_count().await, 1);
}

#[tokio::test]
async fn hostile_deliveries_are_refused_with_json_and_store_nothing() {
    let app = App::with_settings(|s: &mut Settings| {
        with_hooks(vec![hook("gh", GITHUB)])(s);
        s.server.request_timeout = Duration::from_millis(500);
    })
    .await;
    let secret = "It's a Secret to Everybody";
    let body = serde_json::to_vec(&push("refs/heads/main")).unwrap();
    let sig = github_sig(secret, &body);
    let signed = |content_type: &'static str| {
        vec![("content-type", content_type), ("x-github-event", "push"), ("x-hub-signature-256", sig.as_str())]
    };

    let unknown = app.send(delivery("/hooks/nope", &signed("application/json"), body.clone())).await;
    unknown.assert_error(StatusCode::NOT_FOUND, "unknown_hook");
    assert!(unknown.body["message"].as_str().unwrap().contains("configured hooks: gh"), "{}", unknown.text);

    let form = app.send(delivery("/hooks/gh", &signed("application/x-www-form-urlencoded"), body.clone())).await;
    form.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert!(form.body["message"].as_str().unwrap().contains("application/json"));

    let huge = vec![b' '; 17 * 1024];
    let reply = app.send(delivery("/hooks/gh", &signed("application/json"), huge)).await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let unsigned = [("content-type", "application/json"), ("x-github-event", "push")];
    let reply = app.send(delivery("/hooks/gh", &unsigned, body.clone())).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(reply.body["message"].as_str().unwrap().contains("`x-hub-signature-256` header is missing"));
    let malformed = [("content-type", "application/json"), ("x-hub-signature-256", "md5=abc")];
    let reply = app.send(delivery("/hooks/gh", &malformed, body.clone())).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(reply.body["message"].as_str().unwrap().contains("malformed"));
    // One changed byte after signing.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let reply = app.send(delivery("/hooks/gh", &signed("application/json"), tampered)).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(!reply.text.contains(secret) && !reply.text.contains(&sig), "{}", reply.text);

    // Correctly signed, but not JSON.
    let junk = b"{\"ref\": ".to_vec();
    let junk_sig = github_sig(secret, &junk);
    let headers = [("content-type", "application/json"), ("x-hub-signature-256", junk_sig.as_str())];
    app.send(delivery("/hooks/gh", &headers, junk)).await.assert_error(StatusCode::BAD_REQUEST, "invalid_json");

    // A body that never finishes arriving: the request's time limit ends it.
    let slow = futures::stream::unfold(0, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"ref\":")), n + 1))
    });
    let reply = app.send(delivery("/hooks/gh", &signed("application/json"), Body::from_stream(slow))).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "timeout");

    assert!(stats(&app).await.is_empty(), "nothing remembered");
    assert_eq!(app.run_count().await, 0);
    let metrics = app.call(Method::GET, "/metrics", None, None).await.text;
    for outcome in ["unknown_hook", "unsupported_media_type", "too_large", "unauthorized", "bad_request"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cigw_hook_requests_total{") && l.contains(&format!("outcome=\"{outcome}\""))),
            "{outcome}: {metrics}"
        );
    }
}

/// The Standard Webhooks vector vendored from the specification.
fn sw_vector() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cigw-core/tests/resources/standard-webhooks/vector.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_standard_webhooks_vector_triggers_on_a_fixed_clock() {
    let v = sw_vector();
    let secret = v["secret"].as_str().unwrap();
    let toml_text = format!(
        r#"
        scheme = "standard-webhooks"
        secrets = ["whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0", "{secret}"]
        tolerance = "5m"
        [[rules]]
        name = "any-test"
        all = [{{ pointer = "/test", exists = true }}]
        targets = ["circle-build"]
        labels = {{ test = "{{{{ body.test }}}}" }}
        "#
    );
    let app = App::with_settings(with_hooks(vec![hook("sw", &toml_text)])).await;
    let ts: i64 = v["webhook-timestamp"].as_str().unwrap().parse().unwrap();
    let send = |id: &str, signature: &str| {
        delivery(
            "/hooks/sw",
            &[
                ("content-type", "application/json"),
                ("webhook-id", id),
                ("webhook-timestamp", v["webhook-timestamp"].as_str().unwrap()),
                ("webhook-signature", signature),
            ],
            v["payload"].as_str().unwrap().to_string(),
        )
    };
    let id = v["webhook-id"].as_str().unwrap();
    let signature = v["webhook-signature"].as_str().unwrap();

    // Six minutes after the timestamp: refused as stale, with a clear message.
    app.state.pin_clock(Some(Utc.timestamp_opt(ts + 360, 0).unwrap()));
    let stale = app.send(send(id, signature)).await;
    stale.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let message = stale.body["message"].as_str().unwrap();
    assert!(message.contains("360 s away from now") && message.contains("tolerance"), "{message}");

    // At the timestamp: verified with the second secret, triggered.
    app.state.pin_clock(Some(Utc.timestamp_opt(ts + 10, 0).unwrap()));
    let reply = app.send(send(id, signature)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["delivery_id"], id);
    let trigger = app.store().get_trigger(reply.body["trigger_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(trigger.labels, json!({"test": "2432232314", "hook_delivery": id}));
    // A repeat of the message answers the first result.
    let again = app.send(send(id, signature)).await;
    assert_eq!((again.status, &again.body), (StatusCode::ACCEPTED, &reply.body));
    // The signature of another id does not verify.
    app.send(send("msg_other", signature)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.state.pin_clock(None);
    assert_eq!(app.run_count().await, 1);
}

#[tokio::test]
async fn gitlab_tokens_and_configured_hmacs_verify_and_fail_as_documented() {
    let gitlab = hook(
        "gl",
        r#"
        scheme = "gitlab"
        secrets = ["gl-old", "gl-new"]
        [[rules]]
        name = "mr-opened-against-production"
        all = [
          { header = "X-Gitlab-Event", equals = "Merge Request Hook" },
          { pointer = "/object_attributes/action", equals = "open" },
          { pointer = "/object_attributes/target_branch", equals = "production" },
        ]
        targets = ["web-e2e"]
        ref = { branch = "{{ body.object_attributes.source_branch }}", sha = "{{ body.object_attributes.last_commit.id }}" }
        "#,
    );
    let signed = hook(
        "internal",
        r#"
        scheme = "hmac-sha256"
        secrets = ["internal-secret"]
        signature_header = "X-Signature"
        prefix = "v1="
        encoding = "base64"
        timestamp_header = "X-Timestamp"
        delivery_header = "X-Request-Id"
        tolerance = "1m"
        [[rules]]
        name = "deploy"
        all = [{ pointer = "/action", equals = "deploy" }]
        targets = ["ship-deploy"]
        "#,
    );
    let app = App::with_settings(with_hooks(vec![gitlab, signed])).await;
    let mr = json!({
        "object_kind": "merge_request",
        "object_attributes": {"action": "open", "target_branch": "production", "source_branch": "feature/x",
            "last_commit": {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}},
    });
    let send_gl = |token: Option<&'static str>, uuid: &'static str| {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-gitlab-event", "Merge Request Hook"),
            ("x-gitlab-event-uuid", uuid),
        ];
        if let Some(token) = token {
            headers.push(("x-gitlab-token", token));
        }
        delivery("/hooks/gl", &headers, mr.to_string())
    };
    app.send(send_gl(None, "u-1")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.send(send_gl(Some("gl-wrong"), "u-1")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let ok = app.send(send_gl(Some("gl-new"), "u-1")).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let rotated = app.send(send_gl(Some("gl-old"), "u-1")).await;
    assert_eq!((rotated.status, &rotated.body), (StatusCode::ACCEPTED, &ok.body), "old secret, same delivery");
    assert_eq!(app.run_count().await, 1);

    let now = Utc::now().timestamp();
    let body = br#"{"action": "deploy"}"#;
    let sign = |ts: i64| {
        let mac = hmac_sha256(b"internal-secret", &[ts.to_string().as_bytes(), b".", body]);
        format!("v1={}", base64::engine::general_purpose::STANDARD.encode(mac))
    };
    let send_internal = |ts: i64, sig: String, id: &'static str| {
        let ts = ts.to_string();
        let headers = [
            ("content-type", "application/json; charset=utf-8"),
            ("x-timestamp", ts.as_str()),
            ("x-signature", sig.as_str()),
            ("x-request-id", id),
        ];
        delivery("/hooks/internal", &headers, body.to_vec())
    };
    let ok = app.send(send_internal(now, sign(now), "r-1")).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let old = app.send(send_internal(now - 120, sign(now - 120), "r-2")).await;
    old.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(old.body["message"].as_str().unwrap().contains("tolerated"), "{}", old.text);
    // Signed for another timestamp than the one sent.
    app.send(send_internal(now, sign(now - 1), "r-3")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let unprefixed = sign(now).trim_start_matches("v1=").to_string();
    app.send(send_internal(now, unprefixed, "r-4")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(app.run_count().await, 2);
}

#[tokio::test]
async fn bearer_hooks_take_cigw_tokens_with_a_trigger_scope() {
    let bearer = hook(
        "svc",
        r#"
        scheme = "bearer"
        delivery_header = "Idempotency-Key"
        [[rules]]
        name = "always"
        targets = ["circle-build"]
        "#,
    );
    let app = App::with_settings(with_hooks(vec![bearer])).await;
    let good = app.token("deployer", &["trigger:circle-*"]).await;
    let reader = app.token("reader", &["read"]).await;
    let elsewhere = app.token("web-only", &["trigger:web-*"]).await;
    let send = |token: Option<&str>, key: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json"), ("idempotency-key", key)];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        delivery("/hooks/svc", &headers, r#"{"why": "release"}"#)
    };
    app.send(send(None, "k-1")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.send(send(Some(&reader), "k-1")).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    app.send(send(Some(&elsewhere), "k-1")).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let ok = app.send(send(Some(&good), "k-1")).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let trigger = app.store().get_trigger(ok.body["trigger_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(trigger.requested_by, "hook:svc");
    assert_eq!(trigger.labels["hook_token"], "deployer");
    // A revoked token is refused at once.
    let id = app.store().list_tokens().await.unwrap().into_iter().find(|t| t.name == "deployer").unwrap().id;
    app.store().revoke_token(&id, Utc::now()).await.unwrap();
    app.send(send(Some(&good), "k-2")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(app.run_count().await, 1);
}

#[tokio::test]
async fn a_dry_run_shows_the_match_the_misses_and_the_request_and_stores_nothing() {
    let app = App::with_settings(with_hooks(vec![hook("gh", GITHUB)])).await;
    let reply = app
        .post(
            "/v1/hooks/gh/test",
            ADMIN,
            json!({"headers": {"X-GitHub-Event": "push", "X-GitHub-Delivery": "dry-1"}, "body": push("refs/tags/v2.0.0")}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["outcome"], "would_trigger");
    assert_eq!(reply.body["rule"], "tag");
    assert_eq!(reply.body["rules"][0]["rule"], "push-to-main");
    assert_eq!(
        reply.body["request"],
        json!({"targets": ["circle-build"], "ref": {"tag": "v2.0.0"}, "labels": {"hook_delivery": "dry-1"}})
    );
    assert!(reply.body["signature"].is_null());

    // With the signature checked: over the exact bytes given.
    let raw = push("refs/heads/main").to_string();
    let sig = github_sig("It's a Secret to Everybody", raw.as_bytes());
    let checked = app
        .post(
            "/v1/hooks/gh/test",
            ADMIN,
            json!({"headers": {"X-GitHub-Event": "push", "X-Hub-Signature-256": sig}, "body": push("refs/heads/main"),
                   "verify": true, "raw_body": raw}),
        )
        .await;
    assert_eq!(checked.body["signature"], json!({"valid": true, "message": null}), "{}", checked.text);
    let wrong = app
        .post(
            "/v1/hooks/gh/test",
            ADMIN,
            json!({"headers": {"X-GitHub-Event": "push", "X-Hub-Signature-256": sig}, "body": {"ref": "x"}, "verify": true}),
        )
        .await;
    assert_eq!(wrong.body["signature"]["valid"], false, "{}", wrong.text);
    assert_eq!(wrong.body["outcome"], "not_matched");
    assert!(wrong.body["reason"].as_str().unwrap().contains("rule `tag`"));

    // A request intake would refuse is shown as such.
    let bad = json!({"ref": "refs/heads/main", "after": "x", "commits": "not-a-list", "pusher": {"name": "a"}});
    let refused =
        app.post("/v1/hooks/gh/test", ADMIN, json!({"headers": {"X-GitHub-Event": "push"}, "body": bad})).await;
    assert_eq!(refused.body["outcome"], "invalid_request", "{}", refused.text);
    assert_eq!(refused.body["error"]["code"], "invalid_ref", "a sha of `x`: {}", refused.text);

    let reader = app.token("reader", &["read"]).await;
    app.post("/v1/hooks/gh/test", &reader, json!({"body": {}}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "missing_scope");
    app.post("/v1/hooks/nope/test", ADMIN, json!({"body": {}})).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.post("/v1/hooks/gh/test", ADMIN, json!({"headers": {}}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(stats(&app).await.is_empty());
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn replays_use_the_current_rules() {
    // At first only `main` builds; a push to `dev` is remembered as not matched.
    let app = App::with_settings(with_hooks(vec![hook("gh", GITHUB)])).await;
    let body = serde_json::to_vec(&push("refs/heads/dev")).unwrap();
    let miss = github(&app, "push", "dev-1", "It's a Secret to Everybody", &body).await;
    assert_eq!(miss.body["matched"], false, "{}", miss.text);

    // The rules change (a gateway restarted with a new configuration on the same store).
    let widened = GITHUB.replace(
        r#"{ pointer = "/ref", equals = "refs/heads/main" }"#,
        r#"{ pointer = "/ref", glob = "refs/heads/*" }"#,
    );
    let (catalog, _) = catalog(&app.harness);
    let mut settings = (*app.state.settings).clone();
    with_hooks(vec![hook("gh", &widened)])(&mut settings);
    let state = AppState::new(app.store().clone(), catalog, settings);
    let router = cigw_gateway::build_router(state);
    let call = |path: &str| {
        let request = api_support::request(Method::POST, path, Some(ADMIN), None);
        let router = router.clone();
        async move {
            let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, dry) = call("/v1/hooks/gh/deliveries/dev-1/replay?dry_run=true").await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((dry["outcome"].as_str(), dry["rule"].as_str()), (Some("would_trigger"), Some("push-to-main")));
    assert_eq!(dry["request"]["ref"]["branch"], "dev");
    assert_eq!(app.run_count().await, 0, "a dry run starts nothing");
    let (status, replayed) = call("/v1/hooks/gh/deliveries/dev-1/replay").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["rule"], "push-to-main");
    let trigger = app.store().get_trigger(replayed["trigger_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(trigger.labels["hook_delivery"], "dev-1");
    assert_eq!(trigger.labels["hook_replayed_by"], "bootstrap-admin");
    assert_eq!(app.run_count().await, 1);

    let (status, missing) = call("/v1/hooks/gh/deliveries/nope/replay").await;
    assert_eq!((status, missing["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // Under the old rules the delivery still does not match: 200, nothing triggered.
    let (status, _) = (app.post_empty("/v1/hooks/gh/deliveries/dev-1/replay", ADMIN).await.status, ());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.run_count().await, 1);

    let listed = app.get("/v1/hooks", ADMIN).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let gh = &listed.body["hooks"][0];
    assert_eq!((gh["name"].as_str(), gh["scheme"].as_str()), (Some("gh"), Some("github")));
    assert_eq!(gh["rules"], json!(["push-to-main", "tag"]));
    assert_eq!(gh["deliveries"], 1);
}

#[tokio::test]
async fn only_the_newest_deliveries_keep_their_bodies_and_secret_headers_are_never_kept() {
    let small = GITHUB.replace("scheme = \"github\"", "scheme = \"github\"\nkeep_deliveries = 2");
    let app = App::with_settings(with_hooks(vec![hook("gh", &small)])).await;
    let body = serde_json::to_vec(&push("refs/heads/dev")).unwrap();
    for id in ["a", "b", "c"] {
        github(&app, "push", id, "It's a Secret to Everybody", &body).await;
    }
    let kept = app.store().get_hook_delivery("gh", "c", Utc::now()).await.unwrap().unwrap();
    let headers = kept.headers.unwrap();
    assert_eq!(headers["x-github-event"], "push");
    assert!(headers.get("x-hub-signature-256").is_none(), "{headers}");
    assert!(!headers.to_string().contains("sha256="), "{headers}");
    let listed = app.get("/v1/hooks/gh/deliveries?limit=10", ADMIN).await;
    let replayable: Vec<bool> =
        listed.body["deliveries"].as_array().unwrap().iter().map(|d| d["replayable"].as_bool().unwrap()).collect();
    assert_eq!(replayable, [true, true, false]);
    let gone = app.post_empty("/v1/hooks/gh/deliveries/a/replay", ADMIN).await;
    gone.assert_error(StatusCode::CONFLICT, "delivery_not_kept");
    app.get("/v1/hooks/gh/deliveries?limit=0", ADMIN).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}
