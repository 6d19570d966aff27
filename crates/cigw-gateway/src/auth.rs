//! API tokens: the `cigw_…` secret format and its hash, scopes, the bootstrap admin token, the
//! per-token rate limit, browser-origin checks and the CORS origin set.
//!
//! The store only ever sees a token's SHA-256 hash; a request's token is hashed and looked up by
//! that hash, and the bootstrap admin token is compared in constant time.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use base64::Engine;
use chrono::{DateTime, Utc};
use cigw_core::config::Settings;
use cigw_core::secret::SecretError;
use cigw_store::{AuthChange, Store, TokenRecord};
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::AppState;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "cigw_";
/// Random bytes in a generated token (43 url-safe base64 characters).
const TOKEN_RANDOM_BYTES: usize = 32;
/// The id and name the bootstrap admin token acts under.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";
/// How often `last_used_at` is written for one token at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long the CORS origin set is trusted before it is read again. A backstop only: a token
/// created or revoked on any replica drops it at once ([`AuthState::follow_changes`]).
const ORIGIN_CACHE_TTL: Duration = Duration::from_secs(30);

/// One scope a token may hold.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Read runs, triggers and targets.
    Read,
    /// Trigger (and rerun) targets whose name matches the glob; plain `trigger` matches all.
    Trigger {
        /// The glob as written (`*` for plain `trigger`).
        pattern: String,
        /// The compiled glob.
        matcher: globset::GlobMatcher,
    },
    /// Cancel runs.
    Cancel,
    /// Approve or deny blocked runs.
    Approve,
    /// Manage tokens; implies every other scope.
    Admin,
}

impl Scope {
    /// Parse a scope string, saying what was expected when it is not one.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "cancel" => Ok(Scope::Cancel),
            "approve" => Ok(Scope::Approve),
            "admin" => Ok(Scope::Admin),
            "trigger" => Ok(Scope::trigger_glob("*").expect("`*` is a valid glob")),
            other => match other.strip_prefix("trigger:") {
                Some(pattern) if !pattern.is_empty() => Scope::trigger_glob(pattern),
                _ => Err(format!(
                    "unknown scope `{other}` (expected read, trigger, trigger:<glob>, cancel, approve or admin)"
                )),
            },
        }
    }

    fn trigger_glob(pattern: &str) -> Result<Scope, String> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("invalid glob in scope `trigger:{pattern}`: {}", e.kind()))?;
        Ok(Scope::Trigger { pattern: pattern.to_string(), matcher: glob.compile_matcher() })
    }
}

/// Who made a request: an authenticated token and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token id (`bootstrap-admin` for the configured admin token).
    pub token_id: String,
    /// The token name (recorded as `requested_by`).
    pub name: String,
    scopes: Vec<Scope>,
    /// The stored token behind the request (none for the bootstrap admin token), so a
    /// long-lived request can check that it is still valid.
    credential: Option<Credential>,
    /// The web UI session the request came with, if any: it must stay valid too.
    session: Option<SessionRef>,
}

/// Which web UI session a principal acts in, and when it ends.
#[derive(Debug, Clone)]
struct SessionRef {
    hash: String,
    expires_at: DateTime<Utc>,
}

/// What identifies a stored token and when it stops being valid.
#[derive(Debug, Clone)]
struct Credential {
    hash: String,
    expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// Whether the request came from a signed-in web page (its triggers are recorded with
    /// source `ui`).
    pub fn via_session(&self) -> bool {
        self.session.is_some()
    }

    /// A principal with already parsed scopes (tests, the bootstrap admin).
    pub fn new(token_id: impl Into<String>, name: impl Into<String>, scopes: Vec<Scope>) -> Self {
        Self { token_id: token_id.into(), name: name.into(), scopes, credential: None, session: None }
    }

    /// The same principal acting in the web UI session with this hash (see [`crate::ui::session`]).
    pub(crate) fn in_session(self, hash: String, expires_at: DateTime<Utc>) -> Self {
        Self { session: Some(SessionRef { hash, expires_at }), ..self }
    }

