//! Following a build whose target was removed from the configuration: status and termination
//! need only the build id, so the account's client is enough. [`cigw_core::follow::FollowOnly`]
//! makes it a target.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::follow::Follow;
use cigw_core::{ProviderKind, ProviderRunRef, Result, RunStatus};

use crate::client::Client;
use crate::target::{build_status, terminate_build};

/// Reads and terminates the builds of a removed target by id.
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
impl Follow for CodefreshFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codefresh
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its builds only)", self.name)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id, follow_only = true))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        build_status(&self.client, run).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id, follow_only = true))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        terminate_build(&self.client, run).await
    }
}
