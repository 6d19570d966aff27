//! The Codeship `ProviderFactory` and the account value every target of an account shares.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::config::{Problems, join};
use cigw_core::{CallKind, CiTarget, ProviderKind, ProviderRunRef, Result, TargetSpec};
use reqwest::Method;

use crate::client::{Clock, CodeshipClient, system_clock};
use crate::config::{AccountConfig, TargetSettings};
use crate::follow::CodeshipFollower;
use crate::models::ProjectType;
use crate::target::CodeshipTarget;

/// Builds Codeship accounts from `[providers.codeship.<name>]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeshipFactory;

impl cigw_core::provider::ProviderFactory for CodeshipFactory {
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
        parse_target(spec, path, table, problems);
    }

    fn account(
        &self,
        name: &str,
        path: &str,
        table: &serde_json::Value,
        problems: &mut Problems,
    ) -> Option<Arc<dyn cigw_core::provider::ProviderAccount>> {
        let config = AccountConfig::parse(path, table, problems)?;
        match CodeshipAccount::new(name, config) {
            Ok(account) => Some(Arc::new(account)),
            Err(e) => {
                problems.error(path, e.to_string());
                None
            }
        }
    }
}

/// One Codeship credential (API user) and organization: its client holds the token cache, the
/// rate limiter and the concurrency limit shared by all its targets.
#[derive(Debug, Clone)]
pub struct CodeshipAccount {
    name: String,
    client: Arc<CodeshipClient>,
}

impl CodeshipAccount {
    /// An account on the wall clock.
    pub fn new(name: impl Into<String>, config: AccountConfig) -> Result<Self> {
        Self::with_clock(name, config, system_clock())
    }

    /// An account reading time (token expiry, `sent_at`) from `clock`.
    pub fn with_clock(name: impl Into<String>, config: AccountConfig, clock: Clock) -> Result<Self> {
        Ok(Self { name: name.into(), client: Arc::new(CodeshipClient::with_clock(config, clock)?) })
    }

    /// The shared client.
    pub fn client(&self) -> &Arc<CodeshipClient> {
        &self.client
    }

    /// A target for one project of this account, without going through the configuration.
    pub fn project(
        &self,
        target_name: impl Into<String>,
        project_uuid: impl Into<String>,
        project_type: Option<ProjectType>,
    ) -> Arc<CodeshipTarget> {
        Arc::new(CodeshipTarget::new(target_name, self.client.clone(), project_uuid, project_type))
    }
}

#[async_trait]
impl cigw_core::provider::ProviderAccount for CodeshipAccount {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let c = self.client.config();
        format!(
            "Codeship API v2 (sunset: end of life 2026-01-31) at {}, organization `{}`, {} requests per {}s",
            self.client.base_url(),
            c.organization,
            c.rate_limit.requests,
            c.rate_limit.per.as_secs()
        )
    }

    fn target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>> {
        let settings = parse_target(spec, path, table, problems)?;
        Some(self.project(spec.name.clone(), settings.project_uuid, settings.project_type))
    }

    /// Codeship reaches a build only through its project: refs that record it in `extra` (all
    /// this adapter makes) can be followed; older ones cannot.
    fn follow_target(&self, target_name: &str, run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        let follower = CodeshipFollower::for_run(target_name, self.client.clone(), run)?;
        Some(Arc::new(follower))
    }

    async fn check_online(&self) -> Result<()> {
        self.client.resolve_organization().await?;
        let query = [("per_page", "1".to_string())];
        cigw_core::retry::with_retry(
            &self.client.config().retry,
            CallKind::Idempotent,
            "codeship.list_projects",
            || self.client.request(Method::GET, &["projects"], &query, None, CallKind::Idempotent),
        )
        .await
        .map(|_| ())
    }
}

/// The Codeship keys of a target, refusing declared parameters (Codeship builds take none).
fn parse_target(
    spec: &TargetSpec,
    path: &str,
    table: &serde_json::Map<String, serde_json::Value>,
    problems: &mut Problems,
) -> Option<TargetSettings> {
    let settings = TargetSettings::parse(path, table, problems);
    if !spec.parameters.is_empty() {
        let names: Vec<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
        problems.error(
            join(path, "parameters"),
            format!(
                "a Codeship target cannot declare parameters (Codeship builds take none); remove: {}",
                names.join(", ")
            ),
        );
        return None;
    }
    settings
}
