//! Following a build whose target was removed from the configuration. Codeship addresses a
//! build only through its project, so this works for refs that record the project in `extra`
//! (every ref this adapter makes does; see [`project_of`]).

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::{
    Capabilities, CiTarget, Decision, Error, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, Result,
    RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};

use crate::client::CodeshipClient;
use crate::target::{CodeshipTarget, project_of};

/// A follow-only target: reads and stops builds of one project; starts nothing.
#[derive(Debug)]
pub struct CodeshipFollower {
    inner: CodeshipTarget,
}

impl CodeshipFollower {
    /// A follower of `run`'s build through `client`, on behalf of former target `name`; `None`
    /// when the ref does not record its project.
    pub fn for_run(name: impl Into<String>, client: Arc<CodeshipClient>, run: &ProviderRunRef) -> Option<Self> {
        let (project_uuid, project_type) = project_of(run)?;
        Some(Self { inner: CodeshipTarget::new(name, client, project_uuid, project_type).reading_builds_alone() })
    }

    /// The project uuid the followed build belongs to.
    pub fn project_uuid(&self) -> &str {
        self.inner.project_uuid()
    }
}

#[async_trait]
impl CiTarget for CodeshipFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its builds only)", self.inner.project_uuid())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FOLLOW_ONLY
    }

    async fn trigger(&self, _spec: &TriggerSpec) -> Result<TriggerOutcome> {
        Err(Error::Unsupported { operation: "trigger" })
    }

    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        self.inner.status(run).await
    }

    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        self.inner.cancel(run).await
    }

    async fn rerun(&self, _run: &ProviderRunRef, _options: RerunOptions) -> Result<TriggerOutcome> {
        Err(Error::Unsupported { operation: "rerun" })
    }

    async fn approve(&self, _run: &ProviderRunRef, _decision: Decision) -> Result<()> {
        Err(Error::Unsupported { operation: "approve" })
    }

    async fn find_recent(&self, _query: &RecentQuery) -> Result<Vec<RunCandidate>> {
        Err(Error::Unsupported { operation: "find_recent" })
    }
}