    /// When the token (or the session it acts in) expires, if it does.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let token = self.credential.as_ref().and_then(|c| c.expires_at);
        let session = self.session.as_ref().map(|s| s.expires_at);
        token.into_iter().chain(session).min()
    }

    /// Whether the token is still valid now: not revoked (by any replica) and not expired, and
    /// its web UI session, if any, not signed out. The bootstrap admin token lives as long as
    /// the configuration.
    pub async fn still_valid(&self, state: &AppState) -> Result<bool, ApiError> {
        let now = state.now();
        if let Some(session) = &self.session
            && state.store.find_session(&session.hash, now).await?.is_none()
        {
            return Ok(false);
        }
        let Some(credential) = &self.credential else { return Ok(true) };
        let record = state.store.find_token_by_hash(&credential.hash).await?;
        Ok(record.is_some_and(|r| r.id == self.token_id && r.expires_at.is_none_or(|at| at > now)))
    }

    fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| matches!(s, Scope::Admin))
    }

    fn has(&self, wanted: impl Fn(&Scope) -> bool) -> bool {
        self.is_admin() || self.scopes.iter().any(wanted)
    }

    /// Require `read`.
    pub fn require_read(&self) -> Result<(), ApiError> {
        self.require(|s| matches!(s, Scope::Read), "read")
    }

    /// Require `cancel`.
    pub fn require_cancel(&self) -> Result<(), ApiError> {
        self.require(|s| matches!(s, Scope::Cancel), "cancel")
    }

    /// Require `approve`.
    pub fn require_approve(&self) -> Result<(), ApiError> {
        self.require(|s| matches!(s, Scope::Approve), "approve")
    }

    /// Require `admin`.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(|s| matches!(s, Scope::Admin), "admin")
    }

    /// Require some trigger scope (checked before a trigger body is read).
    pub fn require_any_trigger(&self) -> Result<(), ApiError> {
        self.require(|s| matches!(s, Scope::Trigger { .. }), "trigger")
    }

    /// Whether the token may trigger `target`.
    pub fn may_trigger(&self, target: &str) -> bool {
        self.has(|s| matches!(s, Scope::Trigger { matcher, .. } if matcher.is_match(target)))
    }

    /// Require the scope to trigger `target`.
    pub fn require_trigger(&self, target: &str) -> Result<(), ApiError> {
        if self.may_trigger(target) {
            Ok(())
        } else {
            Err(ApiError::MissingScope { scope: format!("trigger:{target}") })
        }
    }

    fn require(&self, wanted: impl Fn(&Scope) -> bool, name: &str) -> Result<(), ApiError> {
        if self.has(wanted) { Ok(()) } else { Err(ApiError::MissingScope { scope: name.to_string() }) }
    }
}

/// A new token secret: `cigw_` and 43 url-safe random characters.
pub fn generate_token() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token: the SHA-256 of the whole token, in lower-case hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a cigw token (prefix, then at least 43 url-safe characters).
pub fn is_well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() >= 43
            && rest.len() <= 256
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Resolve the configured bootstrap admin token (`auth.admin_token`) into its hash. Call it at
/// start-up to refuse a configuration whose secret cannot be read.
pub fn resolve_admin_token(settings: &Settings) -> Result<Option<[u8; 32]>, AdminTokenError> {
    let Some(setting) = &settings.auth.admin_token else { return Ok(None) };
    let (secret, _origin) = setting.resolve().map_err(AdminTokenError::Unresolved)?;
    let token = secret.expose_secret();
    if !is_well_formed(token) {
        return Err(AdminTokenError::Malformed);
    }
    Ok(Some(Sha256::digest(token.as_bytes()).into()))
}

