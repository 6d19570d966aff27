//! Every error the framework produces on its own (body too large, wrong content type, malformed
//! or absurdly nested JSON, wrong method, no route, unreadable path) reaches the client as the
//! API's JSON `{code, message}`, on every route.

mod api_support;

use api_support::{ADMIN, App, Reply};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

/// Send `body` to `path` with `content_type` (none when `None`) and the admin token.
async fn send(app: &App, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut builder =
        Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    app.send(builder.body(Body::from(body)).unwrap()).await
}

#[track_caller]
fn assert_json_error(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
    let content_type = reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/json"), "{what}: content type `{content_type}`: {}", reply.text);
    assert!(reply.body["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: {}", reply.text);
    assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", reply.text);
}

/// Routes that take a body.
const BODY_ROUTES: [&str; 3] = ["/v1/triggers", "/v1/tokens", "/callbacks/circleci/sandbox"];

#[tokio::test]
async fn an_oversized_body_is_a_json_413_on_every_route_that_takes_one() {
    let app = App::new().await; // body limit 16 KiB
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024)).into_bytes();
    for path in BODY_ROUTES {
        let reply = send(&app, Method::POST, path, Some("application/json"), big.clone()).await;
        assert_json_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, path);
        assert_eq!(reply.body["code"], "payload_too_large", "{path}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_json_415() {
    let app = App::new().await;
    for path in ["/v1/triggers", "/v1/tokens"] {
        let reply = send(&app, Method::POST, path, Some("text/plain"), b"hello".to_vec()).await;
        assert_json_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, path);
        let reply = send(&app, Method::POST, path, None, b"{}".to_vec()).await;
        assert_json_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, path);
    }
}

#[tokio::test]
async fn malformed_and_deeply_nested_json_is_a_json_400() {
    let app = App::with_settings(|s| s.server.body_limit_bytes = 1024 * 1024).await;
    let nested = "[".repeat(100_000).into_bytes();
    let nested_object = "{\"a\":".repeat(50_000).into_bytes();
    for path in ["/v1/triggers", "/v1/tokens"] {
        for (what, body) in
            [("truncated", b"{\"targets\": [".to_vec()), ("nested", nested.clone()), ("nested", nested_object.clone())]
        {
            let reply = send(&app, Method::POST, path, Some("application/json"), body).await;
            assert!(
                reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {what}: {}",
                reply.text
            );
            assert_json_error(&reply, reply.status, &format!("{path} {what}"));
        }
    }
    assert_eq!(app.run_count().await, 0, "nothing was accepted");
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_and_an_unknown_path_a_json_404() {
    let app = App::new().await;
    for (method, path) in [
        (Method::PUT, "/v1/triggers"),
        (Method::DELETE, "/healthz"),
        (Method::POST, "/readyz"),
        (Method::GET, "/callbacks/circleci/sandbox"),
        (Method::PATCH, "/v1/events"),
    ] {
        let reply = send(&app, method.clone(), path, None, vec![]).await;
        assert_json_error(&reply, StatusCode::METHOD_NOT_ALLOWED, &format!("{method} {path}"));
    }
    let reply = send(&app, Method::GET, "/v2/nothing", None, vec![]).await;
    assert_json_error(&reply, StatusCode::NOT_FOUND, "unknown path");
}

#[tokio::test]
async fn an_unreadable_path_parameter_is_a_json_400() {
    let app = App::new().await;
    // %FF is not UTF-8: the path extractor refuses it before any handler runs.
    for path in ["/v1/runs/%FF", "/v1/triggers/%FF", "/callbacks/circleci/%FF"] {
        let method = if path.starts_with("/callbacks") { Method::POST } else { Method::GET };
        let reply = send(&app, method, path, Some("application/json"), b"{}".to_vec()).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.text);
        assert_json_error(&reply, reply.status, path);
    }
}
