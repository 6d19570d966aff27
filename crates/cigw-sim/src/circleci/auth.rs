//! Who may call: CircleCI's personal API tokens, however the request carries one.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use base64::Engine;
use http::StatusCode;
use http::request::Parts;

use super::Shared;
use super::error::ApiError;

/// A request carrying an accepted token: `Circle-Token`, `Authorization: Bearer`, basic auth
/// with the token as user name, or the deprecated `circle-token` query parameter.
///
/// Handlers take it after their path and query extractors. Those with a body take
/// `Result<Caller, ApiError>` and check it first thing, so an oversized body is still refused
/// (413) before a missing token.
#[derive(Debug)]
pub(crate) struct Caller;

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let token = header("circle-token").or_else(|| {
            let auth = header("authorization")?;
            if let Some(b) = auth.strip_prefix("Bearer ") {
                return Some(b.trim().to_string());
            }
            let decoded = base64::engine::general_purpose::STANDARD.decode(auth.strip_prefix("Basic ")?.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            Some(text.split_once(':').map_or(text.clone(), |(u, _)| u.to_string()))
        });
        let token = token.or_else(|| {
            let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
            query.get("circle-token").cloned()
        });
        match token {
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "You must log in first.")),
            Some(t) if shared.config.lock().tokens.contains(&t) => Ok(Self),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid token provided.")),
        }
    }
}
