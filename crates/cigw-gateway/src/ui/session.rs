//! Web UI sign-in: a token is exchanged once (`POST /ui/session`, the token in the JSON body,
//! never in a URL) for an HttpOnly, SameSite=Strict session cookie and a CSRF token.
//!
//! The session is a row in the store holding the SHA-256 of the cookie's secret and of the token
//! it acts as, so it survives restarts, works on every replica, and ends when the token is
//! revoked or expires. The CSRF token is derived from the cookie's secret (a hash of it), so it is
//! not stored and a page on another origin cannot learn it. Requests authenticated by the cookie
//! with an unsafe method must carry it in `X-CSRF-Token` and, when the browser says where they
//! come from, come from the gateway's own origin.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_store::{NewSession, SessionKind, SessionRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiJson;
use crate::auth::{AuthState, Principal, is_well_formed};
use crate::error::ApiError;
use crate::state::AppState;
use crate::ui::{new_secret, secret_hash};

/// The session cookie.
pub const COOKIE: &str = "cigw_session";
/// The header carrying the CSRF token on unsafe requests authenticated by the cookie.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// The body of `POST /ui/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The cigw token to sign in with.
    pub token: SecretString,
}

/// What the page may show: who is signed in and what the token may do.
#[derive(Clone, Serialize)]
pub struct SessionView {
    /// The token's name.
    pub name: String,
    /// When the session ends (sign in again then).
    pub expires_at: DateTime<Utc>,
    /// Send as `X-CSRF-Token` with every POST and DELETE.
    pub csrf_token: String,
    /// The scopes the page uses to show or hide actions.
    pub can: Abilities,
    /// The targets the token may trigger (and rerun).
    pub triggerable: Vec<String>,
}

/// What a token may do, for the page.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Abilities {
    /// Read runs, triggers and targets.
    pub read: bool,
    /// Trigger at least one target.
    pub trigger: bool,
    /// Cancel runs.
    pub cancel: bool,
    /// Approve or deny blocked runs.
    pub approve: bool,
    /// Manage tokens.
    pub admin: bool,
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .field("csrf_token", &"[REDACTED]")
            .field("can", &self.can)
            .field("triggerable", &self.triggerable)
            .finish()
    }
}

fn view(state: &AppState, principal: &Principal, session: &SessionRecord, secret: &str) -> SessionView {
    let triggerable: Vec<String> =
        state.catalog.targets.keys().filter(|name| principal.may_trigger(name)).cloned().collect();
    SessionView {
        name: principal.name.clone(),
        expires_at: session.expires_at,
        csrf_token: csrf_token(secret),
        can: Abilities {
            read: principal.require_read().is_ok(),
            trigger: !triggerable.is_empty(),
            cancel: principal.require_cancel().is_ok(),
            approve: principal.require_approve().is_ok(),
            admin: principal.require_admin().is_ok(),
        },
        triggerable,
    }
}

/// The secret of the request's session cookie, if it sends one.
pub fn cookie_secret(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// The CSRF token of a session: derived from its secret, so nothing more is stored.
pub fn csrf_token(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("cigw-csrf\0{secret}").as_bytes()))
}

fn unauthenticated() -> ApiError {
    ApiError::Unauthenticated { message: "the session has expired or was signed out; sign in again".into() }
}

/// Authenticate a request by its session cookie: the session must be live and, for an unsafe
/// method, the request same-origin with the right CSRF token.
pub async fn authenticate(
    auth: &AuthState,
    state: &AppState,
    parts: &Parts,
    secret: &str,
) -> Result<Principal, ApiError> {
    let (_, principal) = session_principal(auth, state, parts, secret).await?;
    Ok(principal)
}

async fn session_principal(
    auth: &AuthState,
    state: &AppState,
    parts: &Parts,
    secret: &str,
) -> Result<(SessionRecord, Principal), ApiError> {
    let session = state.store.find_session(&secret_hash(secret), state.now()).await?.ok_or_else(unauthenticated)?;
    if session.kind != SessionKind::Ui {
        return Err(unauthenticated());
    }
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        check_same_origin(state, &parts.headers)?;
        check_csrf(&parts.headers, secret)?;
    }
    let digest = session
        .token_hash
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(unauthenticated)?;
    let principal =
        auth.principal_for(state, parts, digest, false).await?.in_session(session.hash.clone(), session.expires_at);
    Ok((session, principal))
}

fn check_csrf(headers: &HeaderMap, secret: &str) -> Result<(), ApiError> {
    let Some(given) = headers.get(CSRF_HEADER) else {
        return Err(ApiError::Forbidden {
            code: "csrf_token_missing",
            message: "a request authenticated by the session cookie must send the `X-CSRF-Token` header".into(),
        });
    };
    if bool::from(given.as_bytes().ct_eq(csrf_token(secret).as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden { code: "csrf_token_invalid", message: "the `X-CSRF-Token` header is wrong".into() })
    }
}

