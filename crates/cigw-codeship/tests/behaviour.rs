//! The shared behaviour suite against the Codeship simulator, for a Basic and a Pro project.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use cigw_codeship::{ProjectType, TargetConfig};
use cigw_core::CiTarget;
use cigw_sim::behaviour::Fixture;
use cigw_sim::codeship::{
    BASIC_PROJECT_UUID, CodeshipSim, CodeshipSimConfig, DEFAULT_EMAIL, DEFAULT_PASSWORD, PRO_PROJECT_UUID,
};
use cigw_sim::{Harness, SimServer};

struct CodeshipFixture {
    harness: Harness,
    _server: SimServer,
    _sim: CodeshipSim,
    target: Arc<dyn CiTarget>,
    unauthenticated: Arc<dyn CiTarget>,
    missing: Arc<dyn CiTarget>,
}

#[async_trait]
impl Fixture for CodeshipFixture {
    fn harness(&self) -> &Harness {
        &self.harness
    }
    fn target(&self) -> Arc<dyn CiTarget> {
        self.target.clone()
    }
    fn approval(&self) -> Option<(cigw_core::GitRef, cigw_core::Parameters)> {
        None
    }
    fn unauthenticated_target(&self) -> Arc<dyn CiTarget> {
        self.unauthenticated.clone()
    }
    fn missing_target(&self) -> Arc<dyn CiTarget> {
        self.missing.clone()
    }
}

/// `configured_type` None makes the adapter discover the type with one GET.
async fn fixture(project_uuid: &str, configured_type: Option<ProjectType>) -> CodeshipFixture {
    cigw_core::telemetry::init_for_tests();
    let harness = Harness::new();
    // The suite polls far more often than a real poller; the 60/min budget has its own tests.
    let config = CodeshipSimConfig { rate_limit_per_minute: 100_000, ..Default::default() };
    let (sim, server) = CodeshipSim::start(&harness, config).await;
    let base = format!("{}/v2", server.url());
    let account = common::account_on(&harness, common::fast_config(&base, DEFAULT_EMAIL, DEFAULT_PASSWORD, "acme"));
    let refused = common::account_on(&harness, common::fast_config(&base, DEFAULT_EMAIL, "wrong-password", "acme"));
    CodeshipFixture {
        target: Arc::new(
            account
                .target_from("app", TargetConfig { project_uuid: project_uuid.into(), project_type: configured_type }),
        ),
        unauthenticated: Arc::new(
            refused
                .target_from("app", TargetConfig { project_uuid: project_uuid.into(), project_type: configured_type }),
        ),
        missing: Arc::new(account.target_from(
            "gone",
            TargetConfig {
                project_uuid: "00000000-0000-0000-0000-000000000000".into(),
                project_type: Some(ProjectType::Basic),
            },
        )),
        harness,
        _server: server,
        _sim: sim,
    }
}

mod basic {
    use super::*;
    cigw_sim::behaviour_tests!(fixture(BASIC_PROJECT_UUID, Some(ProjectType::Basic)));
}

mod pro {
    use super::*;
    cigw_sim::behaviour_tests!(fixture(PRO_PROJECT_UUID, None));
}
