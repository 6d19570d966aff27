//! The page's files, embedded in the binary at build time (no build step, no CDN): served with
//! their content type, an `ETag`, and a Content-Security-Policy that allows only the gateway's
//! own scripts, styles and API.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Every embedded file: path under `/ui/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../ui/index.html")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../ui/app.css")),
    ("embed.js", "text/javascript; charset=utf-8", include_str!("../../ui/embed.js")),
    ("icon.svg", "image/svg+xml", include_str!("../../ui/icon.svg")),
    ("js/api.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/api.js")),
    ("js/app.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/app.js")),
    ("js/dashboard.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/dashboard.js")),
    ("js/format.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/format.js")),
    ("js/live.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/live.js")),
    ("js/run.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/run.js")),
    ("js/runs.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/runs.js")),
    ("js/targets.js", "text/javascript; charset=utf-8", include_str!("../../ui/js/targets.js")),
];

/// The page's policy: its own scripts, styles and API only; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /ui`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(|e| e.into_response())
}

/// `GET /ui/{path}`: one of the page's files.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let Some((_, content_type, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return Err(ApiError::not_found(format!("no file /ui/{path}")));
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(body.as_bytes()))[..16]);
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (*body).into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    // The page follows the binary: revalidate every time (a 304 while unchanged). The button
    // script is loaded by other sites and may be cached a little.
    let cache = if path == "embed.js" { "public, max-age=300" } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if path == "index.html" {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    }
    Ok(response)
}