/// A browser's `Origin` (or `Sec-Fetch-Site`) must say the request comes from the gateway's own
/// page: its `Host`, or `server.public_url`.
fn check_same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |from: &str| ApiError::Forbidden {
        code: "cross_origin",
        message: format!("a session may only be used by the gateway's own page, not from {from}"),
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let public = state.settings.server.public_url.as_deref().map(|u| u.trim_end_matches('/'));
        let same = (!host.is_empty() && authority.eq_ignore_ascii_case(host)) || public == Some(origin);
        return if same { Ok(()) } else { Err(refuse(&format!("origin `{origin}`"))) };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin" | "none") => Ok(()),
        Some(other) => Err(refuse(&format!("a {other} page"))),
    }
}

fn set_cookie(state: &AppState, headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
    let https = state.settings.server.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
        || headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("cigw_session=; Max-Age=0"))
}

/// `POST /ui/session`: sign in with `{"token": "cigw_…"}`; answers 201 with the session and
/// sets the cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    check_same_origin(&state, &parts.headers)?;
    let ApiJson(SignIn { token }) =
        ApiJson::<SignIn>::from_request(Request::from_parts(parts.clone(), body), &state).await?;
    let token = token.expose_secret().trim();
    if !is_well_formed(token) {
        return Err(ApiError::bad_field("token", "expected `cigw_` followed by at least 43 url-safe characters"));
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let principal = auth.principal_for(&state, &parts, digest, false).await?;

    let secret = new_secret();
    let now = state.now();
    let ttl = state.settings.auth.session_ttl;
    let mut expires_at = now + cigw_core::time::span(ttl);
    if let Some(token_end) = principal.expires_at() {
        expires_at = expires_at.min(token_end);
    }
    let session = state
        .store
        .create_session(NewSession {
            hash: secret_hash(&secret),
            kind: SessionKind::Ui,
            token_hash: Some(hex::encode(digest)),
            run_id: None,
            created_at: now,
            expires_at,
        })
        .await?;
    tracing::info!(token = %principal.name, "web UI session opened");
    // Rounded up: the stored end is cut to microseconds.
    let max_age = ((session.expires_at - now).num_milliseconds().max(0) as u64).div_ceil(1000);
    let mut response = (StatusCode::CREATED, axum::Json(view(&state, &principal, &session, &secret))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, &parts.headers, &secret, max_age));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The request's parts, the cookie's secret, its session and principal (401 without one).
async fn signed_in(
    auth: &AuthState,
    state: &AppState,
    request: Request,
) -> Result<(Parts, String, SessionRecord, Principal), ApiError> {
    let (parts, _) = request.into_parts();
    let secret = cookie_secret(&parts).ok_or_else(unauthenticated)?;
    let (session, principal) = session_principal(auth, state, &parts, &secret).await?;
    Ok((parts, secret, session, principal))
}

/// `GET /ui/session`: the signed-in session (401 when there is none).
pub async fn current(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (_, secret, session, principal) = signed_in(&auth, &state, request).await?;
    let mut response = axum::Json(view(&state, &principal, &session, &secret)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /ui/session`: sign out (needs the CSRF token); the session is gone on every replica
/// and this process's event streams opened with it end at once.
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, secret, _, principal) = signed_in(&auth, &state, request).await?;
    state.store.delete_session(&secret_hash(&secret)).await?;
    auth.recheck_streams();
    tracing::info!(token = %principal.name, "web UI session closed");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, &parts.headers, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(cookies: &[&str]) -> Parts {
        let mut builder = axum::http::Request::get("/v1/runs");
        for c in cookies {
            builder = builder.header(header::COOKIE, *c);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(cookie_secret(&parts(&["a=1; cigw_session=abc; b=2"])).as_deref(), Some("abc"));
        assert_eq!(cookie_secret(&parts(&["a=1", "cigw_session=xyz"])).as_deref(), Some("xyz"));
        assert_eq!(cookie_secret(&parts(&["cigw_session_other=1"])), None);
        assert_eq!(cookie_secret(&parts(&[])), None);
    }

    #[test]
    fn debug_output_hides_the_token_and_the_csrf_token() {
        let sign_in: SignIn = serde_json::from_str(r#"{"token": "cigw_visible-only-to-the-server"}"#).unwrap();
        assert!(!format!("{sign_in:?}").contains("visible-only"));
        let view = SessionView {
            name: "qa".into(),
            expires_at: chrono::Utc::now(),
            csrf_token: "csrf-value".into(),
            can: Abilities { read: true, trigger: false, cancel: false, approve: false, admin: false },
            triggerable: vec![],
        };
        assert!(!format!("{view:?}").contains("csrf-value"));
    }

    #[test]
    fn the_csrf_token_depends_on_the_secret_and_does_not_reveal_it() {
        let a = csrf_token("secret-a");
        assert_eq!(a, csrf_token("secret-a"));
        assert_ne!(a, csrf_token("secret-b"));
        assert!(!a.contains("secret-a"));
        assert_ne!(a, secret_hash("secret-a"), "the CSRF token is not the stored hash");
    }
}
