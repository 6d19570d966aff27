//! The HTTP client of one Codeship credential: token exchange and cache, rate limiter,
//! concurrency limit and the one `request()` helper every call goes through.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::rate_limit::Budget;
use cigw_core::{CallKind, Error, Result};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, USER_AGENT};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, Semaphore};
use url::Url;

use crate::config::AccountConfig;
use crate::error::{ErrorAnswer, parse_error};
use crate::models::{AuthResponse, Organization};

/// The time source of token expiry and `sent_at` (tests and the simulator inject their own).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

const USER_AGENT_VALUE: &str = concat!("cigw/", env!("CARGO_PKG_VERSION"));

/// An answer with a 2xx status.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (empty for Codeship's 202s).
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::other(format!("Codeship sent an unexpected {what} body: {e}")))
    }
}

/// A token from `POST /auth` with the organizations it covers.
struct Token {
    /// Distinguishes tokens so a 401 only discards the token that was refused.
    id: u64,
    access_token: SecretString,
    expires_at: DateTime<Utc>,
    organizations: Vec<Organization>,
}

/// One token per credential, exchanged single-flight: callers wait on the lock while one of
/// them talks to `/auth`, then all use the new token.
struct TokenCache {
    email: SecretString,
    password: SecretString,
    refresh_margin: Duration,
    current: Mutex<Option<Arc<Token>>>,
    next_id: AtomicU64,
}

/// The client of one credential, shared by every target of its account.
pub struct CodeshipClient {
    http: reqwest::Client,
    base_url: Url,
    organization: String,
    auth: TokenCache,
    limiter: Budget,
    in_flight: Semaphore,
    config: AccountConfig,
    clock: Clock,
}

