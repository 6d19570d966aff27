//! The behaviour suite against the in-memory fake target, in both trigger styles.

use std::sync::Arc;

use cigw_core::{CiTarget, GitRef, ParamValue, Parameters};
use cigw_sim::Harness;
use cigw_sim::behaviour::Fixture;
use cigw_sim::fake::{FakeConfig, FakeTarget};

struct FakeFixture {
    harness: Harness,
    config: FakeConfig,
    target: Arc<FakeTarget>,
}

impl Fixture for FakeFixture {
    fn harness(&self) -> &Harness {
        &self.harness
    }
    fn target(&self) -> Arc<dyn CiTarget> {
        self.target.clone()
    }
    fn approval(&self) -> Option<(GitRef, Parameters)> {
        let mut p = Parameters::new();
        p.insert("approval", ParamValue::Bool(true), false);
        Some((GitRef::branch("main"), p))
    }
    fn unauthenticated_target(&self) -> Arc<dyn CiTarget> {
        let config = FakeConfig { refuse_credentials: true, ..self.config.clone() };
        Arc::new(FakeTarget::new(self.harness.clone(), config))
    }
    fn missing_target(&self) -> Arc<dyn CiTarget> {
        Arc::new(FakeTarget::new(self.harness.clone(), FakeConfig { missing: true, ..self.config.clone() }))
    }
}

async fn fixture(returns_id: bool) -> FakeFixture {
    let harness = Harness::new();
    let config = FakeConfig { returns_id, ..FakeConfig::default() };
    let target = Arc::new(FakeTarget::new(harness.clone(), config.clone()));
    FakeFixture { harness, config, target }
}

mod with_ids {
    use super::*;
    cigw_sim::behaviour_tests!(fixture(true));
}

mod without_ids {
    use super::*;
    cigw_sim::behaviour_tests!(fixture(false));
}