/// Why the bootstrap admin token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The secret setting could not be resolved.
    #[error("auth.admin_token: {0}")]
    Unresolved(SecretError),
    /// The value is not a `cigw_` token.
    #[error("auth.admin_token: expected `cigw_` followed by at least 43 url-safe characters")]
    Malformed,
}

/// Process-local authentication state: the bootstrap admin token, rate limiters, the last-use
/// bookkeeping and the CORS origin cache. Shared by every request through a router extension.
#[derive(Debug)]
pub struct AuthState {
    admin_hash: Option<[u8; 32]>,
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
    touched: Mutex<HashMap<String, Instant>>,
    origins: Mutex<OriginCache>,
    revocations: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct OriginCache {
    origins: BTreeSet<String>,
    loaded_at: Option<Instant>,
}

impl AuthState {
    /// State with the given bootstrap admin token hash (see [`resolve_admin_token`]).
    pub fn new(admin_hash: Option<[u8; 32]>) -> Self {
        Self {
            admin_hash,
            limiters: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            origins: Mutex::new(OriginCache::default()),
            revocations: watch::channel(0).0,
        }
    }

    /// State for `settings`; an unusable admin token is logged and disabled (fail closed).
    pub fn from_settings(settings: &Settings) -> Self {
        match resolve_admin_token(settings) {
            Ok(hash) => Self::new(hash),
            Err(e) => {
                tracing::error!(error = %e, "the bootstrap admin token is disabled");
                Self::new(None)
            }
        }
    }

    /// Authenticate the bearer token of a request or, without one, its web UI session cookie
    /// (see [`crate::ui::session`]).
    pub async fn authenticate(&self, state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Some(secret) = crate::ui::session::cookie_secret(parts)
        {
            return crate::ui::session::authenticate(self, state, parts, &secret).await;
        }
        let token = bearer_token(parts)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.principal_for(state, parts, digest, true).await
    }

