//! The provider factory and the account value the catalog builds targets from.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::Problems;
use cigw_core::provider::{ProviderAccount, ProviderFactory};
use cigw_core::{CallKind, CiTarget, ProviderKind, ProviderRunRef, Result, TargetSpec};

use crate::client::{Call, Client};
use crate::config::{AccountSettings, TargetSettings};
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
        TargetSettings::parse(spec, path, table, problems);
    }

    fn account(
        &self,
        name: &str,
        path: &str,
        table: &serde_json::Value,
        problems: &mut Problems,
    ) -> Option<Arc<dyn ProviderAccount>> {
        let settings = AccountSettings::parse(path, table, problems)?;
        match CodefreshAccount::new(name, settings) {
            Ok(account) => Some(Arc::new(account)),
            Err(e) => {
                problems.error(path, e.to_string());
                None
            }
        }
    }
}

/// One Codefresh account: its settings and the client (with rate limiter and concurrency
/// limit) every target of the account shares. `Debug` never shows the API key.
#[derive(Debug)]
pub struct CodefreshAccount {
    name: String,
    settings: AccountSettings,
    client: Arc<Client>,
}

impl CodefreshAccount {
    /// An account named `name` with `settings`.
    pub fn new(name: impl Into<String>, settings: AccountSettings) -> Result<Self> {
        let client = Arc::new(Client::new(&settings)?);
        Ok(Self { name: name.into(), settings, client })
    }

    /// The shared client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// A target of this account from already parsed settings.
    pub fn target_from(&self, name: impl Into<String>, settings: TargetSettings) -> CodefreshTarget {
        CodefreshTarget::new(name, self.client.clone(), settings)
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
        let limit = self.settings.rate_limit.map_or_else(|| "none".to_string(), |l| l.to_string());
        format!(
            "Codefresh at {} (timeout {}, rate limit {limit}, concurrency {})",
            self.settings.base_url,
            humantime::format_duration(self.settings.timeout),
            self.settings.concurrency
        )
    }

    fn target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>> {
        let settings = TargetSettings::parse(spec, path, table, problems)?;
        Some(Arc::new(self.target_from(spec.name.clone(), settings)))
    }

    /// Status and termination need only the build id, so every build can be followed.
    fn follow_target(&self, target_name: &str, _run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        Some(Arc::new(CodefreshFollower::new(target_name, self.client.clone())))
    }

    /// `GET /api/user`: the call the official SDK validates API keys with.
    async fn check_online(&self) -> Result<()> {
        self.client.call(CallKind::Idempotent, "get user", Call::get(&["user"])).await?;
        Ok(())
    }
}
