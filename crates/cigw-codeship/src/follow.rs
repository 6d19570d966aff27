//! Following a build whose target was removed from the configuration. Codeship addresses a
//! build only through its project, so this works for refs that record the project in `extra`
//! (every ref this adapter makes does; see [`project_of`]). [`cigw_core::follow::FollowOnly`]
//! makes it a target.

use std::sync::Arc;

use async_trait::async_trait;
use cigw_core::follow::Follow;
use cigw_core::{CiTarget, ProviderKind, ProviderRunRef, Result, RunStatus};

use crate::client::Client;
use crate::config::TargetConfig;
use crate::target::{CodeshipTarget, project_of};

/// Reads and stops the builds of one project of a removed target.
#[derive(Debug)]
pub struct CodeshipFollower {
    inner: CodeshipTarget,
}

impl CodeshipFollower {
    /// A follower of `run`'s build through `client`, on behalf of former target `name`; `None`
    /// when the ref does not record its project.
    pub fn new(name: impl Into<String>, client: Arc<Client>, run: &ProviderRunRef) -> Option<Self> {
        let (project_uuid, project_type) = project_of(run)?;
        let config = TargetConfig { project_uuid, project_type };
        Some(Self { inner: CodeshipTarget::new(name, client, config).reading_builds_alone() })
    }

    /// The project uuid the followed build belongs to.
    pub fn project_uuid(&self) -> &str {
        self.inner.project_uuid()
    }
}

#[async_trait]
impl Follow for CodeshipFollower {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
    }

    fn locator(&self) -> String {
        format!("{} (removed target; following its builds only)", self.inner.project_uuid())
    }

    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        self.inner.status(run).await
    }

    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        self.inner.cancel(run).await
    }
}
