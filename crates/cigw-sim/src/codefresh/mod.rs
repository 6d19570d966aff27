//! A faithful simulator of the Codefresh classic-pipelines API (providers/codefresh.md) at
//! `<server>/api`: raw-key auth with the exact 401 body, run by one-segment pipeline name with
//! `reqId`, 24-hex build ids with distinct progress ids, the build life cycle driven by the
//! harness clock, terminate by progress id, rebuild, approvals, the paginated workflow list and
//! build annotations.

mod auth;
mod error;
mod model;
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};

use model::FINAL;
pub use model::{SimBuild, SimPipeline};

use crate::harness::{FaultResponses, Harness, SimServer};
use crate::ledger::{Identified, Ledger};

/// The API key the simulator accepts by default.
pub const DEFAULT_API_KEY: &str = "5f0c0ffee0123456789abcd0.sim-codefresh-key";
/// The pipeline the simulator has by default.
pub const DEFAULT_PIPELINE: &str = "demo/api-build";

/// Knobs of the Codefresh simulator.
#[derive(Debug, Clone)]
pub struct CodefreshSimConfig {
    /// API keys accepted (as `Authorization: <key>` or `x-access-token`).
    pub api_keys: Vec<String>,
    /// Keys that authenticate but lack scopes or are restricted: every call answers 403.
    pub restricted_keys: Vec<String>,
    /// Pipelines (`project/pipeline`) created at start.
    pub pipelines: Vec<String>,
    /// Time in `pending` once admitted.
    pub pending_for: Duration,
    /// Time in `elected`.
    pub elected_for: Duration,
    /// Time in `running`.
    pub running_for: Duration,
    /// Time in `terminating` after a terminate request.
    pub terminating_for: Duration,
    /// Builds of these branches end in `error`.
    pub failing_branches: Vec<String>,
    /// Builds of these branches stop in `pending-approval` until approved or denied.
    pub approval_branches: Vec<String>,
    /// At most this many builds execute at once; more wait in `delayed` (None: no limit).
    pub max_concurrent: Option<usize>,
    /// Answer a repeated `reqId` with the build it started instead of starting another
    /// (whether Codefresh does this is not documented, so it is off by default).
    pub dedupe_req_id: bool,
    /// Largest page size of `GET /api/workflow`.
    pub max_page_size: usize,
}

impl Default for CodefreshSimConfig {
    fn default() -> Self {
        Self {
            api_keys: vec![DEFAULT_API_KEY.to_string()],
            restricted_keys: Vec::new(),
            pipelines: vec![DEFAULT_PIPELINE.to_string()],
            pending_for: Duration::from_secs(2),
            elected_for: Duration::from_secs(2),
            running_for: Duration::from_secs(10),
            terminating_for: Duration::from_secs(3),
            failing_branches: vec!["fail-tests".to_string()],
            approval_branches: vec!["needs-approval".to_string()],
            max_concurrent: None,
            dedupe_req_id: false,
            max_page_size: 100,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) api_keys: BTreeSet<String>,
    pub(crate) restricted_keys: BTreeSet<String>,
    pub(crate) pipelines: Vec<SimPipeline>,
    /// In creation order.
    pub(crate) builds: Ledger<SimBuild>,
    pub(crate) by_req_id: BTreeMap<String, String>,
    /// Pagination sessions: the newest creation time a session's pages show.
    pub(crate) sessions: BTreeMap<String, DateTime<Utc>>,
}

impl State {
    /// Let delayed builds start while fewer than `max_concurrent` builds execute. Builds waiting
    /// for approval hold no builder.
    pub(crate) fn admit(&mut self, config: &CodefreshSimConfig, now: DateTime<Utc>) {
        let Some(max) = config.max_concurrent else {
            for b in self.builds.iter_mut().filter(|b| b.admitted.is_none()) {
                b.admitted = Some(now);
            }
            return;
        };
        let active = self
            .builds
            .iter()
            .filter(|b| b.admitted.is_some())
            .filter(|b| {
                let s = b.observe(config, now).status;
                !FINAL.contains(&s) && s != "pending-approval"
            })
            .count();
        let free = max.saturating_sub(active);
        for b in self.builds.iter_mut().filter(|b| b.admitted.is_none() && b.terminate_requested.is_none()).take(free) {
            b.admitted = Some(now);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) harness: Harness,
    pub(crate) config: Mutex<CodefreshSimConfig>,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.harness.clock().now()
    }

