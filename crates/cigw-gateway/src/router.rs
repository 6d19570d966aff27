//! All routes and the middleware around them.
//!
//! Layer order, outermost first (a request passes them top to bottom, a response bottom to top):
//! 1. `SetRequestId`: keep the caller's `x-request-id` or set a UUID;
//! 2. `Trace`: one span per request with the request id and the matched route;
//! 3. `PropagateRequestId`: echo the id in the response;
//! 4. `CatchPanic`: a panicking handler becomes a JSON 500;
//! 5. JSON for errors produced outside the handlers (the timeout's, the framework's rejections);
//! 6. `Timeout` (`server.request_timeout`) → 503;
//! 7. `Cors` (origins: the union of live tokens' allowed origins);
//! 8. `Compression`;
//! 9. the body limit (`server.body_limit_bytes`, enforced by the JSON extractor) and the
//!    [`AuthState`] extension.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::{
    IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, REQUEST_ID, chains, events, health, hooks, notifications, runs, schedules,
    targets, tokens, triggers,
};
use crate::auth::AuthState;
use crate::error::ApiError;
use crate::state::AppState;

/// The gateway's HTTP API with every middleware, for `state`. Resolves the bootstrap admin
/// token once (an unusable one is logged and disabled, see [`crate::auth::resolve_admin_token`]).
pub fn build_router(state: AppState) -> Router {
    let auth = Arc::new(AuthState::from_settings(&state.settings));
    build_router_with_auth(state, auth)
}

/// [`build_router`] with an explicit [`AuthState`], which follows the store's token and session
/// changes from now on.
pub fn build_router_with_auth(state: AppState, auth: Arc<AuthState>) -> Router {
    auth.follow_changes(&state.store);
    let body_limit = state.settings.server.body_limit_bytes;
    let timeout = state.settings.server.request_timeout;
    let routes = Router::new()
        .route(
            "/v1/triggers",
            post(triggers::create_trigger).layer(axum::middleware::from_fn(triggers::count_api_intake)),
        )
        .route("/v1/triggers/{id}", get(triggers::get_trigger))
        .route("/v1/triggers/{id}/cancel", post(triggers::cancel_trigger))
        .route("/v1/triggers/{id}/tree", get(chains::trigger_tree))
        .route("/v1/joins", get(chains::list_joins))
        .route("/v1/runs", get(runs::list_runs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/events", get(runs::run_events))
        .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
        .route("/v1/runs/{id}/rerun", post(runs::rerun_run))
        .route("/v1/runs/{id}/approve", post(runs::approve_run))
        .route("/v1/runs/{id}/deny", post(runs::deny_run))
        .route("/v1/runs/{id}/refresh", post(runs::refresh_run))
        .route("/v1/events", get(events::stream_events))
        .route("/v1/targets", get(targets::list_targets))
        .route("/v1/schedules", get(schedules::list_schedules))
        .route("/v1/hooks", get(hooks::list_hooks))
        .route("/v1/hooks/{name}/test", post(hooks::test_hook))
        .route("/v1/hooks/{name}/deliveries", get(hooks::list_deliveries))
        .route("/v1/hooks/{name}/deliveries/{delivery_id}/replay", post(hooks::replay_delivery))
        .route("/hooks/{name}", post(crate::hooks::receive))
        .route("/v1/notifications/deliveries", get(notifications::list_deliveries))
        .route("/v1/notifications/deliveries/{id}", get(notifications::get_delivery))
        .route("/v1/notifications/deliveries/{id}/redeliver", post(notifications::redeliver))
        .route("/v1/tokens", post(tokens::create_token).get(tokens::list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke_token))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/callbacks/{provider}/{account}", post(crate::callbacks::receive))
        .route("/openapi.json", get(openapi_json))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // With `server.metrics_listen` set, /metrics is served only there (see `metrics_router`).
    let routes = match state.settings.server.metrics_listen {
        None => routes.route("/metrics", get(scrape_metrics)),
        Some(_) => routes,
    };

    routes
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), route, request_id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::middleware::map_response(json_errors))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
                .layer(cors(state.clone(), auth.clone()))
                .layer(CompressionLayer::new())
                .layer(axum::extract::DefaultBodyLimit::max(body_limit))
                .layer(Extension(auth)),
        )
        .with_state(state)
}

/// `/metrics` alone, for the separate `server.metrics_listen` listener.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(scrape_metrics)).fallback(not_found).with_state(state)
}

fn cors(state: AppState, auth: Arc<AuthState>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::async_predicate(move |origin: HeaderValue, _parts| {
            let (state, auth) = (state.clone(), auth.clone());
            async move {
                match origin.to_str() {
                    Ok(origin) => auth.origin_allowed(&state, origin).await,
                    Err(_) => false,
                }
            }
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, IDEMPOTENCY_KEY, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER, IDEMPOTENT_REPLAYED])
        .max_age(Duration::from_secs(600))
}

async fn scrape_metrics(State(state): State<AppState>) -> Response {
    state.metrics.scrape(state.store.as_ref()).await
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::Status {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}

fn panic_response(cause: Box<dyn Any + Send + 'static>) -> Response {
    let cause = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("a handler panicked");
    ApiError::internal(format!("panic: {cause}")).into_response()
}

/// Longest framework error text kept as the `message` of its JSON form.
const MAX_REJECTION_TEXT: usize = 1024;

/// Errors produced by middleware (timeout, …) carry no body, and the framework's own rejections
/// (body too large, wrong content type, unreadable path or query) are plain text: give them all
/// the API's JSON shape, keeping a short plain-text explanation as the message.
async fn json_errors<B>(response: Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(axum::body::Body::new);
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_json = content_type.starts_with("application/json") || content_type.contains("+json");
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let plain_text =
        content_type.starts_with("text/plain") && !response.headers().contains_key(header::CONTENT_ENCODING);
    let bodiless = content_type.is_empty();
    let (parts, body) = response.into_parts();
    let text = match plain_text {
        true => axum::body::to_bytes(body, MAX_REJECTION_TEXT)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
        false => None,
    };
    let (code, default_message) = match status {
        StatusCode::SERVICE_UNAVAILABLE if bodiless => {
            ("timeout", "the request took longer than the server's time limit")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported content type"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "the request cannot be processed"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let message = text.unwrap_or_else(|| default_message.to_string());
    let mut json = ApiError::Status { status, code, message }.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_ENCODING {
            json.headers_mut().entry(name).or_insert_with(|| value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn boom() -> &'static str {
        panic!("secret detail")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_json_500_without_the_cause() {
        let app = Router::new().route("/boom", get(boom)).layer(CatchPanicLayer::custom(panic_response));
        let response = app.oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(body["code"], "internal");
        assert!(!body.to_string().contains("secret detail"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_time_limit_answers_json_503() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .layer(
                ServiceBuilder::new()
                    .layer(axum::middleware::map_response(json_errors))
                    .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1))),
            );
        let response = app.oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_json(response).await["code"], "timeout");
    }
}
