//! The three simulators set up the way `config/sandbox.toml` expects, for `cigw sandbox` and
//! end-to-end tests.

use std::time::Duration;

use crate::circleci::{self, CircleciSim, CircleciSimConfig, SimProject, WebhookTarget};
use crate::codefresh::{CodefreshSim, CodefreshSimConfig};
use crate::codeship::{CodeshipSim, CodeshipSimConfig};
use crate::harness::{Harness, SimServer};

/// The CircleCI project the sandbox targets build.
pub const CIRCLECI_PROJECT: &str = "gh/acme/api";
/// The signing secret of the sandbox's CircleCI webhooks.
pub const CIRCLECI_WEBHOOK_SECRET: &str = "sandbox-webhook-secret";
/// The Codefresh pipelines the sandbox targets run.
pub const CODEFRESH_PIPELINES: [&str; 2] = ["web/e2e", "web/deploy"];

/// The three running simulators.
#[derive(Debug)]
pub struct SandboxProviders {
    /// Their shared harness (clock, faults, recorder, build counter).
    pub harness: Harness,
    /// CircleCI.
    pub circleci: CircleciSim,
    /// Its server (base URL: `<url>/api/v2`).
    pub circleci_server: SimServer,
    /// Codefresh.
    pub codefresh: CodefreshSim,
    /// Its server (base URL: `<url>/api`).
    pub codefresh_server: SimServer,
    /// Codeship.
    pub codeship: CodeshipSim,
    /// Its server (base URL: `<url>/v2`).
    pub codeship_server: SimServer,
}

/// Longest time a CircleCI pipeline spends processing its config before its workflows are
/// listed. CircleCI takes seconds whatever the build's length (clients wait 2–5 s before listing
/// workflows); were it scaled with the build, a long build would stay `created` without
/// workflows past the gateway's default `setup_grace` (60 s) and end `skipped`.
const CONFIG_PROCESSING_AT_MOST: Duration = Duration::from_secs(5);

/// Phase durations, scaled so a whole run takes about `run_for` of simulated time.
fn phases(run_for: Duration) -> (Duration, Duration) {
    let short = (run_for / 6).max(Duration::from_millis(100));
    (short, run_for)
}

/// The CircleCI simulator's timing for builds lasting `run_for`: config processing (capped at
/// [`CONFIG_PROCESSING_AT_MOST`]), then each workflow queued for a sixth of the build, then
/// running for `run_for`.
fn circleci_timing(run_for: Duration) -> CircleciSimConfig {
    let (short, long) = phases(run_for);
    let processing = short.min(CONFIG_PROCESSING_AT_MOST);
    CircleciSimConfig {
        workflows_after: processing,
        pending_for: processing / 2,
        queued_for: short,
        run_for: long,
        ..CircleciSimConfig::default()
    }
}

impl SandboxProviders {
    /// Start all three on ephemeral ports, on a harness whose clock runs `speed` times real time,
    /// with runs lasting about `run_for` of simulated time.
    pub async fn start(speed: f64, run_for: Duration) -> std::io::Result<Self> {
        let harness = Harness::running(speed);
        let (short, long) = phases(run_for);

        let mut api = SimProject::new(CIRCLECI_PROJECT).with_definition(circleci::DEFAULT_DEFINITION_ID);
        api.parameters.push("deploy_env".into());
        let circleci_config = CircleciSimConfig { projects: vec![api], ..circleci_timing(run_for) };
        // `circleci::start` also runs the task that sends the configured webhooks.
        let (circleci, circleci_server) = circleci::start(&harness, circleci_config).await;

        let codefresh_config = CodefreshSimConfig {
            pipelines: CODEFRESH_PIPELINES.iter().map(|p| p.to_string()).collect(),
            pending_for: short,
            elected_for: short,
            running_for: long,
            terminating_for: short,
            ..CodefreshSimConfig::default()
        };
        let codefresh = CodefreshSim::new(&harness, codefresh_config);
        let codefresh_server = SimServer::start(&harness, codefresh.router(), CodefreshSim::fault_responses()).await?;

        let codeship_config = CodeshipSimConfig {
            initiated_for: short,
            waiting_for: short,
            testing_for: long,
            ..CodeshipSimConfig::default()
        };
        let (codeship, codeship_server) = CodeshipSim::start(&harness, codeship_config).await;
        Ok(Self { harness, circleci, circleci_server, codefresh, codefresh_server, codeship, codeship_server })
    }

    /// Send signed `workflow-completed` webhooks to a gateway's callback URL.
    pub fn send_circleci_webhooks_to(&self, url: impl Into<String>) {
        self.circleci.set_webhook(Some(WebhookTarget { url: url.into(), secret: CIRCLECI_WEBHOOK_SECRET.to_string() }));
    }

    /// Configuration overrides pointing the sandbox accounts at these simulators.
    pub fn base_url_overrides(&self) -> Vec<(String, String)> {
        vec![
            ("providers.circleci.sandbox.base_url".into(), format!("{}/api/v2", self.circleci_server.url())),
            ("providers.codefresh.sandbox.base_url".into(), format!("{}/api", self.codefresh_server.url())),
            ("providers.codeship.sandbox.base_url".into(), format!("{}/v2", self.codeship_server.url())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflows_of_any_build_appear_within_the_default_setup_grace() {
        for run_for in
            [Duration::from_secs(2), Duration::from_secs(20), Duration::from_secs(600), Duration::from_secs(7200)]
        {
            let c = circleci_timing(run_for);
            // The gateway's default `setup_grace` is 60 s.
            assert!(c.workflows_after < Duration::from_secs(60), "{run_for:?}: {:?}", c.workflows_after);
            assert!(c.pending_for < c.workflows_after, "{run_for:?}");
            assert_eq!(c.run_for, run_for);
        }
        // Short builds keep their proportions: a sixth of the build before the workflows appear.
        let c = circleci_timing(Duration::from_secs(12));
        assert_eq!((c.workflows_after, c.queued_for), (Duration::from_secs(2), Duration::from_secs(2)));
    }
}
