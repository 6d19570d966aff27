//! Following a build whose target was removed from the configuration: status and termination
//! need only the build id, so the account's client is enough.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::{
    Capabilities, CiTarget, Decision, Error, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, Result,
    RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};

use crate::client::Client;
use crate::target::{build_status, terminate_build};

/// A follow-only target: reads and terminates builds by id; starts nothing.
#[derive(Debug)]
pub struct CodefreshFollower {
    name: String,
    client: Arc<Client>,
}

impl CodefreshFollower {
    /// A follower of the builds of former target `name` through `client`.
    pub fn new(name: impl Into<String>, client: Arc<Client>) -> Self {
        Self { name: name.into(), client }
    }
}

#[async_trait]
impl CiTarget for CodefreshFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codefresh
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its builds only)", self.name)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FOLLOW_ONLY
    }

    async fn trigger(&self, _spec: &TriggerSpec) -> Result<TriggerOutcome> {
        Err(Error::Unsupported { operation: "trigger" })
    }

    #[tracing::instrument(skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id, follow_only = true))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        build_status(&self.client, run).await
    }

    #[tracing::instrument(skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id, follow_only = true))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        terminate_build(&self.client, run).await
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
