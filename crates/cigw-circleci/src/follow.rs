//! Following a pipeline whose target was removed from the configuration: status and cancel
//! need only the pipeline id (and a rerun's workflow ids, kept in the ref), so the account's
//! client is enough. [`cigw_core::follow::FollowOnly`] makes it a target.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::follow::Follow;
use cigw_core::{ProviderKind, ProviderRunRef, Result, RunStatus};

use crate::client::Client;
use crate::target::{cancel_pipeline, pipeline_status};

/// Reads and cancels the pipelines of a removed target by id.
#[derive(Debug)]
pub struct CircleciFollower {
    name: String,
    client: Arc<Client>,
}

impl CircleciFollower {
    /// A follower of the pipelines of former target `name` through `client`; a pipeline with no
    /// workflow after the account's `setup_grace` is read as skipped, as its target would have.
    pub fn new(name: impl Into<String>, client: Arc<Client>) -> Self {
        Self { name: name.into(), client }
    }
}

#[async_trait]
impl Follow for CircleciFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its pipelines only)", self.name)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, attempt = run.attempt, follow_only = true))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        // Without the project slug the web link cannot be rebuilt: keep the one recorded at dispatch.
        let setup_grace = self.client.config().setup_grace;
        pipeline_status(&self.client, run, setup_grace, |_| run.url.clone()).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, follow_only = true))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        cancel_pipeline(&self.client, run).await
    }
}
