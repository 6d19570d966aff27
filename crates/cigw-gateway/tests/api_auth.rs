//! Tokens and authentication (401 vs 403, expiry, revocation, rate limit, origins), CORS,
//! request ids, health, targets and the OpenAPI document.

mod api_support;

use api_support::{ADMIN, App, in_secs, request};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_401() {
    let app = App::new().await;
    let reply = app.call(Method::GET, "/v1/runs", None, None).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(reply.body["message"].as_str().unwrap().contains("missing"), "{}", reply.text);

    for value in
        ["Basic dXNlcjpwYXNz", "Bearer", "Bearer cigw_short", "Bearer ghp_0123456789012345678901234567890123456789012"]
    {
        let req = Request::builder().uri("/v1/runs").header(header::AUTHORIZATION, value).body(Body::empty()).unwrap();
        let reply = app.send(req).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let unknown = cigw_gateway::auth::generate_token();
    let reply = app.get("/v1/runs", &unknown).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(reply.body["message"], "unknown or revoked token");
    // Refused before the body is read: nothing stored.
    let reply = app.call(Method::POST, "/v1/triggers", None, Some(json!({"targets": ["web-e2e"]}))).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn expired_tokens_are_401() {
    let app = App::new().await;
    let token = app.token_with("old", &["admin"], |t| t.expires_at = Some(in_secs(-5))).await;
    let reply = app.post("/v1/triggers", &token, json!({"targets": ["web-e2e"]})).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(reply.body["message"], "token `old` has expired");
    assert_eq!(app.run_count().await, 0);
    let fresh = app.token_with("fresh", &["read"], |t| t.expires_at = Some(in_secs(3600))).await;
    assert_eq!(app.get("/v1/runs", &fresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_bootstrap_admin_token_has_every_scope_and_only_its_exact_value_works() {
    let app = App::new().await;
    assert_eq!(app.get("/v1/tokens", ADMIN).await.status, StatusCode::OK);
    let mut near = ADMIN.to_string();
    near.pop();
    near.push('x');
    app.get("/v1/tokens", &near).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // Without a configured admin token nothing is admin.
    let app = App::with_settings(|s| s.auth.admin_token = None).await;
    app.get("/v1/tokens", ADMIN).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn tokens_are_created_shown_once_listed_and_revoked() {
    let app = App::new().await;
    let reply = app
        .post(
            "/v1/tokens",
            ADMIN,
            json!({"name": "qa-ui", "scopes": ["read", "trigger:web-*"], "expires_in": "30d",
                   "allowed_origins": ["https://qa.example.com"], "rate_limit_per_minute": 100}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let secret = reply.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("cigw_") && secret.len() >= 48, "{secret}");
    let id = reply.body["id"].as_str().unwrap().to_string();
    assert_eq!(reply.body["scopes"], json!(["read", "trigger:web-*"]));
    assert!(reply.body["expires_at"].is_string());

    // Only the hash is stored.
    let stored = app.store().list_tokens().await.unwrap();
    assert_eq!(stored[0].hash, cigw_gateway::auth::hash_token(&secret));
    assert_ne!(stored[0].hash, secret);

    // The secret works, with its scopes.
    assert_eq!(app.get("/v1/runs", &secret).await.status, StatusCode::OK);
    app.get("/v1/tokens", &secret).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert!(app.store().list_tokens().await.unwrap()[0].last_used_at.is_some());

    // Listed without the secret or hash.
    let list = app.get("/v1/tokens", ADMIN).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains(&secret) && !list.text.contains(&stored[0].hash), "{}", list.text);
    assert_eq!(list.body["tokens"][0]["name"], "qa-ui");
    assert!(list.body["tokens"][0]["last_used_at"].is_string());
    assert!(list.body["tokens"][0].get("secret").is_none());

    // A second live token with the same name conflicts.
    let dup = app.post("/v1/tokens", ADMIN, json!({"name": "qa-ui", "scopes": ["read"]})).await;
    dup.assert_error(StatusCode::CONFLICT, "token_name_taken");

    // Revoked: refused from now on, and gone from the list.
    let del = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    let reply = app.get("/v1/runs", &secret).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(app.get("/v1/tokens", ADMIN).await.body["tokens"].as_array().unwrap().is_empty());
    let again = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    again.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_token_requests_are_422_and_non_admins_403() {
    let app = App::new().await;
    let reply = app
        .post(
            "/v1/tokens",
            ADMIN,
            json!({"name": "x", "scopes": ["read", "write"], "expires_in": "1h", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_token_request");
    let fields: Vec<&str> =
        reply.body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["scopes[1]", "expires_in"]);
    assert!(reply.text.contains("unknown scope `write`"), "{}", reply.text);
    let reply = app.post("/v1/tokens", ADMIN, json!({"name": "x"})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(app.store().list_tokens().await.unwrap().is_empty());

    let reader = app.token("reader", &["read", "trigger", "cancel", "approve"]).await;
    let reply = app.post("/v1/tokens", &reader, json!({"name": "y", "scopes": ["admin"]})).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    assert_eq!(reply.body["message"], "this token lacks the scope `admin`");
    app.call(Method::DELETE, "/v1/tokens/any", Some(&reader), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "missing_scope");
}

#[tokio::test]
async fn a_token_request_with_thousands_of_bad_values_gets_a_small_422() {
    let app = App::with_settings(|s| s.server.body_limit_bytes = 1024 * 1024).await;
    let origins: Vec<String> = (0..3000).map(|i| format!("ftp://{i}.{}", "o".repeat(200))).collect();
    let reply =
        app.post("/v1/tokens", ADMIN, json!({"name": "n", "scopes": ["read"], "allowed_origins": origins})).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_token_request");
    assert!(reply.text.len() < 16 * 1024, "a {} byte answer", reply.text.len());
    assert_eq!(reply.body["details"].as_array().unwrap().len(), 20);
    assert_eq!(reply.body["details_omitted"], 2980);
    assert_eq!(reply.body["details"][0]["field"], "allowed_origins[0]");
}

#[tokio::test]
async fn the_per_token_rate_limit_answers_429_with_retry_after() {
    let app = App::new().await;
    let token = app.token_with("limited", &["read"], |t| t.rate_limit_per_minute = Some(2)).await;
    assert_eq!(app.get("/v1/targets", &token).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/targets", &token).await.status, StatusCode::OK);
    // The announcement of the token's creation reaches the auth caches meanwhile; it must not
    // start the token's count afresh.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reply = app.get("/v1/targets", &token).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Other tokens are not affected.
    assert_eq!(app.get("/v1/targets", ADMIN).await.status, StatusCode::OK);
}

fn with_origin(mut req: Request<Body>, origin: &str) -> Request<Body> {
    req.headers_mut().insert(header::ORIGIN, origin.parse().unwrap());
    req
}

#[tokio::test]
async fn tokens_with_allowed_origins_are_refused_from_other_origins() {
    let app = App::new().await;
    let ui = app.token_with("ui", &["read"], |t| t.allowed_origins = vec!["https://qa.example.com".into()]).await;
    let ok = app.send(with_origin(request(Method::GET, "/v1/runs", Some(&ui), None), "https://qa.example.com")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://qa.example.com");
    let bad = app.send(with_origin(request(Method::GET, "/v1/runs", Some(&ui), None), "https://evil.example")).await;
    bad.assert_error(StatusCode::FORBIDDEN, "origin_not_allowed");
    assert!(bad.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    // Without an Origin header (not a browser) the token works.
    assert_eq!(app.get("/v1/runs", &ui).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_preflight_allows_the_union_of_live_tokens_origins() {
    let app = App::new().await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/triggers")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .body(Body::empty())
            .unwrap()
    };
    // No token allows it yet.
    let reply = app.send(preflight("https://qa.example.com")).await;
    assert!(reply.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{:?}", reply.headers);

    // Creating a token through the API refreshes the allowed set at once.
    let created = app
        .post(
            "/v1/tokens",
            ADMIN,
            json!({"name": "ui", "scopes": ["trigger"], "allowed_origins": ["https://qa.example.com"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let reply = app.send(preflight("https://qa.example.com")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://qa.example.com");
    let methods = reply.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_string();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = reply.headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("idempotency-key") && allowed.contains("authorization"), "{allowed}");
    let other = app.send(preflight("https://evil.example")).await;
    assert!(other.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

    // Revoking it removes the origin.
    let id = created.body["id"].as_str().unwrap();
    app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    let reply = app.send(preflight("https://qa.example.com")).await;
    assert!(reply.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = App::new().await;
    let mut req = request(Method::GET, "/healthz", None, None);
    req.headers_mut().insert("x-request-id", "trace-me-123".parse().unwrap());
    let reply = app.send(req).await;
    assert_eq!(reply.headers["x-request-id"], "trace-me-123");
    let reply = app.call(Method::GET, "/v1/runs", None, None).await;
    let generated = reply.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = App::new().await;
    let reply = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((reply.status, reply.body.clone()), (StatusCode::OK, json!({"status": "ok"})));
    let reply = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((reply.status, reply.body.clone()), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = App::new().await;
    app.get("/v2/nothing", ADMIN).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.call(Method::PUT, "/v1/runs", Some(ADMIN), None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn targets_list_parameters_with_masked_secret_defaults_and_capabilities() {
    let app = App::new().await;
    let reader = app.token("reader", &["read"]).await;
    let reply = app.get("/v1/targets", &reader).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains("default-secret"), "{}", reply.text);
    let targets = reply.body["targets"].as_array().unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["circle-build", "ship-deploy", "web-e2e", "web-smoke"]);
    let web = &targets[2];
    assert_eq!(web["provider"], "circleci");
    assert_eq!(web["locator"], "fake/target");
    assert_eq!(web["default_branch"], "main");
    let env = web["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "env").unwrap();
    assert_eq!(env["enum"], json!(["qa", "staging"]));
    assert_eq!(env["default"], "qa");
    let key = web["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "api_key").unwrap();
    assert_eq!(key["secret"], true);
    assert_eq!(key["default"], "***");
    assert_eq!(targets[0]["capabilities"]["pin_sha"], false);
    assert_eq!(targets[0]["capabilities"]["rerun_failed_only"], true);
    assert_eq!(targets[1]["capabilities"]["tag"], false);
}

#[tokio::test]
async fn the_openapi_document_matches_its_snapshot() {
    let app = App::new().await;
    let reply = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let paths: Vec<&String> = reply.body["paths"].as_object().unwrap().keys().collect();
    for path in ["/v1/triggers", "/v1/runs/{id}/rerun", "/v1/tokens/{id}", "/readyz"] {
        assert!(paths.iter().any(|p| *p == path), "{path} in {paths:?}");
    }
    insta::assert_json_snapshot!("openapi", reply.body, { ".info.version" => "[version]" });
}

/// The constraints schemathesis found missing (issue 12, defect 15) stay in the document: value
/// types of declared parameters, request limits, query ranges, and every status a route can
/// answer (the middleware's and the token check's included).
#[tokio::test]
async fn the_openapi_document_states_the_constraints_the_server_checks() {
    let app = App::new().await;
    let doc = app.call(Method::GET, "/openapi.json", None, None).await.body;
    let schemas = &doc["components"]["schemas"];
    let view = &schemas["ParameterView"]["properties"];
    assert_eq!(view["enum"]["items"]["$ref"], "#/components/schemas/ParameterValue", "{view}");
    let value_types: Vec<&Value> =
        schemas["ParameterValue"]["oneOf"].as_array().unwrap().iter().map(|s| &s["type"]).collect();
    assert_eq!(value_types, [&json!("string"), &json!("integer"), &json!("boolean")]);
    let token = &schemas["CreateTokenRequest"]["properties"];
    assert_eq!(token["scopes"]["minItems"], 1);
    assert_eq!(token["rate_limit_per_minute"]["maximum"], 100_000);
    let trigger = &schemas["TriggerRequest"]["properties"];
    assert_eq!(trigger["targets"]["minItems"], 1);
    assert_eq!(trigger["targets"]["maxItems"], 100);
    assert_eq!(trigger["parameters"]["maxProperties"], 100);
    assert_eq!(trigger["parameters"]["propertyNames"]["maxLength"], 128);
    assert_eq!(trigger["labels"]["maxProperties"], 64);
    assert_eq!(schemas["RefRequest"]["properties"]["branch"]["maxLength"], 255);
    assert_eq!(schemas["ErrorBody"]["properties"]["details"]["maxItems"], 20);

    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))["schema"]
            .clone()
    };
    assert_eq!(param("/v1/events", "last_event_id")["minimum"], 0);
    assert_eq!(param("/v1/events", "from")["minimum"], 0);
    assert_eq!(param("/v1/runs", "limit")["maximum"], 1000);
    assert_eq!(param("/v1/runs", "cursor")["minLength"], 1);
    assert_eq!(param("/v1/runs/{id}", "wait")["maximum"], 60);

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            let mut wanted = vec!["500", "503"];
            if op.get("security").is_some() {
                wanted.extend(["401", "403", "429"]);
            }
            if op.get("requestBody").is_some() {
                wanted.extend(["400", "413", "415", "422"]);
            }
            for status in wanted {
                assert!(
                    statuses.iter().any(|s| *s == status),
                    "{method} {path} does not document {status}: {statuses:?}"
                );
            }
        }
    }
}
