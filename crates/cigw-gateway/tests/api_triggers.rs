//! `POST /v1/triggers` intake, idempotency, trigger reads and cancel, over a real SQLite store.
//! Every refused request must leave the store unchanged.

mod api_support;

use api_support::{ADMIN, App, request};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cigw_core::{ParamValue, RunState};
use serde_json::{Value, json};

#[tokio::test]
async fn a_valid_trigger_is_stored_and_answered_202() {
    let app = App::new().await;
    let token = app.token("ci-bot", &["trigger"]).await;
    let mut wake = std::pin::pin!(app.state.wake.notified());
    wake.as_mut().enable();
    let reply = app
        .post(
            "/v1/triggers",
            &token,
            json!({
                "targets": ["web-e2e", "circle-build"],
                "ref": {"branch": "feature/x"},
                "overrides": {"web-e2e": {"parameters": {"env": "staging", "api_key": "s3cret", "debug": true, "retries": "3"}},
                              "circle-build": {"ref": {"tag": "v1.2.0"}}},
                "labels": {"ticket": "QA-7"}
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let trigger_id = reply.body["trigger_id"].as_str().unwrap().to_string();
    let runs = reply.body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["target"], "web-e2e");
    assert_eq!(runs[0]["provider"], "circleci");
    assert_eq!(runs[0]["state"], "pending");
    let id0 = runs[0]["id"].as_str().unwrap();
    assert_eq!(runs[0]["links"]["self"], format!("/v1/runs/{id0}"));
    assert_eq!(runs[0]["links"]["events"], format!("/v1/runs/{id0}/events"));
    // The engine was woken after the commit.
    tokio::time::timeout(std::time::Duration::from_secs(1), wake).await.expect("the engine was woken");

    let stored = app.store().get_trigger(&trigger_id).await.unwrap();
    assert_eq!(stored.source, "api");
    assert_eq!(stored.requested_by, "ci-bot");
    assert_eq!(stored.labels, json!({"ticket": "QA-7"}));
    assert_eq!(stored.request["overrides"]["web-e2e"]["parameters"]["api_key"], "***");
    assert!(!stored.request.to_string().contains("s3cret"));
    let web = stored.runs.iter().find(|r| r.target == "web-e2e").unwrap();
    assert_eq!(web.state, RunState::Pending);
    assert_eq!(web.git_ref.branch.as_deref(), Some("feature/x"));
    assert_eq!(web.parameters.get("env").unwrap().value, ParamValue::String("staging".into()));
    assert_eq!(web.parameters.get("debug").unwrap().value, ParamValue::Bool(true));
    assert_eq!(web.parameters.get("retries").unwrap().value, ParamValue::Int(3));
    // The secret is stored for dispatch, marked secret.
    let key = web.parameters.get("api_key").unwrap();
    assert!(key.secret);
    assert_eq!(key.value, ParamValue::String("s3cret".into()));
    let circle = stored.runs.iter().find(|r| r.target == "circle-build").unwrap();
    assert_eq!(circle.git_ref.tag.as_deref(), Some("v1.2.0"));
    assert_eq!(circle.git_ref.branch, None);
}

#[tokio::test]
async fn top_level_parameters_merge_under_overrides_and_defaults_fill_in() {
    let app = App::new().await;
    let ids = app
        .trigger(json!({
            "targets": ["web-e2e"],
            "parameters": {"retries": 2, "env": "qa"},
            "overrides": {"web-e2e": {"parameters": {"env": "staging"}}}
        }))
        .await;
    let run = app.store().get_run(&ids[0]).await.unwrap();
    assert_eq!(run.parameters.get("retries").unwrap().value, ParamValue::Int(2));
    assert_eq!(run.parameters.get("env").unwrap().value, ParamValue::String("staging".into()));
    // Neither branch nor tag: the target's default branch.
    assert_eq!(run.git_ref.branch.as_deref(), Some("main"));
    assert_eq!(run.parameters.get("api_key").unwrap().value, ParamValue::String("default-secret".into()));
}

/// Send `body` as admin and check the status, code, and that nothing was stored.
async fn refused(app: &App, body: Value, status: StatusCode, code: &str) -> Value {
    let before = app.run_count().await;
    let reply = app.post("/v1/triggers", ADMIN, body).await;
    reply.assert_error(status, code);
    assert_eq!(app.run_count().await, before, "nothing stored");
    reply.body
}

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let app = App::new().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/triggers")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"targets": ["web-e2e"],"#))
        .unwrap();
    let reply = app.send(req).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(reply.body["message"].as_str().unwrap().contains("line 1"), "{}", reply.text);
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_422_naming_the_field() {
    let app = App::new().await;
    let body = refused(&app, json!({"targets": "web-e2e"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_eq!(body["details"][0]["field"], "targets");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "parameter": {}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("unknown field `parameter`"), "{body}");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "ref": {"commit": "abc"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "ref.commit");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "labels": {"n": 1}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "labels.n");
}

#[tokio::test]
async fn a_non_json_content_type_is_415() {
    let app = App::new().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/triggers")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"targets":["web-e2e"]}"#))
        .unwrap();
    app.send(req).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn an_oversize_body_is_413() {
    let app = App::new().await;
    let body = json!({"targets": ["web-e2e"], "labels": {"big": "x".repeat(20 * 1024)}});
    let reply = refused(&app, body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(reply["message"].as_str().unwrap().contains("16384"), "{reply}");
}

#[tokio::test]
async fn unknown_targets_are_422_listing_the_known_ones() {
    let app = App::new().await;
    let body =
        refused(&app, json!({"targets": ["web-e2e", "nope"]}), StatusCode::UNPROCESSABLE_ENTITY, "unknown_target")
            .await;
    assert_eq!(body["details"][0]["field"], "targets[1]");
    let message = body["details"][0]["message"].as_str().unwrap();
    assert_eq!(message, "unknown target `nope` (known targets: circle-build, ship-deploy, web-e2e, web-smoke)");
}

#[tokio::test]
async fn target_list_problems_are_422() {
    let app = App::new().await;
    let body = refused(&app, json!({"targets": []}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_targets").await;
    assert_eq!(body["details"][0]["field"], "targets");
    let body =
        refused(&app, json!({"targets": ["web-e2e", "web-e2e"]}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_targets")
            .await;
    assert_eq!(body["details"][0]["field"], "targets[1]");
    let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    // Over the cap nothing else is looked at: one problem, however long the list.
    let body = refused(&app, json!({"targets": many}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_targets").await;
    assert_eq!(body["details"][0]["message"], "at most 100 targets per trigger, got 101");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "overrides": {"circle-build": {}}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_overrides",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "overrides.circle-build");
}

#[tokio::test]
async fn undeclared_and_mistyped_parameters_are_422_all_at_once() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "parameters": {"colour": "red", "retries": "many", "env": "prod", "api_key": 5}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameters",
    )
    .await;
    let fields: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["parameters.colour", "parameters.env", "parameters.retries"]);
    let text = body.to_string();
    assert!(text.contains("not declared"), "{text}");
    assert!(text.contains("expected integer, got \\\"many\\\""), "{text}");
    // A string parameter accepts the number 5, so api_key is no problem; its value never shows.
    let body = refused(
        &app,
        json!({"targets": ["web-smoke"], "parameters": {"api_key": {"nested": "hunter2"}}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameters",
    )
    .await;
    assert!(!body.to_string().contains("hunter2"), "{body}");
    assert_eq!(body["details"][0]["field"], "parameters.api_key");
}

#[tokio::test]
async fn a_missing_required_parameter_is_422() {
    let app = App::new().await;
    let body =
        refused(&app, json!({"targets": ["web-smoke"]}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters").await;
    assert!(body["message"].as_str().unwrap().contains("required string value is missing"), "{body}");
}

#[tokio::test]
async fn parameters_for_a_target_without_any_are_refused() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["web-e2e", "ship-deploy"], "parameters": {"env": "qa"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameters",
    )
    .await;
    assert_eq!(body["details"].as_array().unwrap().len(), 1);
    assert!(body["details"][0]["message"].as_str().unwrap().starts_with("target `ship-deploy`: "), "{body}");
}

#[tokio::test]
async fn refs_the_target_cannot_build_are_422() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["circle-build"], "ref": {"branch": "main", "sha": "abcdef1"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_ref",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "ref");
    assert!(body["message"].as_str().unwrap().contains("cannot pin a commit sha"), "{body}");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "overrides": {"ship-deploy": {"ref": {"tag": "v1"}}}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_overrides",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "overrides.ship-deploy");
    let body = refused(
        &app,
        json!({"targets": ["ship-deploy"], "ref": {"tag": "v1"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_ref",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("cannot build a tag"), "{body}");
    // The same sha is fine for a target that can pin it.
    app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main", "sha": "abcdef1"}})).await;
}

#[tokio::test]
async fn malformed_refs_are_422() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "ref": {"branch": "a", "tag": "b"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_ref",
    )
    .await;
    assert_eq!(body["details"][0]["message"], "give either `branch` or `tag`, not both");
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "ref": {"branch": "main", "sha": "xyz"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_ref",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "ref.sha");
}

#[tokio::test]
async fn long_refs_and_hidden_characters_are_422_naming_the_field() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "ref": {"branch": "b".repeat(256)}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_ref",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "ref.branch");
    assert_eq!(body["details"][0]["message"], "`branch` must be at most 255 bytes, got 256");
    // A right-to-left override makes `v1.0-rc` look like another tag; a zero-width space hides.
    for hidden in ["v1.0\u{202E}cr-", "main\u{200B}", "release\u{2066}x", "a\u{0}b"] {
        let body = refused(
            &app,
            json!({"targets": ["web-e2e"], "overrides": {"web-e2e": {"ref": {"tag": hidden}}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ref",
        )
        .await;
        assert_eq!(body["details"][0]["field"], "overrides.web-e2e.ref.tag", "{hidden:?}");
        assert!(body["message"].as_str().unwrap().contains("invisible formatting"), "{body}");
    }
    // Git's own rules apply too.
    let body = refused(
        &app,
        json!({"targets": ["web-e2e"], "ref": {"branch": "feature..x"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_ref",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "ref.branch");
    app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "b".repeat(255)}})).await;
}

/// The test catalog plus `web-e2e-2` … `web-e2e-4` (copies of `web-e2e`) and `vault`, which
/// declares a secret enum parameter `pin`: seven parameterized-or-not targets in all.
async fn app_with_seven_targets() -> App {
    use cigw_core::catalog::ConfiguredTarget;
    use cigw_core::{ParamType, ParameterSpec, ProviderKind};
    App::with_catalog(
        |s| s.server.body_limit_bytes = 1024 * 1024,
        |catalog, fake| {
            let web = catalog.targets["web-e2e"].spec.clone();
            for i in 2..=4 {
                let spec = cigw_core::TargetSpec { name: format!("web-e2e-{i}"), ..web.clone() };
                catalog.targets.insert(spec.name.clone(), ConfiguredTarget { spec, target: fake.clone() });
            }
            let pin = ParameterSpec {
                secret: true,
                allowed: Some(vec![ParamValue::String("alpha-7731".into()), ParamValue::String("omega-9912".into())]),
                ..api_support::param("pin", ParamType::String)
            };
            let vault = api_support::spec("vault", ProviderKind::Codefresh, vec![pin]);
            catalog.targets.insert("vault".into(), ConfiguredTarget { spec: vault, target: fake.clone() });
        },
    )
    .await
}

const SEVEN: [&str; 7] = ["web-e2e", "web-e2e-2", "web-e2e-3", "web-e2e-4", "web-smoke", "circle-build", "ship-deploy"];

#[tokio::test]
async fn a_huge_parameter_map_fanned_out_to_seven_targets_gets_a_small_422() {
    let app = app_with_seven_targets().await;
    let parameters: serde_json::Map<String, Value> = (0..95_000).map(|i| (format!("{i:x}"), json!(1))).collect();
    let request = json!({"targets": SEVEN, "parameters": parameters});
    assert!(serde_json::to_vec(&request).unwrap().len() < 1024 * 1024);
    let before = app.run_count().await;
    let reply = app.post("/v1/triggers", ADMIN, request).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters");
    assert_eq!(app.run_count().await, before, "nothing stored");
    assert!(reply.text.len() < 16 * 1024, "a {} byte answer", reply.text.len());
    assert_eq!(reply.body["details"][0]["field"], "parameters");
    assert_eq!(reply.body["details"][0]["message"], "at most 100 parameters, got 95000");
}

#[tokio::test]
async fn many_problems_list_the_first_ones_and_count_the_rest() {
    let app = app_with_seven_targets().await;
    // 100 undeclared names (within the cap) for seven targets, and `web-smoke` misses its
    // required `api_key`: 701 problems.
    let parameters: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("undeclared_{i:03}_{}", "x".repeat(100)), json!("v".repeat(500)))).collect();
    let reply = app.post("/v1/triggers", ADMIN, json!({"targets": SEVEN, "parameters": parameters})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters");
    assert!(reply.text.len() < 16 * 1024, "a {} byte answer", reply.text.len());
    let details = reply.body["details"].as_array().unwrap();
    assert_eq!(details.len(), 20);
    assert_eq!(reply.body["details_omitted"], 681);
    assert!(details[0]["field"].as_str().unwrap().starts_with("parameters.undeclared_000_"), "{}", details[0]);
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.starts_with("701 problems: `parameters.undeclared_000_"), "{message}");
    assert!(message.ends_with("; and 698 more"), "{message}");
    // Overrides are capped on their own, and after merging.
    let over: serde_json::Map<String, Value> = (0..101).map(|i| (format!("o{i}"), json!(1))).collect();
    let reply = app
        .post("/v1/triggers", ADMIN, json!({"targets": ["web-e2e"], "overrides": {"web-e2e": {"parameters": over}}}))
        .await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters");
    assert_eq!(reply.body["details"][0]["field"], "overrides.web-e2e.parameters");
    let top: serde_json::Map<String, Value> = (0..60).map(|i| (format!("t{i}"), json!(1))).collect();
    let over: serde_json::Map<String, Value> = (0..60).map(|i| (format!("o{i}"), json!(1))).collect();
    let reply = app
        .post(
            "/v1/triggers",
            ADMIN,
            json!({"targets": ["web-e2e"], "parameters": top, "overrides": {"web-e2e": {"parameters": over}}}),
        )
        .await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters");
    assert_eq!(
        reply.body["details"][0]["message"],
        "target `web-e2e`: at most 100 parameters, got 120 (request and override merged)"
    );
}

#[tokio::test]
async fn a_secret_parameter_never_shows_its_allowed_values_or_the_given_value() {
    let app = app_with_seven_targets().await;
    let reply =
        app.post("/v1/triggers", ADMIN, json!({"targets": ["vault"], "parameters": {"pin": "guess-4410"}})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters");
    for hidden in ["alpha-7731", "omega-9912", "guess-4410"] {
        assert!(!reply.text.contains(hidden), "{}", reply.text);
    }
    assert_eq!(reply.body["details"][0]["message"], "target `vault`: not one of the allowed values");
    let targets = app.get("/v1/targets", ADMIN).await;
    assert!(!targets.text.contains("alpha-7731"), "{}", targets.text);
}

#[tokio::test]
async fn mixed_problems_are_reported_together() {
    let app = App::new().await;
    let body = refused(
        &app,
        json!({"targets": ["circle-build", "web-e2e"], "ref": {"branch": "m", "sha": "abcdef1"},
               "overrides": {"web-e2e": {"parameters": {"retries": "x"}}}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["ref", "overrides.web-e2e.parameters.retries"]);
}

#[tokio::test]
async fn trigger_scopes_are_checked_per_target() {
    let app = App::new().await;
    let web_only = app.token("web-only", &["trigger:web-*"]).await;
    let reader = app.token("reader", &["read"]).await;
    let reply = app.post("/v1/triggers", &web_only, json!({"targets": ["web-e2e", "circle-build"]})).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(reply.body["message"], "this token lacks the scope `trigger:circle-build`");
    let reply = app.post("/v1/triggers", &reader, json!({"targets": ["web-e2e"]})).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(reply.body["message"], "this token lacks the scope `trigger`");
    // A token without any trigger scope is refused before its body is read.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/triggers")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    app.send(req).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(app.run_count().await, 0);
    // Unknown targets are only listed among those the token may trigger.
    let reply = app.post("/v1/triggers", &web_only, json!({"targets": ["web-nope"]})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_target");
    assert!(reply.body["message"].as_str().unwrap().contains("known targets: web-e2e, web-smoke)"), "{}", reply.text);
    let reply = app.post("/v1/triggers", &web_only, json!({"targets": ["web-e2e"]})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
}

async fn post_with_key(app: &App, key: &str, body: Value) -> api_support::Reply {
    let mut req = request(Method::POST, "/v1/triggers", Some(ADMIN), Some(body));
    req.headers_mut().insert("idempotency-key", key.parse().unwrap());
    app.send(req).await
}

#[tokio::test]
async fn idempotent_replay_and_key_reuse() {
    let app = App::new().await;
    let body = json!({"targets": ["web-e2e"], "parameters": {"retries": 1, "env": "qa"}});
    let first = post_with_key(&app, "deploy-42", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The same body with keys in another order replays the first answer.
    let same = json!({"parameters": {"env": "qa", "retries": 1}, "targets": ["web-e2e"]});
    let replay = post_with_key(&app, "deploy-42", same).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.text);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, first.body);
    assert_eq!(app.run_count().await, 1);
    // Another body with the same key conflicts.
    let other = post_with_key(&app, "deploy-42", json!({"targets": ["web-e2e"], "parameters": {"retries": 2}})).await;
    other.assert_error(StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(app.run_count().await, 1);
    // Keys are scoped to the token: another token may use the same key.
    let token = app.token("other", &["trigger"]).await;
    let mut req = request(Method::POST, "/v1/triggers", Some(&token), Some(body));
    req.headers_mut().insert("idempotency-key", "deploy-42".parse().unwrap());
    let reply = app.send(req).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert!(reply.headers.get("idempotent-replayed").is_none());
    assert_ne!(reply.body["trigger_id"], first.body["trigger_id"]);
    assert_eq!(app.run_count().await, 2);
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let app = App::new().await;
    for key in ["k".repeat(256), String::new()] {
        let reply = post_with_key(&app, &key, json!({"targets": ["web-e2e"]})).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
        assert_eq!(reply.body["details"][0]["field"], "Idempotency-Key");
    }
    let mut req = request(Method::POST, "/v1/triggers", Some(ADMIN), Some(json!({"targets": ["web-e2e"]})));
    req.headers_mut().insert("idempotency-key", axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
    app.send(req).await.assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn a_trigger_reads_back_with_its_runs_and_masked_secrets() {
    let app = App::new().await;
    let reply = app
        .post(
            "/v1/triggers",
            ADMIN,
            json!({"targets": ["web-smoke", "web-e2e"], "parameters": {"api_key": "hunter2"}, "labels": {"a": "b"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["trigger_id"].as_str().unwrap();
    let reader = app.token("reader", &["read"]).await;
    let got = app.get(&format!("/v1/triggers/{id}"), &reader).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert!(!got.text.contains("hunter2"), "{}", got.text);
    assert_eq!(got.body["id"], id);
    assert_eq!(got.body["requested_by"], "bootstrap-admin");
    assert_eq!(got.body["request"]["parameters"]["api_key"], "***");
    assert_eq!(got.body["labels"], json!({"a": "b"}));
    let runs = got.body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["parameters"]["api_key"] == "***"));
    assert!(runs.iter().all(|r| r["links"]["trigger"] == format!("/v1/triggers/{id}")));

    app.get("/v1/triggers/nope", &reader).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn cancelling_a_trigger_cancels_its_open_runs() {
    let app = App::new().await;
    let reply = app.post("/v1/triggers", ADMIN, json!({"targets": ["web-e2e", "circle-build"]})).await;
    let id = reply.body["trigger_id"].as_str().unwrap().to_string();
    let ids: Vec<String> =
        reply.body["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().into()).collect();
    app.finish(&ids[1], RunState::Failed).await;
    let reader = app.token("reader", &["read"]).await;
    app.post_empty(&format!("/v1/triggers/{id}/cancel"), &reader)
        .await
        .assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let canceller = app.token("canceller", &["cancel"]).await;
    let reply = app.post_empty(&format!("/v1/triggers/{id}/cancel"), &canceller).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let states: Vec<&str> =
        reply.body["runs"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["canceled", "failed"]);
    let again = app.post_empty(&format!("/v1/triggers/{id}/cancel"), &canceller).await;
    again.assert_error(StatusCode::CONFLICT, "trigger_finished");
}
