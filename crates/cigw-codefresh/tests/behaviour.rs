//! The shared behaviour suite against the Codefresh simulator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cigw_codefresh::CodefreshAccount;
use cigw_codefresh::config::{AccountConfig, PipelineLocator, RunOptions, TargetConfig};
use cigw_core::retry::RetryPolicy;
use cigw_core::{CiTarget, GitRef, Parameters};
use cigw_sim::codefresh::{self, CodefreshSim, CodefreshSimConfig, DEFAULT_API_KEY, DEFAULT_PIPELINE};
use cigw_sim::{Harness, SimServer};
use secrecy::SecretString;
use url::Url;

struct CodefreshFixture {
    harness: Harness,
    _sim: CodefreshSim,
    server: SimServer,
}

impl CodefreshFixture {
    fn target_with(&self, key: &str, pipeline: &str) -> Arc<dyn CiTarget> {
        let mut settings =
            AccountConfig::new(Url::parse(&format!("{}/api", self.server.url())).unwrap(), SecretString::from(key));
        settings.transport.timeout = Duration::from_secs(5);
        settings.transport.retry = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            max_retries: 3,
            deadline: Duration::from_secs(5),
        };
        let account = CodefreshAccount::new("sim", settings).unwrap();
        Arc::new(account.target_from(
            "behaviour",
            TargetConfig {
                pipeline: PipelineLocator::Name(pipeline.into()),
                trigger: None,
                variables: BTreeMap::new(),
                options: RunOptions::default(),
                contexts: vec![],
            },
        ))
    }
}

impl cigw_sim::behaviour::Fixture for CodefreshFixture {
    fn harness(&self) -> &Harness {
        &self.harness
    }

    fn target(&self) -> Arc<dyn CiTarget> {
        self.target_with(DEFAULT_API_KEY, DEFAULT_PIPELINE)
    }

    fn approval(&self) -> Option<(GitRef, Parameters)> {
        Some((GitRef::branch("needs-approval"), Parameters::new()))
    }

    fn unauthenticated_target(&self) -> Arc<dyn CiTarget> {
        self.target_with("65f0aaaabbbbccccddddeeee.not-a-key", DEFAULT_PIPELINE)
    }

    fn missing_target(&self) -> Arc<dyn CiTarget> {
        self.target_with(DEFAULT_API_KEY, "demo/no-such-pipeline")
    }
}

async fn fixture() -> CodefreshFixture {
    let harness = Harness::new();
    let (sim, server) = codefresh::start(&harness, CodefreshSimConfig::default()).await;
    CodefreshFixture { harness, _sim: sim, server }
}

cigw_sim::behaviour_tests!(fixture());
