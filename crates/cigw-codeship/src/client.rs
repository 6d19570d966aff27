//! The HTTP client of one Codeship credential: the shared transport (rate limiter, concurrency
//! limit, retries) with Codeship's token exchange and cache, and its organization-scoped paths.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::shared_budget::{BudgetKey, SharedBudget};
use cigw_core::transport::{Answer, Credential, Pacing, Request, Transport};
use cigw_core::{CallKind, Error, ProviderKind, Result};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::config::AccountConfig;
use crate::error::parse_error;
use crate::models::{AuthResponse, Organization};

/// The provider's name in messages.
pub const PROVIDER: &str = "Codeship";

/// The time source of token expiry and `sent_at` (tests and the simulator inject their own).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
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
    login: Credential,
    refresh_margin: Duration,
    current: Mutex<Option<Arc<Token>>>,
    next_id: AtomicU64,
}

/// The client of one credential, shared by every target of its account. `Debug` never shows
/// the credential or the token.
pub struct Client {
    transport: Transport,
    auth: TokenCache,
    config: AccountConfig,
    clock: Clock,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .field("organization", &self.config.organization)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`, on the wall clock.
    pub fn new(config: AccountConfig) -> Result<Self> {
        Self::with_clock(config, system_clock())
    }

    /// A client for `config` reading time from `clock`.
    pub fn with_clock(config: AccountConfig, clock: Clock) -> Result<Self> {
        // Evenly spaced: every window of a minute stays within Codeship's budget whatever its boundaries.
        let transport = Transport::new(PROVIDER, &config.transport, Pacing::Smooth)?;
        let auth = TokenCache {
            login: Credential::basic(&config.email, &config.password)?,
            refresh_margin: config.token_refresh_margin,
            current: Mutex::new(None),
            next_id: AtomicU64::new(1),
        };
        Ok(Self { transport, auth, config, clock })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &AccountConfig {
        &self.config
    }

    /// Draw the rate limit from `budget`, shared by every replica and account of this API user
    /// on this server: Codeship counts its 60 requests a minute per user (see
    /// [`Transport::share_budget`]).
    pub fn share_budget(&self, budget: Arc<dyn SharedBudget>, account: &str) {
        let user = self.config.email.expose_secret().trim().to_lowercase();
        let key = BudgetKey::of_credential(ProviderKind::Codeship, &self.config.transport.base_url, &user);
        self.transport.share_budget(budget, key, account);
    }

    /// The client's current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Send `request` under `organizations/{org}/` with the cached token, retried by the rule for
    /// `kind`.
    pub async fn send(&self, kind: CallKind, operation: &str, request: Request) -> Result<Answer> {
        self.transport.retry(kind, operation, || self.send_once(kind, operation, &request)).await
    }

    /// One attempt. A 401 discards the token, exchanges a new one and replays the request once:
    /// Codeship refused it, so even a POST was not processed.
    async fn send_once(&self, kind: CallKind, operation: &str, request: &Request) -> Result<Answer> {
        let mut replayed = false;
        loop {
            let token = self.token().await.map_err(auth_failure)?;
            let org = self.organization_uuid(&token)?;
            let request =
                request.clone().under(&["organizations", &org]).credential(&Credential::bearer(&token.access_token)?);
            match self.transport.send_once(kind, operation, &request, |a, k| parse_error(a, k, self.now())).await {
                Err(Error::Unauthenticated { .. }) if !replayed => {
                    tracing::info!(
                        provider = "codeship",
                        "token refused (401); exchanging a new one and replaying once"
                    );
                    self.discard(&token).await;
                    replayed = true;
                }
                other => return other,
            }
        }
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
    #[tracing::instrument(name = "codeship.auth", level = "debug", skip(self), fields(provider = "codeship"))]
    async fn exchange(&self) -> Result<Token> {
        let request = Request::post(&["auth"]).json(serde_json::json!({})).credential(&self.auth.login);
        // The exchange is rare and every call waits for it: it takes the priority of a trigger.
        let answer = self
            .transport
            .send_once(CallKind::StartsBuild, "codeship.auth", &request, |a, k| parse_error(a, k, self.now()))
            .await
            .map_err(|error| match error {
                Error::Unauthenticated { message } => Error::Unauthenticated {
                    message: format!("Codeship refused the API user's email and password: {message}"),
                },
                other => other,
            })?;
        let answer: AuthResponse = answer.json("/auth")?;
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
        let wanted = self.config.organization.as_str();
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
