//! A faithful simulator of the CircleCI API v2 (providers/circleci.md) at `<server>/api/v2`:
//! `Circle-Token` (or Bearer, or basic) auth with CircleCI's 401/404 bodies, the classic trigger
//! and `/pipeline/run` (201, or 200 when nothing runs), undeclared parameters refused either way
//! the notes allow, workflows that appear a few seconds after the 201 and wait `queued` first,
//! `fail-*` branches that fail, an approval parameter that holds a workflow `on_hold`, cancel,
//! rerun (a new workflow of the same name), paginated lists, 429s with `Retry-After` and
//! sometimes a plain-text body, and signed `workflow-completed` webhooks. Every state is computed
//! from the harness clock.

mod auth;
mod error;
mod model;
mod routes;
mod webhooks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use model::{SimPipeline, SimProject, SimWorkflow};
pub use webhooks::{sign_v1, workflow_completed};

use crate::harness::{FaultResponses, Harness, SimServer};
use crate::ledger::{Identified, Ledger};

/// The token the simulator accepts by default.
pub const DEFAULT_TOKEN: &str = "sim-circleci-token";
/// The project the simulator has by default.
pub const DEFAULT_PROJECT: &str = "gh/acme/web";
/// The pipeline definition of the default project.
pub const DEFAULT_DEFINITION_ID: &str = "5e1bd7c0-4a56-4b5e-9a1c-0c3f3b6f7d21";
/// A boolean parameter of this name puts the `deploy` workflow on hold until approved.
pub const APPROVAL_PARAMETER: &str = "require_approval";

/// How a trigger with parameters the project's config does not declare is answered (the notes
/// leave open which one CircleCI does; both are simulated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UndeclaredParameters {
    /// HTTP 400 `{"message": "Unexpected argument(s): a, b"}`.
    #[default]
    Reject,
    /// 201, then a pipeline `errored` with a `config` error `Unexpected argument(s): …`.
    ErroredPipeline,
}

/// Where and how finished workflows are announced.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The receiver (e.g. the gateway's `/callbacks/circleci/<account>`).
    pub url: String,
    /// The signing secret (`circleci-signature: v1=…`).
    pub secret: String,
}

/// Knobs of the CircleCI simulator.
#[derive(Debug, Clone)]
pub struct CircleciSimConfig {
    /// Personal API tokens accepted.
    pub tokens: Vec<String>,
    /// Projects known at start (more with [`CircleciSim::add_project`]).
    pub projects: Vec<SimProject>,
    /// What undeclared parameters do.
    pub undeclared_parameters: UndeclaredParameters,
    /// Time between the 201 and the workflows appearing.
    pub workflows_after: Duration,
    /// Time a new workflow stays `queued`.
    pub queued_for: Duration,
    /// Time a workflow's jobs run.
    pub run_for: Duration,
    /// Time a pipeline stays `pending` (config processing).
    pub pending_for: Duration,
    /// Branches starting with this fail (the `test` workflow fails).
    pub failing_prefix: String,
    /// Branches starting with this create a pipeline whose filters run no workflow.
    pub no_workflow_prefix: String,
    /// `/pipeline/run` of branches starting with this answers 200 (nothing created).
    pub ci_skip_prefix: String,
    /// Items per page of every list.
    pub page_size: usize,
    /// Every n-th injected 429 has the plain-text body `Rate limited.` (0: never).
    pub plain_text_rate_limit_every: usize,
    /// Signed `workflow-completed` webhooks, when set.
    pub webhook: Option<WebhookTarget>,
    /// How often (real time) the webhook task looks for finished workflows.
    pub webhook_poll: Duration,
}

impl Default for CircleciSimConfig {
    fn default() -> Self {
        Self {
            tokens: vec![DEFAULT_TOKEN.to_string()],
            projects: vec![SimProject::new(DEFAULT_PROJECT).with_definition(DEFAULT_DEFINITION_ID)],
            undeclared_parameters: UndeclaredParameters::Reject,
            workflows_after: Duration::from_secs(3),
            queued_for: Duration::from_secs(2),
            run_for: Duration::from_secs(10),
            pending_for: Duration::from_secs(1),
            failing_prefix: "fail-".into(),
            no_workflow_prefix: "skip-".into(),
            ci_skip_prefix: "ci-skip-".into(),
            page_size: 20,
            plain_text_rate_limit_every: 2,
            webhook: None,
            webhook_poll: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) projects: Vec<SimProject>,
    /// In creation order.
    pub(crate) pipelines: Ledger<SimPipeline>,
    /// In creation order; added only through [`State::add_workflow`], which keeps the two
    /// indexes below.
    pub(crate) workflows: Ledger<SimWorkflow>,
    /// Positions in `workflows` by pipeline id, oldest first.
    workflows_of: HashMap<String, Vec<usize>>,
    /// Pipelines made so far, by project slug (the next one's number is one more).
    numbers: HashMap<String, u64>,
    /// Positions of workflows whose `workflow-completed` event is neither delivered nor given
    /// up on, so the webhook task looks at those only.
    pub(crate) unannounced: BTreeSet<usize>,
    /// Webhook deliveries by workflow id.
    pub(crate) deliveries: BTreeMap<String, webhooks::Delivery>,
}

impl State {
    /// The number the next pipeline of `project_slug` gets.
    pub(crate) fn next_number(&mut self, project_slug: &str) -> u64 {
        let n = self.numbers.entry(project_slug.to_string()).or_default();
        *n += 1;
        *n
    }

