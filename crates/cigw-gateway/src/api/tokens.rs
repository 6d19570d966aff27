//! `/v1/tokens` (scope `admin`): create a token (its secret is shown once), list, revoke.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use cigw_store::{NewToken, StoreError, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiJson;
use crate::auth::{self, AuthState, BOOTSTRAP_ADMIN, Principal, Scope};
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::state::AppState;

/// Highest per-token rate limit accepted.
const MAX_RATE_PER_MINUTE: u32 = 100_000;
/// Longest token name.
const MAX_NAME: usize = 100;

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Unique name among live tokens (1 to 100 letters, digits, `.`, `_`, `-`, `@`, `:`; not
    /// `bootstrap-admin`).
    #[schema(pattern = "^[A-Za-z0-9._@:-]{1,100}$")]
    pub name: String,
    /// `read`, `trigger`, `trigger:<glob>`, `cancel`, `approve`, `admin` (at least one).
    #[schema(min_items = 1)]
    pub scopes: Vec<String>,
    /// Lifetime, e.g. `30d`, `12h` (give this or `expires_at`, not both).
    pub expires_in: Option<String>,
    /// Expiry time (RFC 3339), in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// Browser origins (`https://host[:port]`) allowed to use the token.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Requests per minute allowed for this token.
    #[schema(minimum = 1, maximum = 100_000)]
    pub rate_limit_per_minute: Option<u32>,
}

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Allowed browser origins.
    pub allowed_origins: Vec<String>,
    /// Requests per minute.
    pub rate_limit_per_minute: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last successful use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            expires_at: t.expires_at,
            allowed_origins: t.allowed_origins,
            rate_limit_per_minute: t.rate_limit_per_minute,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A created token, with its secret: shown this once, never again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret to send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// The live tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenList {
    /// By name.
    pub tokens: Vec<TokenView>,
}

fn check(req: &CreateTokenRequest, now: DateTime<Utc>) -> Result<NewToken, ApiError> {
    let mut problems = Vec::new();
    let name = req.name.trim();
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'))
    {
        problems.push(FieldProblem::new(
            "name",
            format!("expected 1 to {MAX_NAME} letters, digits, `.`, `_`, `-`, `@` or `:`"),
        ));
    } else if name == BOOTSTRAP_ADMIN {
        problems
            .push(FieldProblem::new("name", format!("`{BOOTSTRAP_ADMIN}` is reserved for the configured admin token")));
    }
    if req.scopes.is_empty() {
        problems.push(FieldProblem::new("scopes", "give at least one scope"));
    }
    let mut scopes: Vec<String> = Vec::new();
    for (i, s) in req.scopes.iter().enumerate() {
        match Scope::parse(s) {
            Ok(_) if !scopes.contains(s) => scopes.push(s.clone()),
            Ok(_) => {}
            Err(message) => problems.push(FieldProblem::new(format!("scopes[{i}]"), message)),
        }
    }
    let expires_at = match (&req.expires_in, req.expires_at) {
        (Some(_), Some(_)) => {
            problems.push(FieldProblem::new("expires_in", "give `expires_in` or `expires_at`, not both"));
            None
        }
        (Some(text), None) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => {
                chrono::Duration::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).or_else(|| {
                    problems.push(FieldProblem::new("expires_in", "too long"));
                    None
                })
            }
            _ => {
                problems.push(FieldProblem::new(
                    "expires_in",
                    format!("expected a positive duration such as `30d` or `12h`, got `{text}`"),
                ));
                None
            }
        },
        (None, Some(at)) => {
            if at <= now {
                problems.push(FieldProblem::new("expires_at", "must be in the future"));
            }
            Some(at)
        }
        (None, None) => None,
    };
    let mut allowed_origins: Vec<String> = Vec::new();
    for (i, o) in req.allowed_origins.iter().enumerate() {
        match auth::parse_origin(o) {
            Ok(o) if !allowed_origins.contains(&o) => allowed_origins.push(o),
            Ok(_) => {}
            Err(message) => problems.push(FieldProblem::new(format!("allowed_origins[{i}]"), message)),
        }
    }
    if let Some(rate) = req.rate_limit_per_minute
        && !(1..=MAX_RATE_PER_MINUTE).contains(&rate)
    {
        problems.push(FieldProblem::new(
            "rate_limit_per_minute",
            format!("expected 1 to {MAX_RATE_PER_MINUTE}, got {rate}"),
        ));
    }
    if !problems.is_empty() {
        let message = problems.iter().map(|p| format!("`{}`: {}", p.field, p.message)).collect::<Vec<_>>().join("; ");
        return Err(ApiError::unprocessable("invalid_token_request", message, problems));
    }
    Ok(NewToken {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        hash: String::new(),
        scopes,
        expires_at,
        allowed_origins,
        rate_limit_per_minute: req.rate_limit_per_minute,
        created_at: now,
    })
}

/// Create a token. The secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "A live token has this name"),
        (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    principal: Principal,
    body: Result<ApiJson<CreateTokenRequest>, ApiError>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    principal.require_admin()?;
    let ApiJson(req) = body?;
    let mut new = check(&req, state.now())?;
    let secret = auth::generate_token();
    new.hash = auth::hash_token(&secret);
    let record = state.store.create_token(new).await.map_err(|e| match e {
        StoreError::Conflict { .. } => {
            ApiError::conflict("token_name_taken", format!("a live token is already named `{}`", req.name.trim()))
        }
        other => other.into(),
    })?;
    auth.invalidate_origins();
    tracing::info!(token = %record.name, by = %principal.name, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token: record.into(), secret })))
}

/// List the live tokens.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(State(state): State<AppState>, principal: Principal) -> Result<Json<TokenList>, ApiError> {
    principal.require_admin()?;
    let tokens = state.store.list_tokens().await?.into_iter().map(TokenView::from).collect();
    Ok(Json(TokenList { tokens }))
}

/// Revoke a token: it is refused from now on.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    state.store.revoke_token(&id, state.now()).await.map_err(|e| match e {
        StoreError::NotFound { .. } => ApiError::not_found(format!("no live token with id {id}")),
        other => other.into(),
    })?;
    auth.forget(&id);
    tracing::info!(token_id = %id, by = %principal.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> CreateTokenRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_valid_request_is_normalized() {
        let now = Utc::now();
        let t = check(
            &req(serde_json::json!({
                "name": "qa-ui", "scopes": ["read", "trigger:web-*", "read"], "expires_in": "1h",
                "allowed_origins": ["https://QA.example.com/"], "rate_limit_per_minute": 30
            })),
            now,
        )
        .unwrap();
        assert_eq!(t.scopes, ["read", "trigger:web-*"]);
        assert_eq!(t.expires_at, Some(now + chrono::Duration::hours(1)));
        assert_eq!(t.allowed_origins, ["https://qa.example.com"]);
    }

    #[test]
    fn every_problem_is_reported() {
        let err = check(
            &req(serde_json::json!({
                "name": "bad name", "scopes": ["write"], "expires_in": "soon", "expires_at": "2020-01-01T00:00:00Z",
                "allowed_origins": ["nope"], "rate_limit_per_minute": 0
            })),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<String> = err.body().details.into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["name", "scopes[0]", "expires_in", "allowed_origins[0]", "rate_limit_per_minute"]);
    }
}
