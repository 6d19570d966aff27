//! The HTTP client of one Codefresh account: the shared transport (rate limiter, concurrency
//! limit, retries) with Codefresh's API key, shared by every target of the account.

use std::sync::Arc;

use cigw_core::shared_budget::{BudgetKey, SharedBudget};
use cigw_core::transport::{Answer, Credential, Pacing, Request, Transport};
use cigw_core::{CallKind, Error, ProviderKind, Result};
use reqwest::header::AUTHORIZATION;
use secrecy::ExposeSecret;

use crate::config::AccountConfig;
use crate::error::parse_error;

/// The provider's name in messages.
pub const PROVIDER: &str = "Codefresh";

/// One account's HTTP client. `Debug` never shows the API key.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    credential: Credential,
    config: AccountConfig,
}

impl Client {
    /// A client for `config`.
    pub fn new(config: AccountConfig) -> Result<Self> {
        let transport = Transport::new(PROVIDER, &config.transport, Pacing::Bursty)?;
        // `Authorization: <key>`, without `Bearer`.
        let credential = Credential::header(AUTHORIZATION, &config.api_key)?;
        Ok(Self { transport, credential, config })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &AccountConfig {
        &self.config
    }

    /// Draw the rate limit from `budget`, shared by every replica using this API key on this
    /// server (see [`Transport::share_budget`]).
    pub fn share_budget(&self, budget: Arc<dyn SharedBudget>, account: &str) {
        let key = BudgetKey::of_credential(
            ProviderKind::Codefresh,
            &self.config.transport.base_url,
            self.config.api_key.expose_secret(),
        );
        self.transport.share_budget(budget, key, account);
    }

    /// Send `request` with the account's API key, retried by the rule for `kind`.
    pub async fn send(&self, kind: CallKind, operation: &str, request: Request) -> Result<Answer> {
        let request = request.credential(&self.credential);
        self.transport.send(kind, operation, &request, parse_error).await
    }

    /// The web app link of a build: the base URL without its `/api` suffix, then `/build/<id>`.
    pub fn build_link(&self, build_id: &str) -> String {
        let mut url = self.config.transport.base_url.clone();
        let path = url.path().trim_end_matches('/');
        let app_path = path.strip_suffix("/api").unwrap_or(path).to_string();
        url.set_path(&app_path);
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            p.extend(["build", build_id]);
        }
        url.to_string()
    }
}

/// A build id answered as a JSON string (`"65f0…"`), as `pipelines.run` and `workflows.restart`
/// do; a bare id without quotes is accepted too.
pub fn build_id(answer: &Answer, what: &str) -> Result<String> {
    let id = match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => {
            o.get("id").or_else(|| o.get("workflowId")).and_then(|v| v.as_str()).unwrap_or_default().to_string()
        }
        _ => String::from_utf8_lossy(&answer.body).trim().trim_matches('"').to_string(),
    };
    if id.is_empty() || id.chars().any(|c| !c.is_ascii_alphanumeric()) {
        let shown: String = String::from_utf8_lossy(&answer.body).chars().take(200).collect();
        return Err(Error::other(format!("Codefresh answered {what} without a build id (body: {shown})")));
    }
    Ok(id)
}