    /// Store a workflow.
    pub(crate) fn add_workflow(&mut self, workflow: SimWorkflow) {
        let at = self.workflows.len();
        self.workflows_of.entry(workflow.pipeline_id.clone()).or_default().push(at);
        self.unannounced.insert(at);
        self.workflows.push(workflow);
    }

    /// The workflows of a pipeline, oldest first.
    pub(crate) fn workflows_of<'a>(&'a self, pipeline_id: &str) -> impl DoubleEndedIterator<Item = &'a SimWorkflow> {
        self.workflows_of.get(pipeline_id).into_iter().flatten().map(|&at| &self.workflows[at])
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) harness: Harness,
    pub(crate) config: Mutex<CircleciSimConfig>,
    pub(crate) state: Mutex<State>,
}

/// The CircleCI simulator: in-memory state on a harness. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CircleciSim {
    shared: Arc<Shared>,
}

impl CircleciSim {
    /// A simulator on `harness` (not serving yet: see [`CircleciSim::router`] or [`start`]).
    pub fn new(harness: &Harness, config: CircleciSimConfig) -> Self {
        let state = State { projects: config.projects.clone(), ..State::default() };
        Self {
            shared: Arc::new(Shared { harness: harness.clone(), config: Mutex::new(config), state: Mutex::new(state) }),
        }
    }

    /// The API routes, nested at `/api/v2` (configure adapters with `<server>/api/v2`).
    pub fn router(&self) -> axum::Router {
        axum::Router::new().nest("/api/v2", routes::router(self.shared.clone()))
    }

    /// How injected faults look at CircleCI: 429 `{"message": "Rate limit exceeded."}` or,
    /// every few times, the plain text `Rate limited.`; 5xx `{"message": …}`.
    pub fn fault_responses(&self) -> FaultResponses {
        error::fault_responses(self.shared.config.lock().plain_text_rate_limit_every)
    }

    /// Add a project.
    pub fn add_project(&self, project: SimProject) {
        self.shared.state.lock().projects.push(project);
    }

    /// Accept another token.
    pub fn add_token(&self, token: impl Into<String>) {
        self.shared.config.lock().tokens.push(token.into());
    }

    /// Change how undeclared parameters are answered.
    pub fn set_undeclared_parameters(&self, mode: UndeclaredParameters) {
        self.shared.config.lock().undeclared_parameters = mode;
    }

    /// Send webhooks from now on (or stop, with `None`). The background task of [`start`]
    /// picks this up; [`CircleciSim::deliver_webhooks`] delivers at once.
    pub fn set_webhook(&self, webhook: Option<WebhookTarget>) {
        self.shared.config.lock().webhook = webhook;
    }

    /// Every pipeline, in creation order.
    pub fn pipelines(&self) -> Vec<SimPipeline> {
        self.shared.state.lock().pipelines.to_vec()
    }

    /// Every workflow, in creation order.
    pub fn workflows(&self) -> Vec<SimWorkflow> {
        self.shared.state.lock().workflows.to_vec()
    }

    /// Deliver the webhooks of workflows finished by now (the background task does this too).
    /// Returns how many deliveries were accepted.
    pub async fn deliver_webhooks(&self) -> usize {
        webhooks::deliver_due(&self.shared).await
    }
}

/// Start a simulator on an ephemeral port, with the webhook task running when configured.
pub async fn start(harness: &Harness, config: CircleciSimConfig) -> (CircleciSim, SimServer) {
    let sim = CircleciSim::new(harness, config);
    let server = SimServer::start(harness, sim.router(), sim.fault_responses())
        .await
        .expect("bind the CircleCI simulator on 127.0.0.1");
    webhooks::spawn_task(Arc::downgrade(&sim.shared));
    (sim, server)
}

impl Identified for SimPipeline {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for SimWorkflow {
    fn id(&self) -> &str {
        &self.id
    }
}