    /// Now, the knobs, and the state with delayed builds admitted as of now: how every look at
    /// a build's status starts.
    pub(crate) fn observe(&self) -> (DateTime<Utc>, CodefreshSimConfig, MutexGuard<'_, State>) {
        let now = self.now();
        let config = self.config.lock().clone();
        let mut state = self.state.lock();
        state.admit(&config, now);
        (now, config, state)
    }
}

/// The Codefresh simulator: in-memory pipelines and builds plus its knobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CodefreshSim {
    shared: Arc<Shared>,
}

impl CodefreshSim {
    /// A simulator on `harness` with `config`.
    pub fn new(harness: &Harness, config: CodefreshSimConfig) -> Self {
        let sim = Self {
            shared: Arc::new(Shared {
                harness: harness.clone(),
                config: Mutex::new(config.clone()),
                state: Mutex::new(State::default()),
            }),
        };
        {
            let mut state = sim.shared.state.lock();
            state.api_keys.extend(config.api_keys.iter().cloned());
            state.restricted_keys.extend(config.restricted_keys.iter().cloned());
        }
        for name in &config.pipelines {
            sim.add_pipeline(name);
        }
        sim
    }

    /// The axum router serving the API under `/api`.
    pub fn router(&self) -> axum::Router {
        routes::router(self.shared.clone())
    }

    /// Add a pipeline `project/pipeline` and return its id (an existing name keeps its id).
    pub fn add_pipeline(&self, name: &str) -> String {
        let now = self.shared.now();
        let mut state = self.shared.state.lock();
        if let Some(p) = state.pipelines.iter().find(|p| p.name == name) {
            return p.id.clone();
        }
        let id = model::object_id(now);
        state.pipelines.push(SimPipeline { id: id.clone(), name: name.to_string(), created: now });
        id
    }

    /// The id of pipeline `name`.
    pub fn pipeline_id(&self, name: &str) -> Option<String> {
        self.shared.state.lock().pipelines.iter().find(|p| p.name == name).map(|p| p.id.clone())
    }

    /// Accept another API key.
    pub fn add_api_key(&self, key: &str) {
        self.shared.state.lock().api_keys.insert(key.to_string());
    }

    /// Accept `key` but answer 403 to it (a key lacking scopes or restricted).
    pub fn add_restricted_key(&self, key: &str) {
        self.shared.state.lock().restricted_keys.insert(key.to_string());
    }

    /// Change the knobs (builds already created keep their branch-derived outcome).
    pub fn configure(&self, change: impl FnOnce(&mut CodefreshSimConfig)) {
        change(&mut self.shared.config.lock());
    }

    /// A stored build.
    pub fn build(&self, id: &str) -> Option<SimBuild> {
        self.shared.state.lock().builds.by_id(id).cloned()
    }

    /// Every stored build, oldest first.
    pub fn builds(&self) -> Vec<SimBuild> {
        self.shared.state.lock().builds.to_vec()
    }

    /// The status string of build `id` now.
    pub fn status_of(&self, id: &str) -> Option<String> {
        let (now, config, state) = self.shared.observe();
        state.builds.by_id(id).map(|b| b.observe(&config, now).status.to_string())
    }

    /// The build object `GET /api/builds/{id}` answers now.
    pub fn build_json(&self, id: &str) -> Option<serde_json::Value> {
        let (now, config, state) = self.shared.observe();
        state.builds.by_id(id).map(|b| b.to_json(&config, now))
    }

    /// How Codefresh shapes injected 429 and 5xx answers.
    pub fn fault_responses() -> FaultResponses {
        error::fault_responses()
    }
}

/// Start a Codefresh simulator on an ephemeral 127.0.0.1 port. Configure adapters with
/// `format!("{}/api", server.url())` as their base URL.
pub async fn start(harness: &Harness, config: CodefreshSimConfig) -> (CodefreshSim, SimServer) {
    let sim = CodefreshSim::new(harness, config);
    let server = SimServer::start(harness, sim.router(), CodefreshSim::fault_responses())
        .await
        .expect("bind the Codefresh simulator on 127.0.0.1");
    (sim, server)
}

impl Identified for SimBuild {
    fn id(&self) -> &str {
        &self.id
    }
}
