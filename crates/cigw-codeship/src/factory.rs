//! `CodeshipFactory` builds accounts from `[providers.codeship.<name>]`; an account builds the
//! targets that name it and follows the builds of removed ones.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::Problems;
use cigw_core::follow::FollowOnly;
use cigw_core::provider::{ProviderAccount, ProviderFactory, built_account};
use cigw_core::shared_budget::SharedBudget;
use cigw_core::transport::Request;
use cigw_core::{CallKind, CiTarget, ProviderKind, ProviderRunRef, Result, TargetSpec};

use crate::client::{Client, Clock, system_clock};
use crate::config::{AccountConfig, TargetConfig};
use crate::follow::CodeshipFollower;
use crate::target::CodeshipTarget;

/// Registers the Codeship adapter with the catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeshipFactory;

impl ProviderFactory for CodeshipFactory {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
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
        built_account(path, CodeshipAccount::new(name, config), problems)
    }
}

/// One Codeship credential (API user) and organization: its client (token cache, rate limiter
/// and concurrency limit included) is shared by all its targets.
#[derive(Debug, Clone)]
pub struct CodeshipAccount {
    name: String,
    client: Arc<Client>,
}

impl CodeshipAccount {
    /// An account named `name`, on the wall clock.
    pub fn new(name: impl Into<String>, config: AccountConfig) -> Result<Self> {
        Self::with_clock(name, config, system_clock())
    }

    /// An account reading time (token expiry, `sent_at`) from `clock`.
    pub fn with_clock(name: impl Into<String>, config: AccountConfig, clock: Clock) -> Result<Self> {
        Ok(Self { name: name.into(), client: Arc::new(Client::with_clock(config, clock)?) })
    }

    /// The account's client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// A target of this account from its parsed configuration.
    pub fn target_from(&self, name: impl Into<String>, config: TargetConfig) -> CodeshipTarget {
        CodeshipTarget::new(name, self.client.clone(), config)
    }
}

#[async_trait]
impl ProviderAccount for CodeshipAccount {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let c = self.client.config();
        let budget = c.transport.rate_limit.map_or_else(
            || "no rate limit".to_string(),
            |l| format!("{} requests per {}s", l.requests, l.per.as_secs()),
        );
        format!(
            "Codeship API v2 (sunset: end of life 2026-01-31) at {}, organization `{}`, {budget}",
            c.transport.base_url, c.organization,
        )
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

    /// Codeship reaches a build only through its project: refs that record it in `extra` (all
    /// this adapter makes) can be followed; older ones cannot.
    fn follow_target(&self, target_name: &str, run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        let follower = CodeshipFollower::new(target_name, self.client.clone(), run)?;
        Some(Arc::new(FollowOnly(follower)))
    }

    async fn check_online(&self) -> Result<()> {
        self.client.resolve_organization().await?;
        let request = Request::get(&["projects"]).query("per_page", "1");
        self.client.send(CallKind::Idempotent, "codeship.list_projects", request).await.map(|_| ())
    }

    fn share_budget(&self, budget: Arc<dyn SharedBudget>) {
        self.client.share_budget(budget, &format!("codeship.{}", self.name));
    }
}
