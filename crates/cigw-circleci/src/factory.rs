//! `CircleciFactory` builds accounts from `[providers.circleci.<name>]`; an account builds the
//! targets that name it and verifies its webhooks.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::Problems;
use cigw_core::follow::FollowOnly;
use cigw_core::provider::{CallbackEvent, ProviderAccount, ProviderFactory, built_account};
use cigw_core::shared_budget::SharedBudget;
use cigw_core::transport::Request;
use cigw_core::{CiTarget, Error, ProviderKind, ProviderRunRef, Result, TargetSpec};

use crate::client::Client;
use crate::config::{AccountConfig, TargetConfig};
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
        built_account(path, CircleciAccount::new(name, config), problems)
    }
}

/// One CircleCI account: its client (rate limiter and concurrency cap included) is shared by all
/// its targets.
#[derive(Debug, Clone)]
pub struct CircleciAccount {
    name: String,
    client: Arc<Client>,
}

impl CircleciAccount {
    /// An account named `name`.
    pub fn new(name: impl Into<String>, config: AccountConfig) -> Result<Self> {
        Ok(Self { name: name.into(), client: Arc::new(Client::new(config)?) })
    }

    /// The account's client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// A target of this account from its parsed configuration.
    pub fn target_from(&self, name: impl Into<String>, config: TargetConfig) -> CircleciTarget {
        CircleciTarget::new(name, self.client.clone(), config)
    }

    /// Verify a webhook delivery and parse it.
    pub fn verify_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::result::Result<webhook::WebhookEvent, WebhookError> {
        webhook::verify(&self.client.config().webhook_secrets, headers, body)
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
        let webhooks = match self.client.config().webhook_secrets.len() {
            0 => "no webhook secret".to_string(),
            n => format!("{n} webhook secret(s)"),
        };
        format!("CircleCI API at {} ({webhooks})", self.client.config().transport.base_url)
    }

    fn target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>> {
        let config = TargetConfig::parse(spec, path, table, problems)?;
        Some(Arc::new(self.target_from(spec.name.clone(), config)))
    }

    /// Status and cancel need only the pipeline id, so every pipeline can be followed.
    fn follow_target(&self, target_name: &str, _run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        Some(Arc::new(FollowOnly(CircleciFollower::new(target_name, self.client.clone()))))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", account = %self.name))]
    async fn check_online(&self) -> Result<()> {
        let _: (serde_json::Value, _) = self.client.get("get current user", Request::get(&["me"])).await?;
        Ok(())
    }

    fn share_budget(&self, budget: Arc<dyn SharedBudget>) {
        self.client.share_budget(budget, &format!("circleci.{}", self.name));
    }

    fn verify_callback(&self, headers: &[(String, String)], body: &[u8]) -> Result<Option<CallbackEvent>> {
        match self.verify_webhook(headers, body) {
            Ok(event) => Ok(event.callback()),
            Err(e @ WebhookError::Payload(_)) => Err(Error::InvalidRequest { message: e.to_string() }),
            Err(e) => Err(Error::Unauthenticated { message: e.to_string() }),
        }
    }
}
