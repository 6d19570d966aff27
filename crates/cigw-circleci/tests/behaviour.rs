//! The shared behaviour suite against the CircleCI simulator.

use std::sync::Arc;
use std::time::Duration;

use cigw_circleci::CircleciAccount;
use cigw_circleci::config::{AccountConfig, TargetConfig};
use cigw_core::config::Problems;
use cigw_core::retry::RetryPolicy;
use cigw_core::{
    CiTarget, ConcurrencyPolicy, GitRef, ParamType, ParamValue, ParameterSpec, Parameters, ProviderKind, TargetSpec,
};
use cigw_sim::circleci::{self, APPROVAL_PARAMETER, CircleciSim, CircleciSimConfig, DEFAULT_PROJECT, DEFAULT_TOKEN};
use cigw_sim::{Harness, SimServer};
use secrecy::SecretString;
use url::Url;

struct CircleciFixture {
    harness: Harness,
    _sim: CircleciSim,
    server: SimServer,
}

fn param(name: &str, kind: ParamType) -> ParameterSpec {
    ParameterSpec {
        name: name.into(),
        kind,
        default: None,
        allowed: None,
        required: false,
        secret: false,
        description: None,
    }
}

impl CircleciFixture {
    fn build(&self, token: &str, slug: &str) -> Arc<dyn CiTarget> {
        let base = Url::parse(&format!("{}/api/v2", self.server.url())).unwrap();
        let mut cfg = AccountConfig::new(base, SecretString::from(token.to_string()));
        cfg.transport.retry = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries: 3,
            deadline: Duration::from_secs(5),
        };
        let account = CircleciAccount::new("sim", cfg).unwrap();
        let spec = TargetSpec {
            name: "web".into(),
            provider: ProviderKind::Circleci,
            account: "sim".into(),
            default_branch: "main".into(),
            parameters: vec![param("cigw_run_id", ParamType::String), param(APPROVAL_PARAMETER, ParamType::Boolean)],
            max_duration: None,
            concurrency: ConcurrencyPolicy::Queue,
            debounce: None,
            description: None,
        };
        let mut problems = Problems::default();
        let fields = serde_json::json!({"project_slug": slug});
        let target = TargetConfig::parse(&spec, "targets.web", fields.as_object().unwrap(), &mut problems)
            .map(|c| account.target_from("web", c));
        assert!(!problems.has_errors(), "{problems:?}");
        Arc::new(target.unwrap())
    }
}

#[async_trait::async_trait]
impl cigw_sim::behaviour::Fixture for CircleciFixture {
    fn harness(&self) -> &Harness {
        &self.harness
    }

    fn target(&self) -> Arc<dyn CiTarget> {
        self.build(DEFAULT_TOKEN, DEFAULT_PROJECT)
    }

    fn approval(&self) -> Option<(GitRef, Parameters)> {
        let mut p = Parameters::new();
        p.insert(APPROVAL_PARAMETER, ParamValue::Bool(true), false);
        Some((GitRef::branch("release"), p))
    }

    fn unauthenticated_target(&self) -> Arc<dyn CiTarget> {
        self.build("not-a-valid-token", DEFAULT_PROJECT)
    }

    fn missing_target(&self) -> Arc<dyn CiTarget> {
        self.build(DEFAULT_TOKEN, "gh/acme/no-such-repo")
    }
}

async fn fixture() -> CircleciFixture {
    let harness = Harness::new();
    // One item per page, so every list the adapter reads is followed across pages.
    let config = CircleciSimConfig { page_size: 1, ..CircleciSimConfig::default() };
    let (sim, server) = circleci::start(&harness, config).await;
    CircleciFixture { harness, _sim: sim, server }
}

cigw_sim::behaviour_tests!(fixture());