    /// The principal of the token whose SHA-256 is `digest`: refused when unknown, revoked,
    /// expired, over its rate limit or (with `check_origins`) used from a browser origin it does
    /// not allow. A web UI session is same-origin by its own checks and skips the origin list.
    pub(crate) async fn principal_for(
        &self,
        state: &AppState,
        parts: &Parts,
        digest: [u8; 32],
        check_origins: bool,
    ) -> Result<Principal, ApiError> {
        if let Some(admin) = &self.admin_hash
            && bool::from(admin.ct_eq(&digest))
        {
            return Ok(Principal::new(BOOTSTRAP_ADMIN, BOOTSTRAP_ADMIN, vec![Scope::Admin]));
        }
        let record = state.store.find_token_by_hash(&hex::encode(digest)).await?;
        let Some(record) = record else {
            return Err(ApiError::Unauthenticated { message: "unknown or revoked token".into() });
        };
        let now = state.now();
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthenticated { message: format!("token `{}` has expired", record.name) });
        }
        if check_origins {
            check_origin(&record, parts)?;
        }
        self.check_rate(&record)?;
        self.touch(state, &record, now).await;
        let scopes = record.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
        let credential = Credential { hash: record.hash, expires_at: record.expires_at };
        Ok(Principal { credential: Some(credential), ..Principal::new(record.id, record.name, scopes) })
    }

    fn check_rate(&self, record: &TokenRecord) -> Result<(), ApiError> {
        let Some(per_minute) = record.rate_limit_per_minute.and_then(NonZeroU32::new) else { return Ok(()) };
        let limiter = {
            let mut limiters = self.limiters.lock();
            let entry = limiters
                .entry(record.id.clone())
                .or_insert_with(|| (per_minute.get(), Arc::new(RateLimiter::direct(Quota::per_minute(per_minute)))));
            if entry.0 != per_minute.get() {
                *entry = (per_minute.get(), Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                code: "rate_limited",
                message: format!("token `{}` is limited to {per_minute} requests per minute", record.name),
                retry_after: Some(wait),
            }
        })
    }

    async fn touch(&self, state: &AppState, record: &TokenRecord, now: DateTime<Utc>) {
        {
            let mut touched = self.touched.lock();
            let due = touched.get(&record.id).is_none_or(|at| at.elapsed() >= TOUCH_INTERVAL);
            if !due {
                return;
            }
            touched.insert(record.id.clone(), Instant::now());
        }
        // Bookkeeping only: a failed write must not fail the request.
        if let Err(e) = state.store.touch_token(&record.id, now).await {
            tracing::warn!(token = %record.name, error = %e, "could not record the token's last use");
        }
    }

    /// Follow the store's token and session changes (every replica's, on PostgreSQL) for as long
    /// as this state lives: drop what they make stale at once, and every cache when changes may
    /// have been missed (listening started anew after a lost connection). Without a tokio
    /// runtime the caches rely on their time limits alone.
    pub fn follow_changes(self: &Arc<Self>, store: &Arc<dyn Store>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut changes = store.auth_changes();
        let auth = Arc::downgrade(self);
        // Its sender lives in this state: the follower ends with it.
        let mut alive = self.revocations.subscribe();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    change = changes.next() => match (change, auth.upgrade()) {
                        (Some(change), Some(auth)) => auth.apply(&change),
                        _ => return,
                    },
                    gone = alive.changed() => if gone.is_err() { return },
                }
            }
        });
    }

    /// Drop what `change` makes stale.
    fn apply(&self, change: &AuthChange) {
        match change {
            // Not `forget`: the change may be the token's creation, whose requests may already
            // count against its rate limit (a new limiter would start the count afresh). A
            // revoked token is refused before its limiter is asked.
            AuthChange::Token { id } => self.token_changed(id),
            AuthChange::Session { .. } => self.recheck_streams(),
            AuthChange::All => {
                self.invalidate_origins();
                self.recheck_streams();
            }
        }
    }

    /// Forget what this process remembers about a token (after it was revoked), and have this
    /// process's open event streams check their tokens at once.
    pub fn forget(&self, token_id: &str) {
        self.limiters.lock().remove(token_id);
        self.token_changed(token_id);
    }

    /// A token was created or revoked: its origins, last use and open streams are looked at again.
    fn token_changed(&self, token_id: &str) {
        self.touched.lock().remove(token_id);
        self.invalidate_origins();
        self.recheck_streams();
    }

    /// Have this process's open event streams check their tokens and sessions at once (after a
    /// revocation or a sign-out).
    pub fn recheck_streams(&self) {
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever this process revokes a token.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Make the next CORS check read the tokens' allowed origins again.
    pub fn invalidate_origins(&self) {
        self.origins.lock().loaded_at = None;
    }

    /// Whether some live token allows browser requests from `origin` (the CORS predicate).
    pub async fn origin_allowed(&self, state: &AppState, origin: &str) -> bool {
        let fresh = {
            let cache = self.origins.lock();
            cache.loaded_at.is_some_and(|at| at.elapsed() < ORIGIN_CACHE_TTL).then(|| cache.origins.contains(origin))
        };
        if let Some(allowed) = fresh {
            return allowed;
        }
        match state.store.list_tokens().await {
            Ok(tokens) => {
                let now = state.now();
                let origins: BTreeSet<String> = tokens
                    .into_iter()
                    .filter(|t| t.expires_at.is_none_or(|at| at > now))
                    .flat_map(|t| t.allowed_origins)
                    .collect();
                let allowed = origins.contains(origin);
                *self.origins.lock() = OriginCache { origins, loaded_at: Some(Instant::now()) };
                allowed
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the tokens' allowed origins; refusing the CORS request");
                false
            }
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let unauthenticated = |message: &str| ApiError::Unauthenticated { message: message.to_string() };
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing `Authorization: Bearer cigw_…` header"))?;
    let value = value.to_str().map_err(|_| unauthenticated("malformed Authorization header"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| unauthenticated("expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated("expected `Authorization: Bearer <token>`"));
    }
    let token = token.trim();
    if !is_well_formed(token) {
        return Err(unauthenticated("malformed token: expected `cigw_` followed by at least 43 url-safe characters"));
    }
    Ok(token)
}

/// A token that lists allowed origins may be used from those browser origins only.
fn check_origin(record: &TokenRecord, parts: &Parts) -> Result<(), ApiError> {
    let Some(origin) = parts.headers.get(header::ORIGIN) else { return Ok(()) };
    if record.allowed_origins.is_empty() {
        return Ok(());
    }
    let origin = origin.to_str().unwrap_or_default();
    if record.allowed_origins.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "origin_not_allowed",
            message: format!("token `{}` may not be used from origin `{origin}`", record.name),
        })
    }
}

/// Normalize and check an allowed origin: `http(s)://host[:port]`, nothing else.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim().trim_end_matches('/');
    let expected = || format!("`{raw}` is not an origin (expected `https://host[:port]`, no path)");
    let uri: axum::http::Uri = origin.parse().map_err(|_| expected())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.path_and_query().is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
    let Some(authority) = uri.authority() else { return Err(expected()) };
    if !scheme_ok || !bare || authority.as_str().contains('@') || HeaderValue::from_str(origin).is_err() {
        return Err(expected());
    }
    Ok(format!("{}://{}", uri.scheme_str().unwrap_or("https"), authority.as_str().to_ascii_lowercase()))
}

