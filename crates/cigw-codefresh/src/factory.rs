//! The provider factory and the account value the catalog builds targets from.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::Problems;
use cigw_core::follow::FollowOnly;
use cigw_core::provider::{ProviderAccount, ProviderFactory, built_account};
use cigw_core::shared_budget::SharedBudget;
use cigw_core::transport::Request;
use cigw_core::{CallKind, CiTarget, ProviderKind, ProviderRunRef, Result, TargetSpec};

use crate::client::Client;
use crate::config::{AccountConfig, TargetConfig};
use crate::follow::CodefreshFollower;
use crate::target::CodefreshTarget;

/// Builds Codefresh accounts from `[providers.codefresh.<name>]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodefreshFactory;

impl ProviderFactory for CodefreshFactory {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codefresh
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
        built_account(path, CodefreshAccount::new(name, config), problems)
    }
}

/// One Codefresh account: its client (rate limiter and concurrency limit included) is shared by
/// all its targets. `Debug` never shows the API key.
#[derive(Debug, Clone)]
pub struct CodefreshAccount {
    name: String,
    client: Arc<Client>,
}

impl CodefreshAccount {
    /// An account named `name`.
    pub fn new(name: impl Into<String>, config: AccountConfig) -> Result<Self> {
        Ok(Self { name: name.into(), client: Arc::new(Client::new(config)?) })
    }

    /// The shared client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// A target of this account from its parsed configuration.
    pub fn target_from(&self, name: impl Into<String>, config: TargetConfig) -> CodefreshTarget {
        CodefreshTarget::new(name, self.client.clone(), config)
    }
}

#[async_trait]
impl ProviderAccount for CodefreshAccount {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codefresh
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let t = &self.client.config().transport;
        let limit = t.rate_limit.map_or_else(|| "none".to_string(), |l| l.to_string());
        format!(
            "Codefresh at {} (timeout {}, rate limit {limit}, concurrency {})",
            t.base_url,
            humantime::format_duration(t.timeout),
            t.concurrency
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

    /// Status and termination need only the build id, so every build can be followed.
    fn follow_target(&self, target_name: &str, _run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        Some(Arc::new(FollowOnly(CodefreshFollower::new(target_name, self.client.clone()))))
    }

    /// `GET /api/user`: the call the official SDK validates API keys with.
    async fn check_online(&self) -> Result<()> {
        self.client.send(CallKind::Idempotent, "get user", Request::get(&["user"])).await?;
        Ok(())
    }

    fn share_budget(&self, budget: Arc<dyn SharedBudget>) {
        self.client.share_budget(budget, &format!("codefresh.{}", self.name));
    }
}
