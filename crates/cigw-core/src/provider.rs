//! Provider kinds and the extension point through which each adapter crate parses its own
//! account and target tables and builds its `CiTarget`s.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::shared_budget::SharedBudget;
use crate::{CiTarget, ProviderRunRef, Result, TargetSpec};

/// The CI providers cigw can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// CircleCI API v2 pipelines.
    Circleci,
    /// Codefresh classic pipelines.
    Codefresh,
    /// Codeship API v2 builds (sunset provider).
    Codeship,
}

impl ProviderKind {
    /// Every kind, in a stable order.
    pub const ALL: [ProviderKind; 3] = [Self::Circleci, Self::Codefresh, Self::Codeship];

    /// The name used in configuration, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Circleci => "circleci",
            Self::Codefresh => "codefresh",
            Self::Codeship => "codeship",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown provider `{s}` (expected circleci, codefresh or codeship)"))
    }
}

/// A verified provider callback (e.g. a CircleCI `workflow-completed` webhook), reduced to what
/// the gateway needs to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The provider's event id, used to drop duplicate deliveries.
    pub event_id: String,
    /// The provider run id the event is about (a CircleCI pipeline id).
    pub provider_run_id: String,
    /// The event type as the provider names it.
    pub event_type: String,
}

/// Builds accounts of one provider kind from their configuration tables.
///
/// Each adapter crate provides one; the binary registers all of them. Parsing reports problems
/// into `Problems` with full key paths instead of stopping at the first, so `check-config` can
/// list every mistake at once.
pub trait ProviderFactory: Send + Sync + 'static {
    /// The kind this factory builds.
    fn kind(&self) -> ProviderKind;

    /// Parse `providers.<kind>.<name>` (at key path `path`) and build the account.
    fn account(
        &self,
        name: &str,
        path: &str,
        table: &serde_json::Value,
        problems: &mut Problems,
    ) -> Option<Arc<dyn ProviderAccount>>;

    /// Check the provider-specific keys of a target whose account could not be built (missing
    /// or broken), so the target's own mistakes are reported too.
    fn check_target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    );
}

/// What [`ProviderFactory::account`] answers for an account built from its parsed
/// configuration: an account that cannot be built (its HTTP client cannot be made) is a problem
/// at `path`.
pub fn built_account<A: ProviderAccount>(
    path: &str,
    account: Result<A>,
    problems: &mut Problems,
) -> Option<Arc<dyn ProviderAccount>> {
    match account {
        Ok(account) => Some(Arc::new(account)),
        Err(e) => {
            problems.error(path, e.to_string());
            None
        }
    }
}

/// One configured provider account: credentials, base URL, HTTP client, token cache and rate
/// limiter, shared by every target that names it.
#[async_trait]
pub trait ProviderAccount: Send + Sync + fmt::Debug + 'static {
    /// The provider kind.
    fn kind(&self) -> ProviderKind;

    /// The account name from the configuration.
    fn name(&self) -> &str;

    /// A one-line description for `check-config` (base URL and the like; never a secret).
    fn describe(&self) -> String;

    /// Parse the provider-specific keys of `targets.<name>` (`table`, at key path `path`) and
    /// build the target.
    fn target(
        &self,
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Arc<dyn CiTarget>>;

    /// A follow-only target for one run this account started, built from the run's
    /// `ProviderRunRef` alone (plus the name of the target it belonged to, for logs): it reads the
    /// run's status and cancels it; `trigger`, `rerun`, `approve` and `find_recent` answer
    /// `Unsupported`. The gateway uses it to follow runs whose target was removed from the
    /// configuration while its account stayed.
    ///
    /// `None` when the provider needs more than the ref holds to reach the run (e.g. a Codeship
    /// build is addressed through its project, which refs recorded before it was kept there
    /// lack). The default is `None`, for adapters that cannot follow a run without its target.
    fn follow_target(&self, target_name: &str, run: &ProviderRunRef) -> Option<Arc<dyn CiTarget>> {
        let _ = (target_name, run);
        None
    }

    /// Make one cheap authenticated call to check the credentials (`check-config --online`).
    async fn check_online(&self) -> Result<()>;

    /// Draw the account's request budget (its `rate_limit`) from `budget`, shared by every
    /// replica using the same credential, instead of from a limiter of this process. The gateway
    /// calls it once at start on PostgreSQL; an adapter without a rate limiter ignores it.
    fn share_budget(&self, budget: Arc<dyn SharedBudget>);

    /// Verify and parse a provider callback delivered to `/callbacks/<kind>/<account>`.
    ///
    /// Providers without push notifications answer `Unsupported`.
    fn verify_callback(&self, headers: &[(String, String)], body: &[u8]) -> Result<Option<CallbackEvent>> {
        let _ = (headers, body);
        Err(crate::Error::Unsupported { operation: "callback" })
    }
}
