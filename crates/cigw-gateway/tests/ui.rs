//! The web UI's server side: sign-in sessions (cookie flags, CSRF, same-origin, sign-out,
//! expiry, revocation, restarts), the embedded page, button tokens with watch links, and badges.

mod api_support;

use std::time::Duration;

use api_support::{ADMIN, App, Reply};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cigw_core::RunState;
use cigw_core::config::TargetSettings;
use serde_json::{Value, json};

/// `POST /ui/session` with `token`; returns the reply.
async fn sign_in(app: &App, token: &str) -> Reply {
    let req = Request::post("/ui/session")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "cigw.test")
        .header(header::ORIGIN, "http://cigw.test")
        .body(Body::from(json!({ "token": token }).to_string()))
        .unwrap();
    app.send(req).await
}

/// The `name=value` of the session cookie a sign-in set.
fn cookie_of(reply: &Reply) -> String {
    let set = reply.headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// A browser-like request with the session cookie (same origin unless `origin` says otherwise).
fn with_cookie(method: Method, path: &str, cookie: &str, csrf: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, format!("theme=dark; {cookie}"))
        .header(header::HOST, "cigw.test")
        .header(header::ORIGIN, "http://cigw.test");
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    match body {
        Some(body) => {
            builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
        }
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn trigger_body() -> Value {
    json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_and_says_what_the_token_may_do() {
    let app = App::new().await;
    let reader = app.token("qa-reader", &["read", "trigger:web-*"]).await;
    let reply = sign_in(&app, &reader).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let set = reply.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["cigw_session=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert!(!set.contains(&reader) && !reply.text.contains(&reader), "the token is never echoed");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let body = &reply.body;
    assert_eq!(body["name"], "qa-reader");
    assert_eq!(body["can"], json!({"read": true, "trigger": true, "cancel": false, "approve": false, "admin": false}));
    assert_eq!(body["triggerable"], json!(["web-e2e", "web-smoke"]));
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);

    let cookie = cookie_of(&reply);
    let current = app.send(with_cookie(Method::GET, "/ui/session", &cookie, None, None)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text);
    assert_eq!(current.body["csrf_token"], body["csrf_token"]);

    // Only the hash of the cookie's secret is stored.
    let secret = cookie.trim_start_matches("cigw_session=");
    assert!(app.store().find_session(secret, chrono::Utc::now()).await.unwrap().is_none());
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let app = App::with_settings(|s| s.server.public_url = Some("https://cigw.example.com".into())).await;
    let reply = sign_in(&app, ADMIN).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(reply.headers[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
}

#[tokio::test]
async fn bad_sign_ins_are_refused_with_json() {
    let app = App::new().await;
    sign_in(&app, "cigw_short").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    sign_in(&app, &cigw_gateway::auth::generate_token())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let req = Request::post("/ui/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"token\": "))
        .unwrap();
    let reply = app.send(req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.body["message"].is_string());
    let req = Request::post("/ui/session")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "cigw.test")
        .header(header::ORIGIN, "http://evil.test")
        .body(Body::from(json!({ "token": ADMIN }).to_string()))
        .unwrap();
    app.send(req).await.assert_error(StatusCode::FORBIDDEN, "cross_origin");
    let reply = app.send(with_cookie(Method::GET, "/ui/session", "cigw_session=nope", None, None)).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // A huge body is refused before it is read whole (the app's body limit is 16 KiB).
    let huge = Request::post("/ui/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "token": "x".repeat(1 << 20) }).to_string()))
        .unwrap();
    let reply = app.send(huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text);
    assert!(reply.body["code"].is_string() && reply.body["message"].is_string(), "{}", reply.text);
}

#[tokio::test]
async fn unsafe_requests_with_the_cookie_need_the_csrf_token_and_the_same_origin() {
    let app = App::new().await;
    let reply = sign_in(&app, ADMIN).await;
    let cookie = cookie_of(&reply);
    let csrf = reply.body["csrf_token"].as_str().unwrap().to_string();

    let read = app.send(with_cookie(Method::GET, "/v1/runs", &cookie, None, None)).await;
    assert_eq!(read.status, StatusCode::OK, "reads need no CSRF token: {}", read.text);

    let post = |csrf: Option<&str>| with_cookie(Method::POST, "/v1/triggers", &cookie, csrf, Some(trigger_body()));
    app.send(post(None)).await.assert_error(StatusCode::FORBIDDEN, "csrf_token_missing");
    app.send(post(Some("0000"))).await.assert_error(StatusCode::FORBIDDEN, "csrf_token_invalid");
    assert_eq!(app.run_count().await, 0);
    let accepted = app.send(post(Some(&csrf))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let run = app.runs().await.remove(0);
    assert_eq!(run.requested_by, BOOTSTRAP);
    let trigger = app.store().get_trigger(&run.trigger_id).await.unwrap();
    assert_eq!(trigger.source, "ui", "a trigger from the signed-in page is recorded as coming from the web UI");

    // A form posted by another origin's page, which the browser sends with the cookie (same
    // site) but which cannot know the CSRF token.
    let form = Request::post("/v1/triggers")
        .header(header::COOKIE, &cookie)
        .header(header::HOST, "cigw.test")
        .header(header::ORIGIN, "http://cigw.test:9999")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("targets=web-e2e"))
        .unwrap();
    app.send(form).await.assert_error(StatusCode::FORBIDDEN, "cross_origin");
    // Even with a leaked CSRF token another origin is refused.
    let mut forged = post(Some(&csrf));
    forged.headers_mut().insert(header::ORIGIN, "http://evil.test".parse().unwrap());
    app.send(forged).await.assert_error(StatusCode::FORBIDDEN, "cross_origin");
    let mut fetched = post(Some(&csrf));
    fetched.headers_mut().remove(header::ORIGIN);
    fetched.headers_mut().insert("sec-fetch-site", "same-site".parse().unwrap());
    app.send(fetched).await.assert_error(StatusCode::FORBIDDEN, "cross_origin");
    assert_eq!(app.run_count().await, 1, "nothing refused was stored");
}

const BOOTSTRAP: &str = cigw_gateway::auth::BOOTSTRAP_ADMIN;

#[tokio::test]
async fn a_session_has_its_tokens_scopes() {
    let app = App::new().await;
    let reader = app.token("reader", &["read"]).await;
    let reply = sign_in(&app, &reader).await;
    let (cookie, csrf) = (cookie_of(&reply), reply.body["csrf_token"].as_str().unwrap().to_string());
    let run = app.trigger(trigger_body()).await.remove(0);
    let cancel = with_cookie(Method::POST, &format!("/v1/runs/{run}/cancel"), &cookie, Some(&csrf), None);
    app.send(cancel).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let trigger = with_cookie(Method::POST, "/v1/triggers", &cookie, Some(&csrf), Some(trigger_body()));
    app.send(trigger).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
}

#[tokio::test]
async fn signing_out_ends_the_session_everywhere() {
    let app = App::new().await;
    let reply = sign_in(&app, ADMIN).await;
    let (cookie, csrf) = (cookie_of(&reply), reply.body["csrf_token"].as_str().unwrap().to_string());
    let out = app.send(with_cookie(Method::DELETE, "/ui/session", &cookie, None, None)).await;
    out.assert_error(StatusCode::FORBIDDEN, "csrf_token_missing");
    let out = app.send(with_cookie(Method::DELETE, "/ui/session", &cookie, Some(&csrf), None)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    let cleared = out.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("cigw_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let again = app.send(with_cookie(Method::GET, "/v1/runs", &cookie, None, None)).await;
    again.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let again = app.send(with_cookie(Method::GET, "/ui/session", &cookie, None, None)).await;
    again.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn sessions_survive_a_restart_and_end_with_their_token() {
    let app = App::new().await;
    let token = app.token("qa", &["read", "trigger"]).await;
    let reply = sign_in(&app, &token).await;
    let cookie = cookie_of(&reply);

    // Another process over the same database (a restart, or another replica) knows the session.
    let restarted = cigw_gateway::build_router(app.state.clone());
    let response =
        tower::ServiceExt::oneshot(restarted, with_cookie(Method::GET, "/v1/runs", &cookie, None, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let id = app.store().list_tokens().await.unwrap().into_iter().find(|t| t.name == "qa").unwrap().id;
    let revoked = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(ADMIN), None).await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    let after = app.send(with_cookie(Method::GET, "/v1/runs", &cookie, None, None)).await;
    after.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn sessions_expire_after_the_session_ttl() {
    let app = App::with_settings(|s| s.auth.session_ttl = Duration::from_millis(300)).await;
    let reply = sign_in(&app, ADMIN).await;
    assert!(reply.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=1"), "a short ttl is rounded up");
    let cookie = cookie_of(&reply);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reply = app.send(with_cookie(Method::GET, "/v1/runs", &cookie, None, None)).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn the_page_and_its_files_are_embedded() {
    let app = App::new().await;
    let page = app.call(Method::GET, "/ui", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.text.contains("/ui/js/app.js"));
    for (path, kind) in [
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/embed.js", "text/javascript; charset=utf-8"),
    ] {
        let reply = app.call(Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], kind, "{path}");
        let etag = reply.headers[header::ETAG].clone();
        let req = Request::get(path).header(header::IF_NONE_MATCH, etag).body(Body::empty()).unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    app.call(Method::GET, "/ui/js/nope.js", None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.call(Method::GET, "/ui/../Cargo.toml", None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// A button token: trigger-only for `web-e2e`, from one origin, `per_minute` requests a minute.
async fn button_token(app: &App, per_minute: u32) -> String {
    app.token_with("button-web-e2e", &["trigger:web-e2e"], |t| {
        t.allowed_origins = vec!["https://qa.example".into()];
        t.rate_limit_per_minute = Some(per_minute);
    })
    .await
}

fn from_origin(method: Method, path: &str, token: &str, origin: &str, body: Option<Value>) -> Request<Body> {
    let mut req = api_support::request(method, path, Some(token), body);
    req.headers_mut().insert(header::ORIGIN, origin.parse().unwrap());
    req
}

#[tokio::test]
async fn a_button_token_triggers_and_follows_only_its_own_run() {
    let app = App::new().await;
    let button = button_token(&app, 30).await;
    let qa = "https://qa.example";
    let accepted = app.send(from_origin(Method::POST, "/v1/triggers", &button, qa, Some(trigger_body()))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let run = accepted.body["runs"][0]["id"].as_str().unwrap().to_string();

    let watch = app.send(from_origin(Method::POST, "/ui/watch", &button, qa, Some(json!({ "run_id": run })))).await;
    assert_eq!(watch.status, StatusCode::CREATED, "{}", watch.text);
    let url = watch.body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("/ui/watch/{run}?key=")) && !url.contains(&button), "{url}");

    // The token itself reads nothing.
    let read = app.send(from_origin(Method::GET, &format!("/v1/runs/{run}"), &button, qa, None)).await;
    read.assert_error(StatusCode::FORBIDDEN, "missing_scope");

    // The link streams that run's state until it ends.
    app.finish(&run, RunState::Succeeded).await;
    let stream = app.call(Method::GET, &url, None, None).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    assert_eq!(stream.headers[header::CONTENT_TYPE], "text/event-stream");
    let data: Value =
        serde_json::from_str(stream.text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["id"], run);
    assert_eq!(data["state"], "succeeded");
    assert_eq!(data["finished"], true);

    // Wrong keys, another run, and runs the token did not request give nothing.
    let other = app.trigger(trigger_body()).await.remove(0);
    let stolen = url.replace(&run, &other);
    app.call(Method::GET, &stolen, None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let bad_key = format!("/ui/watch/{run}?key=guess");
    app.call(Method::GET, &bad_key, None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let not_theirs =
        app.send(from_origin(Method::POST, "/ui/watch", &button, qa, Some(json!({ "run_id": other })))).await;
    not_theirs.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_button_token_is_limited_to_its_targets_origins_and_rate() {
    let app = App::new().await;
    let button = button_token(&app, 3).await;
    let other_target = json!({"targets": ["web-smoke"], "parameters": {"api_key": "k"}});
    let reply =
        app.send(from_origin(Method::POST, "/v1/triggers", &button, "https://qa.example", Some(other_target))).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let reply = app
        .send(from_origin(Method::POST, "/v1/triggers", &button, "https://evil.example", Some(trigger_body())))
        .await;
    reply.assert_error(StatusCode::FORBIDDEN, "origin_not_allowed");

    // CORS answers the allowed origin only.
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/triggers")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = app.send(preflight("https://qa.example")).await;
    assert_eq!(allowed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://qa.example");
    let refused = app.send(preflight("https://evil.example")).await;
    assert!(!refused.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    // The refused scope counted (the origin refusal did not): two more are accepted, then 429.
    for _ in 0..2 {
        let reply = app
            .send(from_origin(Method::POST, "/v1/triggers", &button, "https://qa.example", Some(trigger_body())))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    let reply =
        app.send(from_origin(Method::POST, "/v1/triggers", &button, "https://qa.example", Some(trigger_body()))).await;
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

fn public_badge(settings: &mut cigw_core::config::Settings) {
    let target: TargetSettings =
        serde_json::from_value(json!({"provider": "circleci", "account": "x", "public_badge": true})).unwrap();
    settings.targets.insert("circle-build".into(), target);
}

#[tokio::test]
async fn badges_show_the_latest_run_of_a_branch_and_are_cached() {
    let app = App::with_settings(public_badge).await;
    let reader = app.token("reader", &["read"]).await;
    app.call(Method::GET, "/badge/web-e2e.svg", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let none = app.get("/badge/web-e2e.svg", &reader).await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.text);
    assert_eq!(none.headers[header::CONTENT_TYPE], "image/svg+xml; charset=utf-8");
    assert_eq!(none.headers[header::CACHE_CONTROL], "private, max-age=30");
    assert!(none.text.starts_with("<svg") && none.text.contains("web-e2e: no runs"), "{}", none.text);

    let main = app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})).await.remove(0);
    app.finish(&main, RunState::Failed).await;
    let feature = app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "feature"}})).await.remove(0);
    app.finish(&feature, RunState::Succeeded).await;
    let badge = app.get("/badge/web-e2e.svg", &reader).await;
    assert!(badge.text.contains("web-e2e: failed"), "the default branch: {}", badge.text);
    let badge = app.get("/badge/web-e2e.svg?branch=feature", &reader).await;
    assert!(badge.text.contains("web-e2e: succeeded"), "{}", badge.text);

    let etag = badge.headers[header::ETAG].clone();
    let mut again = api_support::request(Method::GET, "/badge/web-e2e.svg?branch=feature", Some(&reader), None);
    again.headers_mut().insert(header::IF_NONE_MATCH, etag.clone());
    let cached = app.send(again).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers[header::ETAG], etag);
    let other_branch = app.get("/badge/web-e2e.svg", &reader).await;
    assert_ne!(other_branch.headers[header::ETAG], etag);

    let public = app.call(Method::GET, "/badge/circle-build.svg", None, None).await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.text);
    assert_eq!(public.headers[header::CACHE_CONTROL], "public, max-age=30");

    app.get("/badge/nope.svg", &reader).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/badge/web-e2e.png", &reader).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/badge/web-e2e.svg?branch=a..b", &reader).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    app.get("/badge/web-e2e.svg?colour=red", &reader).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn signing_out_ends_the_pages_open_event_stream() {
    use futures::StreamExt;
    let mut app = App::with_settings(|s| s.server.stream_token_check = Duration::from_secs(3600)).await;
    app.state.streams.poll_interval = Duration::from_millis(50);
    app.router = cigw_gateway::build_router(app.state.clone());
    let reply = sign_in(&app, ADMIN).await;
    let (cookie, csrf) = (cookie_of(&reply), reply.body["csrf_token"].as_str().unwrap().to_string());
    let run = app.trigger(trigger_body()).await.remove(0);
    let response = tower::ServiceExt::oneshot(
        app.router.clone(),
        with_cookie(Method::GET, "/v1/events?from=0", &cookie, None, None),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    while !seen.contains(&run) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let out = app.send(with_cookie(Method::DELETE, "/ui/session", &cookie, Some(&csrf), None)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    // Without a periodic check (an hour), only the sign-out can end the stream this soon.
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = body.next().await {} }).await;
    assert!(ended.is_ok(), "the stream of a signed-out session ended");
}

#[tokio::test]
async fn a_watch_link_opens_no_more_streams_than_a_token_may() {
    let app = App::with_settings(|s| s.server.max_event_streams_per_token = 1).await;
    let button = button_token(&app, 30).await;
    let qa = "https://qa.example";
    let accepted = app.send(from_origin(Method::POST, "/v1/triggers", &button, qa, Some(trigger_body()))).await;
    let run = accepted.body["runs"][0]["id"].as_str().unwrap().to_string();
    let watch = app.send(from_origin(Method::POST, "/ui/watch", &button, qa, Some(json!({ "run_id": run })))).await;
    let url = watch.body["url"].as_str().unwrap().to_string();
    let open =
        |url: &str| tower::ServiceExt::oneshot(app.router.clone(), api_support::request(Method::GET, url, None, None));

    // The run has not ended, so the first stream stays open while the second is asked for.
    let first = open(&url).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    app.call(Method::GET, &url, None, None).await.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_streams");
    drop(first);
    let again = open(&url).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "a closed stream gives its place back");
}
