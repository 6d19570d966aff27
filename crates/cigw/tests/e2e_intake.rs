//! Intake through the real binary: idempotent replay, a reused key with another body, and every
//! kind of invalid input answered with the right 4xx `{code, message}` and nothing stored.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Gateway, is_terminal};

/// The status and `{code, message}` of an answer, asserting the body has that shape.
async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    let code = body["code"].as_str().unwrap_or_else(|| panic!("no code in {body}")).to_string();
    let message = body["message"].as_str().unwrap_or_else(|| panic!("no message in {body}")).to_string();
    assert!(!message.is_empty(), "{body}");
    (status, code, message)
}

#[tokio::test]
async fn the_same_key_and_body_replay_the_answer_and_another_body_is_a_conflict() {
    let gw = Gateway::start(20.0, Duration::from_secs(4)).await;
    let body = json!({"targets": ["web-e2e", "legacy-basic"], "ref": {"branch": "idem"}, "labels": {"a": "1"}});
    let first = gw.post_idempotent("/v1/triggers", "deploy-42", &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same body with its keys in another order is the same request.
    let reordered = json!({"labels": {"a": "1"}, "ref": {"branch": "idem"}, "targets": ["web-e2e", "legacy-basic"]});
    let second = gw.post_idempotent("/v1/triggers", "deploy-42", &reordered).await;
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second, "a replay answers the original body");

    let changed = json!({"targets": ["web-e2e", "legacy-basic"], "ref": {"branch": "other"}, "labels": {"a": "1"}});
    let (status, code, message) = error_of(gw.post_idempotent("/v1/triggers", "deploy-42", &changed).await).await;
    assert_eq!((status, code.as_str()), (409, "idempotency_key_reused"), "{message}");

    // Only the first request created runs, and each reached its provider once.
    let runs = gw.all_runs().await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        let done = gw.wait_for_run(id, Duration::from_secs(20), is_terminal).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
        assert_eq!(done["trigger_id"], first["trigger_id"]);
    }
    let web_run = runs.iter().find(|r| r["target"] == "web-e2e").unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(gw.providers.harness.builds().count(&web_run), 1);
    assert_eq!(gw.providers.harness.builds().count("heads/idem"), 1, "{:?}", gw.providers.harness.builds().all());
    assert_eq!(gw.providers.harness.builds().total(), 2);
}

#[tokio::test]
async fn every_invalid_input_gets_its_4xx_and_stores_nothing() {
    let gw = Gateway::start(20.0, Duration::from_secs(4)).await;
    let reader = gw.create_token("reader", &["read"], None).await;
    let web_only = gw.create_token("web-only", &["trigger:web-*"], None).await;
    let short_lived = gw.create_token("short-lived", &["trigger", "read"], Some("1s")).await;
    // The short-lived token works while it lasts …
    let ok = gw.anonymous(Method::GET, "/v1/targets").bearer_auth(&short_lived).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let before = gw.all_runs().await;
    assert!(before.is_empty());

    let post = |token: Option<&str>, body: Vec<u8>| {
        let mut r = gw.anonymous(Method::POST, "/v1/triggers").header("content-type", "application/json").body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let json_bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    let admin = Some(support::ADMIN_TOKEN);
    let valid = json!({"targets": ["api-build"], "ref": {"branch": "main"}});

    // (what, token, body, expected status, expected code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed JSON", admin, b"{\"targets\": [\"api-build\"".to_vec(), 400, "invalid_json"),
        ("unknown target", admin, json_bytes(json!({"targets": ["nope"]})), 422, "unknown_target"),
        (
            "undeclared parameter",
            admin,
            json_bytes(json!({"targets": ["api-build"], "parameters": {"colour": "blue"}})),
            422,
            "invalid_parameters",
        ),
        (
            "mistyped parameter",
            admin,
            json_bytes(json!({"targets": ["api-release"], "parameters": {"require_approval": "yes"}})),
            422,
            "invalid_parameters",
        ),
        (
            "parameter outside its enum",
            admin,
            json_bytes(json!({"targets": ["api-build"], "parameters": {"deploy_env": "moon"}})),
            422,
            "invalid_parameters",
        ),
        (
            "sha on a CircleCI target",
            admin,
            json_bytes(json!({"targets": ["api-build"], "ref": {"branch": "main", "sha": "0123abcd"}})),
            422,
            "unsupported_ref",
        ),
        (
            "tag on a Codeship target",
            admin,
            json_bytes(json!({"targets": ["legacy-basic"], "ref": {"tag": "v1.0.0"}})),
            422,
            "unsupported_ref",
        ),
        ("wrong shape", admin, json_bytes(json!({"targets": "api-build"})), 422, "invalid_body"),
        ("missing token", None, json_bytes(valid.clone()), 401, "unauthenticated"),
        ("unknown token", Some("cigw_not-a-real-token"), json_bytes(valid.clone()), 401, "unauthenticated"),
        ("read-only token", Some(&reader), json_bytes(valid.clone()), 403, "missing_scope"),
        ("token scoped to other targets", Some(&web_only), json_bytes(valid.clone()), 403, "missing_scope"),
        (
            "oversize body",
            admin,
            json_bytes(json!({"targets": ["api-build"], "labels": {"big": "x".repeat(1_100_000)}})),
            413,
            "payload_too_large",
        ),
    ];
    for (what, token, body, want_status, want_code) in cases {
        let (status, code, message) = error_of(post(token, body).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (want_status, want_code), "{what}: {message}");
        if want_code == "missing_scope" {
            assert!(message.contains("trigger"), "{what}: the missing scope is named: {message}");
        }
        if want_code == "invalid_parameters" || want_code == "unknown_target" {
            assert!(message.contains('`'), "{what}: the field is named: {message}");
        }
    }

    // … and not once it has expired.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, code, message) = error_of(post(Some(&short_lived), json_bytes(valid.clone())).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"), "expired token: {message}");

    // A mixed request (one good target, one bad) is refused whole.
    let mixed = json!({"targets": ["web-e2e", "api-build"], "ref": {"branch": "main", "sha": "0123abcd"}});
    let (status, code, _) = error_of(post(admin, json_bytes(mixed)).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (422, "unsupported_ref"));

    assert_eq!(gw.all_runs().await, before, "nothing was stored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.providers.harness.builds().total(), 0, "nothing reached a provider");

    // The same gateway still accepts a valid request: the refusals were not a broken intake.
    let ids = gw.trigger(valid).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(gw.all_runs().await.len(), 1);
}