impl fmt::Debug for CodeshipClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeshipClient")
            .field("base_url", &self.base_url.as_str())
            .field("organization", &self.organization)
            .field("rate_limit", &self.config.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Map a transport error: a request that never left can be sent again; anything after sending
/// (timeouts, resets, body errors) may have been processed.
fn transport_error(e: reqwest::Error) -> Error {
    let e = e.without_url();
    if e.is_builder() || e.is_connect() { Error::not_sent(e) } else { Error::maybe_sent(e) }
}

impl CodeshipClient {
    /// A client for `config`, on the wall clock.
    pub fn new(config: AccountConfig) -> Result<Self> {
        Self::with_clock(config, system_clock())
    }

    /// A client for `config` reading time from `clock`.
    pub fn with_clock(config: AccountConfig, clock: Clock) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            organization: config.organization.clone(),
            auth: TokenCache {
                email: config.email.clone(),
                password: config.password.clone(),
                refresh_margin: config.token_refresh_margin,
                current: Mutex::new(None),
                next_id: AtomicU64::new(1),
            },
            // Evenly spaced: every window of a minute stays within Codeship's budget whatever its boundaries.
            limiter: Budget::smooth(&config.rate_limit),
            in_flight: Semaphore::new(config.concurrency.max(1)),
            config,
            clock,
        })
    }

    /// The same client against another base URL (tests).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.base_url = base_url.clone();
        self.config.base_url = base_url;
        self
    }

    /// The resolved configuration.
    pub fn config(&self) -> &AccountConfig {
        &self.config
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The client's current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// `base_url` joined with `segments`, keeping the base URL's own path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        url.path_segments_mut().expect("an http(s) base URL").pop_if_empty().extend(segments);
        url
    }

    /// Wait for the credential's budget and a free request slot. Inside a work budget
    /// ([`cigw_core::retry::within_budget`]: the gateway's lease on a run) the wait ends with the
    /// budget, as `RateLimited` (nothing was sent), so the caller schedules the call again
    /// instead of being abandoned while it waits.
    async fn admit(&self, kind: CallKind) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.limiter.admit(kind).await?;
        let permit = cigw_core::retry::until_budget_end(self.in_flight.acquire()).await?;
        Ok(permit.expect("the semaphore is never closed"))
    }

    /// A valid token: the cached one, or a new one from a single exchange however many callers
    /// ask at once.
    async fn token(&self) -> Result<Arc<Token>> {
        let mut current = self.auth.current.lock().await;
        if let Some(token) = current.as_ref() {
            let refresh_at = token.expires_at - cigw_core::time::span(self.auth.refresh_margin);
            if self.now() < refresh_at {
                return Ok(token.clone());
            }
            tracing::debug!(provider = "codeship", "token expires soon; exchanging a new one");
        }
        let token = Arc::new(self.exchange().await?);
        *current = Some(token.clone());
        Ok(token)
    }

    /// Forget `stale` (refused with a 401) unless another caller already replaced it.
    async fn discard(&self, stale: &Token) {
        let mut current = self.auth.current.lock().await;
        if current.as_ref().is_some_and(|t| t.id == stale.id) {
            *current = None;
        }
    }

    /// `POST /auth` with HTTP basic auth.
    #[tracing::instrument(name = "codeship.auth", skip(self), fields(provider = "codeship"))]
    async fn exchange(&self) -> Result<Token> {
        let url = self.url(&["auth"]);
        let response = {
            // The exchange is rare and every call waits for it: it takes the priority of a trigger.
            let _permit = self.admit(CallKind::StartsBuild).await?;
            self.http
                .post(url)
                .header(USER_AGENT, USER_AGENT_VALUE)
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/json")
                .basic_auth(self.auth.email.expose_secret(), Some(self.auth.password.expose_secret()))
                .body("{}")
                .send()
                .await
                .map_err(transport_error)?
        };
        let status = response.status();
        let headers = response.headers().clone();
        let reason = response.extensions().get::<hyper::ext::ReasonPhrase>().cloned();
        let body = response.bytes().await.map_err(|e| Error::maybe_sent(e.without_url()))?;
        if !status.is_success() {
            let reason = reason.as_ref().and_then(|r| std::str::from_utf8(r.as_bytes()).ok());
            let error = parse_error(
                ErrorAnswer { status, headers: &headers, reason, body: &body },
                CallKind::Idempotent,
                self.now(),
            );
            return Err(match error {
                Error::Unauthenticated { message } => Error::Unauthenticated {
                    message: format!("Codeship refused the API user's email and password: {message}"),
                },
                other => other,
            });
        }
        let answer: AuthResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::other(format!("Codeship sent an unexpected /auth body: {e}")))?;
        if let Some(message) = answer.error {
            // Two-factor accounts get their refusal in a 2xx body: a configuration error.
            return Err(Error::Unauthenticated {
                message: format!(
                    "Codeship refused the API login: {message} (use a dedicated API user without two-factor \
                     authentication or SSO)"
                ),
            });
        }
        let access_token =
            answer.access_token.ok_or_else(|| Error::other("Codeship's /auth answer has no access_token"))?;
        let expires_at = match answer.expires_at.and_then(|s| DateTime::from_timestamp(s, 0)) {
            Some(at) => at,
            None => {
                tracing::warn!(
                    provider = "codeship",
                    "the /auth answer has no usable expires_at; using the token for 5 minutes"
                );
                self.now() + chrono::Duration::minutes(5)
            }
        };
        tracing::debug!(provider = "codeship", %expires_at, organizations = answer.organizations.len(), "token exchanged");
        Ok(Token {
            id: self.auth.next_id.fetch_add(1, Ordering::Relaxed),
            access_token,
            expires_at,
            organizations: answer.organizations,
        })
    }

    /// The configured organization's uuid among the token's organizations: by uuid, else by name,
    /// both case-insensitively (the official client compares names case-sensitively, which
    /// misses names with capitals).
    fn organization_uuid(&self, token: &Token) -> Result<String> {
        let wanted = self.organization.as_str();
        token
            .organizations
            .iter()
            .find(|o| o.uuid.eq_ignore_ascii_case(wanted))
            .or_else(|| token.organizations.iter().find(|o| o.name.to_lowercase() == wanted.to_lowercase()))
            .map(|o| o.uuid.clone())
            .ok_or_else(|| {
                let known: Vec<String> =
                    token.organizations.iter().map(|o| format!("{} ({})", o.name, o.uuid)).collect();
                Error::NotFound {
                    message: format!(
                        "organization `{wanted}` is not one of the API user's organizations: {}",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                }
            })
    }

    /// The configured organization's uuid (exchanging a token if needed).
    pub async fn resolve_organization(&self) -> Result<String> {
        let token = self.token().await.map_err(auth_failure)?;
        self.organization_uuid(&token)
    }

    /// Send one request to `organizations/{org}/<segments>` and return the 2xx answer.
    ///
    /// A 401 discards the token, exchanges a new one and replays the request once: Codeship
    /// refused it, so even a POST was not processed. Error answers go through `parse_error`.
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        kind: CallKind,
    ) -> Result<Answer> {
        let mut replayed = false;
        loop {
            let token = self.token().await.map_err(auth_failure)?;
            let org = self.organization_uuid(&token)?;
            let mut all = vec!["organizations", org.as_str()];
            all.extend_from_slice(segments);
            let url = self.url(&all);
            let response = {
                let _permit = self.admit(kind).await?;
                let mut builder = self
                    .http
                    .request(method.clone(), url)
                    .header(USER_AGENT, USER_AGENT_VALUE)
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .bearer_auth(token.access_token.expose_secret());
                if !query.is_empty() {
                    builder = builder.query(query);
                }
                if let Some(body) = body {
                    builder = builder.body(body.to_string());
                } else if method == Method::POST {
                    builder = builder.body("");
                }
                builder.send().await.map_err(transport_error)?
            };
            let status = response.status();
            let headers = response.headers().clone();
            log_rate_limit_headers(&headers);
            let reason = response.extensions().get::<hyper::ext::ReasonPhrase>().cloned();
            let bytes = response.bytes().await.map_err(|e| Error::maybe_sent(e.without_url()))?;
            if status.is_success() {
                return Ok(Answer { status, headers, body: bytes.to_vec() });
            }
            if status == StatusCode::UNAUTHORIZED && !replayed {
                tracing::info!(provider = "codeship", "token refused (401); exchanging a new one and replaying once");
                self.discard(&token).await;
                replayed = true;
                continue;
            }
            let reason = reason.as_ref().and_then(|r| std::str::from_utf8(r.as_bytes()).ok());
            let error = parse_error(ErrorAnswer { status, headers: &headers, reason, body: &bytes }, kind, self.now());
            if let Error::RateLimited { retry_after } = &error {
                tracing::info!(
                    provider = "codeship",
                    retry_after_s = retry_after.map(|d| d.as_secs()),
                    "rate limited by Codeship"
                );
            }
            return Err(error);
        }
    }
}

/// A failed token exchange means the actual request was never sent: transient failures of the
/// exchange become `NotSent` so even a trigger may retry them.
fn auth_failure(e: Error) -> Error {
    match e {
        Error::MaybeSent { source } => Error::not_sent(format!("token exchange failed: {source}")),
        Error::Unavailable { message } => Error::not_sent(format!("token exchange failed: {message}")),
        other => other,
    }
}

fn log_rate_limit_headers(headers: &HeaderMap) {
    for (name, value) in headers.iter().filter(|(n, _)| n.as_str().starts_with("x-ratelimit")) {
        tracing::debug!(provider = "codeship", header = %name, value = ?value, "rate limit header");
    }
}
