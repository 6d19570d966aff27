//! The trait every provider adapter implements, one value per configured target.

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::git_ref::GitRef;
use crate::provider::ProviderKind;
use crate::run::{
    Decision, ProviderRunRef, RecentQuery, RerunOptions, RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};

/// One configured target at its provider. Held as `Arc<dyn CiTarget>`; values of one account
/// share its HTTP client, token cache and rate limiter.
///
/// Adapters never decide which candidate belongs to which run: the gateway matches.
#[async_trait]
pub trait CiTarget: Send + Sync + std::fmt::Debug + 'static {
    /// The provider kind.
    fn kind(&self) -> ProviderKind;

    /// The provider object this target builds (`gh/org/repo`, `project/pipeline`, a project uuid).
    fn locator(&self) -> String;

    /// What this target can do.
    fn capabilities(&self) -> Capabilities;

    /// Refuse, before anything is stored, a ref this target cannot build (a tag where the
    /// provider has none, a sha it cannot pin). Adapters with target options that change this
    /// (e.g. CircleCI's `ignore_sha`) override it.
    fn check_ref(&self, git_ref: &GitRef) -> std::result::Result<(), String> {
        let caps = self.capabilities();
        if git_ref.tag.is_some() && !caps.tag {
            return Err(format!("{} targets cannot build a tag; give a branch", self.kind()));
        }
        if git_ref.sha.is_some() && !caps.pin_sha {
            return Err(format!("{} targets cannot pin a commit sha", self.kind()));
        }
        Ok(())
    }

    /// Start a run. Adapters retry only errors that prove the request was not processed.
    async fn trigger(&self, spec: &TriggerSpec) -> Result<TriggerOutcome>;

    /// Observe a run.
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus>;

    /// Ask the provider to cancel a run; confirmed by a later `status`.
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()>;

    /// Run a finished run again.
    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> Result<TriggerOutcome>;

    /// Approve or deny a run waiting for approval (where `capabilities().approve`).
    async fn approve(&self, run: &ProviderRunRef, decision: Decision) -> Result<()>;

    /// Recent provider runs of this target matching `query`, newest first.
    async fn find_recent(&self, query: &RecentQuery) -> Result<Vec<RunCandidate>>;
}
