//! Following runs whose target was removed from the configuration: an adapter implements
//! [`Follow`] (status and cancel by the run's ref alone) and [`FollowOnly`] makes it a
//! [`CiTarget`] that starts nothing.

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::ci_target::CiTarget;
use crate::error::{Error, Result};
use crate::provider::ProviderKind;
use crate::run::{
    Decision, ProviderRunRef, RecentQuery, RerunOptions, RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};

/// What a provider can still do with a run of a removed target: read it and cancel it.
#[async_trait]
pub trait Follow: Send + Sync + std::fmt::Debug + 'static {
    /// The provider kind.
    fn kind(&self) -> ProviderKind;

    /// What is followed, as shown to people.
    fn locator(&self) -> String;

    /// Observe a run.
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus>;

    /// Ask the provider to cancel a run.
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()>;
}

/// A follow-only target: status and cancel through `F`, every other operation `Unsupported`.
#[derive(Debug)]
pub struct FollowOnly<F>(pub F);

#[async_trait]
impl<F: Follow> CiTarget for FollowOnly<F> {
    fn kind(&self) -> ProviderKind {
        self.0.kind()
    }

    fn locator(&self) -> String {
        self.0.locator()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FOLLOW_ONLY
    }

    async fn trigger(&self, _spec: &TriggerSpec) -> Result<TriggerOutcome> {
        Err(Error::Unsupported { operation: "trigger" })
    }

    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        self.0.status(run).await
    }

    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        self.0.cancel(run).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Reader;

    #[async_trait]
    impl Follow for Reader {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Codefresh
        }

        fn locator(&self) -> String {
            "old (removed target)".into()
        }

        async fn status(&self, _run: &ProviderRunRef) -> Result<RunStatus> {
            Err(Error::NotFound { message: "gone".into() })
        }

        async fn cancel(&self, _run: &ProviderRunRef) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn follows_and_cancels_but_starts_nothing() {
        let t = FollowOnly(Reader);
        let run = ProviderRunRef::new("1");
        assert_eq!(t.capabilities(), Capabilities::FOLLOW_ONLY);
        assert_eq!(t.locator(), "old (removed target)");
        assert!(matches!(t.status(&run).await, Err(Error::NotFound { .. })));
        assert!(t.cancel(&run).await.is_ok());
        assert!(matches!(t.rerun(&run, RerunOptions::default()).await, Err(Error::Unsupported { operation: "rerun" })));
        assert!(matches!(
            t.find_recent(&RecentQuery { since: chrono::Utc::now(), branch: None, tag: None, sha: None }).await,
            Err(Error::Unsupported { operation: "find_recent" })
        ));
    }
}
