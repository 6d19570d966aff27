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

/// A request with a live bearer token whose user is within its per-minute budget, addressed to
/// the organization (the `{org}` path segment). Checked in that order, then the handler asks for
/// its scope with [`Caller::require`]. Handlers take it after their path and query extractors.
#[derive(Debug)]
pub(crate) struct Caller {
    scopes: Vec<String>,
}

impl Caller {
    /// 403 unless the user holds `scope`.
    pub(crate) fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "You are not authorized to perform this action"))
        }
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
        let now = sim.harness.clock().now();
        let mut state = sim.state.lock();
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized");
        let Some(SimToken { email, expires_at }) = token.and_then(|t| state.tokens.get(t)).cloned() else {
            return Err(unauthorized());
        };
        if now >= expires_at {
            return Err(unauthorized());
        }
        if over_budget(&mut state, &email, now) {
            return Err(ApiError::RateLimited);
        }
        if !org.eq_ignore_ascii_case(ORGANIZATION_UUID) {
            return Err(ApiError::not_found("organization not found"));
        }
        let scopes = state.users.get(&email).map(|u| u.scopes.clone()).unwrap_or_default();
        Ok(Self { scopes })
    }
}
