//! Following a pipeline whose target was removed from the configuration: status and cancel
//! need only the pipeline id (and a rerun's workflow ids, kept in the ref), so the account's
//! client is enough.

use std::time::Duration;

use async_trait::async_trait;
use cigw_core::{
    Capabilities, CiTarget, Decision, Error, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, Result,
    RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};

use crate::client::CircleciClient;
use crate::target::{cancel_pipeline, pipeline_status};

/// A follow-only target: reads and cancels pipelines by id; starts nothing.
#[derive(Debug, Clone)]
pub struct CircleciFollower {
    name: String,
    client: CircleciClient,
    setup_grace: Duration,
}

impl CircleciFollower {
    /// A follower of the pipelines of former target `name` through `client`; a pipeline with no
    /// workflow after `setup_grace` is read as skipped, as its target would have.
    pub fn new(name: impl Into<String>, client: CircleciClient, setup_grace: Duration) -> Self {
        Self { name: name.into(), client, setup_grace }
    }
}

#[async_trait]
impl CiTarget for CircleciFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its pipelines only)", self.name)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FOLLOW_ONLY
    }

    async fn trigger(&self, _spec: &TriggerSpec) -> Result<TriggerOutcome> {
        Err(Error::Unsupported { operation: "trigger" })
    }

    #[tracing::instrument(skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, attempt = run.attempt, follow_only = true))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        // Without the project slug the web link cannot be rebuilt: keep the one recorded at dispatch.
        pipeline_status(&self.client, run, self.setup_grace, |_| run.url.clone()).await
    }

    #[tracing::instrument(skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, follow_only = true))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        cancel_pipeline(&self.client, run).await
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