/// The authenticated caller of a request. Extracting it answers 401, 403 (origin) or 429
/// before any body is read.
impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let auth = parts
            .extensions
            .get::<Arc<AuthState>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the router has no AuthState extension"))?;
        auth.authenticate(&state, parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with("cigw_") && a.len() == 5 + 43, "{a}");
        assert!(is_well_formed(&a));
        assert_eq!(hash_token(&a).len(), 64);
        assert!(!is_well_formed("cigw_short"));
        assert!(!is_well_formed(&format!("ghp_{}", &a[5..])));
        assert!(!is_well_formed(&format!("{a}!")));
    }

    #[test]
    fn scopes_parse_and_match() {
        let p = Principal::new("t", "t", ["read", "trigger:web-*"].iter().map(|s| Scope::parse(s).unwrap()).collect());
        assert!(p.require_read().is_ok());
        assert!(p.may_trigger("web-e2e"));
        assert!(!p.may_trigger("api-build"));
        assert!(p.require_any_trigger().is_ok());
        let err = p.require_cancel().unwrap_err();
        assert_eq!(err.to_string(), "this token lacks the scope `cancel`");
        let err = p.require_trigger("api-build").unwrap_err();
        assert_eq!(err.to_string(), "this token lacks the scope `trigger:api-build`");
    }

    #[test]
    fn admin_implies_every_scope() {
        let p = Principal::new("a", "a", vec![Scope::Admin]);
        assert!(p.require_read().is_ok() && p.require_cancel().is_ok() && p.require_approve().is_ok());
        assert!(p.may_trigger("anything"));
    }

    #[test]
    fn unknown_scopes_say_what_was_expected() {
        assert!(Scope::parse("write").unwrap_err().contains("expected read, trigger, trigger:<glob>"));
        assert!(Scope::parse("trigger:").is_err());
        assert!(Scope::parse("trigger:[").unwrap_err().contains("invalid glob"));
        assert!(matches!(Scope::parse("trigger").unwrap(), Scope::Trigger { ref pattern, .. } if pattern == "*"));
    }

    #[test]
    fn origins_are_checked_and_normalized() {
        assert_eq!(parse_origin("https://QA.Example.com/").unwrap(), "https://qa.example.com");
        assert_eq!(parse_origin("http://localhost:3000").unwrap(), "http://localhost:3000");
        for bad in ["qa.example.com", "https://x.com/path", "ftp://x.com", "https://u@x.com", "https://x.com?q=1"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
