//! Who may call: Codefresh API keys, sent raw as `Authorization` or as `x-access-token`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::header;
use http::request::Parts;

use super::Shared;
use super::error::ApiError;

/// A request carrying an accepted, unrestricted key. The router checks it on every `/api` route
/// before anything else, the path, query, body and method (405) included.
#[derive(Debug)]
pub(crate) struct Caller;

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .or_else(|| parts.headers.get("x-access-token"))
            .and_then(|v| v.to_str().ok());
        let state = shared.state.lock();
        match key {
            Some(k) if state.restricted_keys.contains(k) => Err(ApiError::forbidden()),
            Some(k) if state.api_keys.contains(k) => Ok(Self),
            _ => Err(ApiError::Unauthorized),
        }
    }
}
