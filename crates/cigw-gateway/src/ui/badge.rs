//! `GET /badge/{target}.svg`: the state of a target's latest run on its default branch (or
//! `?branch=`) as a small SVG, for READMEs and wiki pages.
//!
//! Like any read it needs a `read` token or a web UI session, unless the target sets
//! `public_badge = true`. Badges are cached briefly (`Cache-Control`) and carry an `ETag`, so a
//! page polling them costs a 304 while nothing changed.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cigw_store::{RunFilter, RunRecord};
use sha2::{Digest, Sha256};

use crate::auth::AuthState;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a badge may be cached, in seconds.
pub const MAX_AGE: u32 = 30;
/// How many recent runs of the target are searched for the branch's latest one.
const SEARCHED_RUNS: u32 = 200;

/// The colour of each state's half of the badge (white text keeps a 4.5:1 contrast on each).
fn colour(state: &str) -> &'static str {
    match state {
        "succeeded" => "#1a7f37",
        "failed" | "error" => "#c62828",
        "running" | "queued" | "pending" => "#0b5cad",
        "blocked" | "canceling" => "#9a4d00",
        _ => "#5f6368",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Approximate width of `text` in 11px Verdana, which badges use.
fn text_width(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii_uppercase() || c == 'm' || c == 'w' { 9 } else { 7 }).sum::<usize>()
}

/// The SVG of a badge reading `label | value`.
pub fn render(label: &str, value: &str) -> String {
    let (lw, vw) = (text_width(label) + 12, text_width(value) + 12);
    let width = lw + vw;
    let (label_e, value_e) = (escape(label), escape(value));
    let fill = colour(value);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{label_e}: {value_e}"><title>{label_e}: {value_e}</title><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#3c4043"/><rect x="{lw}" width="{vw}" height="20" fill="{fill}"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label_e}</text><text x="{vx}" y="14">{value_e}</text></g></svg>"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

/// `GET /badge/{target}.svg[?branch=…]`.
pub async fn badge(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(file): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let Some(name) = file.strip_suffix(".svg") else {
        return Err(ApiError::not_found(format!("no badge `{file}` (badges are /badge/<target>.svg)")));
    };
    let public = state.settings.targets.get(name).is_some_and(|t| t.public_badge);
    if !public {
        auth.authenticate(&state, &parts).await?.require_read()?;
    }
    let Some(target) = state.target(name) else {
        return Err(ApiError::not_found(format!("no target `{name}`")));
    };
    let Query(pairs) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let mut branch = target.spec.default_branch.clone();
    for (key, value) in pairs {
        match key.as_str() {
            "branch" => {
                cigw_core::git_ref::check_ref_name(&value).map_err(|why| ApiError::bad_field("branch", why))?;
                branch = value;
            }
            other => return Err(ApiError::bad_field(other, "unknown query parameter (expected branch)")),
        }
    }
    let filter = RunFilter { target: Some(name.to_string()), limit: SEARCHED_RUNS, ..RunFilter::default() };
    let runs = state.store.list_runs(&filter, None).await?.runs;
    let latest: Option<&RunRecord> = runs.iter().find(|r| r.git_ref.branch.as_deref() == Some(branch.as_str()));
    let value = latest.map(|r| r.state.to_string()).unwrap_or_else(|| "no runs".to_string());
    let branch_hash = hex::encode(Sha256::digest(branch.as_bytes()));
    let run_id = latest.map(|r| r.id.as_str()).unwrap_or("none");
    let etag = format!("\"{run_id}-{}-{}\"", value.replace(' ', "_"), &branch_hash[..12]);
    let cache = format!("{}, max-age={MAX_AGE}", if public { "public" } else { "private" });
    let fresh = parts.headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { render(name, &value).into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache).map_err(ApiError::internal)?);
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    headers.insert(header::VARY, HeaderValue::from_static("Authorization, Cookie"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_escape_their_text_and_colour_the_state() {
        let svg = render("web<e2e>", "succeeded");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("web&lt;e2e&gt;: succeeded"));
        assert!(!svg.contains("<e2e>"));
        assert!(svg.contains(colour("succeeded")));
        assert_ne!(colour("failed"), colour("succeeded"));
        assert!(render("a", "failed").contains("#c62828"));
    }
}
