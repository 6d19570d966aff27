//! `CircleciFactory` builds accounts from `[providers.circleci.<name>]`; an account builds the
//! targets that name it and verifies its webhooks.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::Problems;
use cigw_core::provider::{CallbackEvent, ProviderAccount, ProviderFactory};
use cigw_core::{CiTarget, Error, ProviderKind, ProviderRunRef, Result, TargetSpec};

use crate::client::CircleciClient;
use crate::config::{AccountConfig, RUN_ID_PARAMETER, TargetConfig};
use crate::follow::CircleciFollower;
use crate::target::CircleciTarget;
use crate::webhook::{self, WebhookError};

/// Registers the CircleCI adapter with the catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct CircleciFactory;

impl ProviderFactory for CircleciFactory {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn check_target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) {
        TargetConfig::parse(spec, path, table, problems);
    }

    fn account(
        &self,
        name: &str,
        path: &str,
        table: &serde_json::Value,
        problems: &mut Problems,
    ) -> Option<Arc<dyn ProviderAccount>> {
        let config = AccountConfig::parse(path, table, problems)?;
        match CircleciAccount::new(name, config) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                problems.error(path, e.to_string());
                None
            }
        }
    }
}

/// One CircleCI account: its client (rate limiter and concurrency cap included) is shared by all
/// its targets.
#[derive(Clone)]
pub struct CircleciAccount {
    name: String,
    config: AccountConfig,
    client: CircleciClient,
}

impl fmt::Debug for CircleciAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircleciAccount").field("name", &self.name).field("config", &self.config).finish()
    }
}

impl CircleciAccount {
    /// An account named `name`.
    pub fn new(name: impl Into<String>, config: AccountConfig) -> Result<Self> {
        let client = CircleciClient::new(&config)?;
        Ok(Self { name: name.into(), config, client })
    }

    /// The account's client.
    pub fn client(&self) -> &CircleciClient {
        &self.client
    }

    /// Build a target directly (tests and embedding), with the same checks as `target`.
    pub fn circleci_target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<CircleciTarget> {
        let config = TargetConfig::parse(spec, path, table, problems)?;
        let declares_run_id = spec.parameters.iter().any(|p| p.name == RUN_ID_PARAMETER);
        Some(CircleciTarget::new(
            spec.name.clone(),
            self.client.clone(),
            self.config.app_url.clone(),
            config,
            self.config.setup_grace,
            declares_run_id,
        ))
    }

    /// Verify a webhook delivery and parse it.
    pub fn verify_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::result::Result<webhook::WebhookEvent, WebhookError> {
        webhook::verify(&self.config.webhook_secrets, headers, body)
    }
}

#[async_trait]
impl ProviderAccount for CircleciAccount {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let webhooks = match self.config.webhook_secrets.len() {
            0 => "no webhook secret".to_string(),
            n => format!("{n} webhook secret(s)"),
        };
        format!("CircleCI API at {} ({webhooks})", self.config.base_url)
    }

    fn target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>> {
        self.circleci_target(spec, path, table, problems).map(|t| Arc::new(t) as Arc<dyn CiTarget>)
    }

    /// Status and cancel need only the pipeline id, so every pipeline can be followed.
    fn follow_target(&self, target_name: &str, _run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        Some(Arc::new(CircleciFollower::new(target_name, self.client.clone(), self.config.setup_grace)))
    }

    #[tracing::instrument(skip_all, fields(provider = "circleci", account = %self.name))]
    async fn check_online(&self) -> Result<()> {
        let _: (serde_json::Value, _) = self.client.get("get current user", &["me"], &[]).await?;
        Ok(())
    }

    fn verify_callback(&self, headers: &[(String, String)], body: &[u8]) -> Result<Option<CallbackEvent>> {
        match self.verify_webhook(headers, body) {
            Ok(event) => Ok(event.callback()),
            Err(e @ WebhookError::Payload(_)) => Err(Error::InvalidRequest { message: e.to_string() }),
            Err(e) => Err(Error::Unauthenticated { message: e.to_string() }),
        }
    }
}
