//! Who may call: basic auth on `/v2/auth` trades an API user's password for a bearer token that
//! expires (on the harness clock); every other route takes the token.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use super::error::ApiError;
use super::model::{SimToken, State as SimState};
use super::{CodeshipSim, ORGANIZATION_NAME, ORGANIZATION_UUID};

const TWO_FACTOR_MESSAGE: &str =
    "Your account has two-factor authentication enabled, which is not possible to support with the API.";

/// Count one request of `email` in its minute; `true` when it is over the budget.
fn over_budget(state: &mut SimState, email: &str, now: DateTime<Utc>) -> bool {
    let minute = now.timestamp().div_euclid(60);
    let limit = state.config.rate_limit_per_minute;
    let window = state.windows.entry(email.to_string()).or_insert((minute, 0));
    if window.0 != minute {
        *window = (minute, 0);
    }
    window.1 += 1;
    window.1 > limit
}

/// `POST /v2/auth`: checks in the order user, budget, password, two-factor.
pub(crate) async fn login(State(sim): State<CodeshipSim>, headers: HeaderMap) -> Response {
    let now = sim.harness.clock().now();
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(e, p)| (e.to_string(), p.to_string())));
    let unauthorized = || (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "Unauthorized"}))).into_response();
    let Some((email, password)) = credentials else { return unauthorized() };
    let mut state = sim.state.lock();
    let Some(user) = state.users.get(&email).cloned() else { return unauthorized() };
    if over_budget(&mut state, &email, now) {
        return ApiError::RateLimited.into_response();
    }
    if user.password != password {
        return unauthorized();
    }
    if user.two_factor {
        return (StatusCode::OK, axum::Json(json!({"error": TWO_FACTOR_MESSAGE}))).into_response();
    }
    let token = format!("{:032x}", rand::random::<u128>());
    let expires_at = now + chrono::Duration::from_std(state.config.token_lifetime).unwrap_or(chrono::Duration::MAX);
    state.tokens.insert(token.clone(), SimToken { email, expires_at });
    axum::Json(json!({
        "access_token": token,
        "expires_at": expires_at.timestamp(),
        "organizations": [{"name": ORGANIZATION_NAME, "scopes": user.scopes, "uuid": ORGANIZATION_UUID}],
    }))
    .into_response()
}

/// A request with a live bearer token, and the organization it addresses (the `{org}` path
/// segment). What the caller may do there is checked by [`Caller::require`], first thing in the
/// handler: the order of checks is token, expiry, per-minute budget, organization, scope.
///
/// Handlers take it after their path and query extractors. Those with a body take
/// `Result<Caller, ApiError>`, so an oversized body is still refused (413) before a bad token.
#[derive(Debug)]
pub(crate) struct Caller {
    email: String,
    org: String,
}

impl Caller {
    /// Count the request against the user's budget (403 `Rate Limit Exceeded` past it), then
    /// 404 for another organization and 403 unless the user holds `scope`.
    pub(crate) fn require(&self, sim: &CodeshipSim, scope: &str) -> Result<(), ApiError> {
        let now = sim.harness.clock().now();
        let mut state = sim.state.lock();
        if over_budget(&mut state, &self.email, now) {
            return Err(ApiError::RateLimited);
        }
        if !self.org.eq_ignore_ascii_case(ORGANIZATION_UUID) {
            return Err(ApiError::not_found("organization not found"));
        }
        if !state.users.get(&self.email).is_some_and(|u| u.scopes.iter().any(|s| s == scope)) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "You are not authorized to perform this action"));
        }
        Ok(())
    }
}

impl FromRequestParts<CodeshipSim> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, sim: &CodeshipSim) -> Result<Self, ApiError> {
        let org = Path::<HashMap<String, String>>::from_request_parts(parts, sim)
            .await
            .ok()
            .and_then(|Path(params)| params.get("org").cloned())
            .unwrap_or_default();
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let now = sim.harness.clock().now();
        let state = sim.state.lock();
        match token.and_then(|t| state.tokens.get(t)) {
            Some(SimToken { email, expires_at }) if now < *expires_at => Ok(Self { email: email.clone(), org }),
            _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")),
        }
    }
}
