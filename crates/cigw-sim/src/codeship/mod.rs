//! A simulator of the Codeship API v2 (sunset provider), faithful to `providers/codeship.md`
//! and the official Go client's fixtures.
//!
//! It reproduces the parts an adapter can trip over: HTTP basic auth on `/v2/auth` and bearer
//! tokens that really expire (on the harness clock) everywhere else; the two-factor refusal in
//! a 200 body; empty 202 answers to create, stop and restart; the `heads/` rule (any other ref is
//! accepted and builds nothing); Basic restarts that run the same uuid again and Pro restarts
//! that create a build; an already-built sha on Basic restarting its build; nullable
//! timestamps; pagination with `Link`; a bodiless `403 Rate Limit Exceeded` past the per-user
//! budget; and `{"errors": […]}` bodies.

mod auth;
mod error;
mod model;
mod routes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use parking_lot::Mutex;

use crate::harness::{Harness, SimServer};
use crate::ledger::Ledger;

pub use model::SimProjectType;
use model::{SimBuild, SimProject, SimUser, State};

/// The organization every simulated user belongs to.
pub const ORGANIZATION_UUID: &str = "28123f10-e33d-5533-b53f-111ef8d7b14f";
/// Its name (with a capital, as in the docs' example, to exercise case-insensitive matching).
pub const ORGANIZATION_NAME: &str = "Acme";
/// The API user added by [`CodeshipSim::start`].
pub const DEFAULT_EMAIL: &str = "ci@example.com";
/// Its password.
pub const DEFAULT_PASSWORD: &str = "codeship-password";
/// The Basic project added by [`CodeshipSim::start`].
pub const BASIC_PROJECT_UUID: &str = "83605ef0-76f8-0135-8810-6e5f001a2e3c";
/// The Pro project added by [`CodeshipSim::start`].
pub const PRO_PROJECT_UUID: &str = "0059df30-7701-0135-8810-6e5f001a2e3c";

/// Knobs of the simulator.
#[derive(Debug, Clone)]
pub struct CodeshipSimConfig {
    /// Lifetime of an access token.
    pub token_lifetime: Duration,
    /// Requests per minute and user before `403 Rate Limit Exceeded` (Codeship: 60).
    pub rate_limit_per_minute: u32,
    /// How long a build stays `initiated` (with a null `queued_at`).
    pub initiated_for: Duration,
    /// How long it then stays `waiting`.
    pub waiting_for: Duration,
    /// How long it then stays `testing`.
    pub testing_for: Duration,
    /// Builds of these branches end in `error`; all others in `success`.
    pub failing_branches: Vec<String>,
    /// Builds of these branches end in `infrastructure_failure`.
    pub infrastructure_failure_branches: Vec<String>,
}

impl Default for CodeshipSimConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            rate_limit_per_minute: 60,
            initiated_for: Duration::from_secs(2),
            waiting_for: Duration::from_secs(3),
            testing_for: Duration::from_secs(20),
            failing_branches: vec!["fail-tests".to_string()],
            infrastructure_failure_branches: vec!["infra-failure".to_string()],
        }
    }
}

/// The simulator's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CodeshipSim {
    pub(crate) harness: Harness,
    pub(crate) state: Arc<Mutex<State>>,
}

impl CodeshipSim {
    /// A simulator with no users and no projects.
    pub fn new(harness: &Harness, config: CodeshipSimConfig) -> Self {
        let state = State {
            config,
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            projects: BTreeMap::new(),
            builds: Ledger::default(),
            windows: BTreeMap::new(),
            branch_heads: BTreeMap::new(),
            next_project_id: 1,
        };
        Self { harness: harness.clone(), state: Arc::new(Mutex::new(state)) }
    }

    /// The routes, under `/v2` (configure adapters with `<server url>/v2`).
    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// A simulator with the default user, a Basic and a Pro project, served on 127.0.0.1.
    pub async fn start(harness: &Harness, config: CodeshipSimConfig) -> (CodeshipSim, SimServer) {
        let sim = Self::new(harness, config);
        sim.add_user(DEFAULT_EMAIL, DEFAULT_PASSWORD);
        sim.add_project(BASIC_PROJECT_UUID, "acme/basic-app", SimProjectType::Basic);
        sim.add_project(PRO_PROJECT_UUID, "acme/pro-app", SimProjectType::Pro);
        let server = SimServer::start(harness, sim.router(), error::fault_responses())
            .await
            .expect("bind the Codeship simulator on 127.0.0.1");
        (sim, server)
    }

    /// Add an API user with every scope.
    pub fn add_user(&self, email: &str, password: &str) {
        self.add_user_with_scopes(email, password, &["project.read", "project.write", "build.read", "build.write"]);
    }

    /// Add an API user limited to `scopes` (write calls without `build.write` answer 403).
    pub fn add_user_with_scopes(&self, email: &str, password: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.state
            .lock()
            .users
            .insert(email.to_string(), SimUser { password: password.to_string(), scopes, two_factor: false });
    }

    /// Add a user with two-factor authentication: `/auth` answers 200 with an `error`.
    pub fn add_two_factor_user(&self, email: &str, password: &str) {
        self.state.lock().users.insert(
            email.to_string(),
            SimUser { password: password.to_string(), scopes: Vec::new(), two_factor: true },
        );
    }

    /// Add a project of the organization.
    pub fn add_project(&self, uuid: &str, name: &str, project_type: SimProjectType) {
        let now = self.harness.clock().now();
        let mut state = self.state.lock();
        let id = state.next_project_id;
        state.next_project_id += 1;
        state.projects.insert(
            uuid.to_string(),
            SimProject { uuid: uuid.to_string(), id, name: name.to_string(), project_type, created_at: now },
        );
    }

    /// Add a finished build directly (for list and pagination tests), `age` before now.
    pub fn seed_finished_build(&self, project_uuid: &str, branch: &str, sha: &str, age: Duration) -> String {
        let now = self.harness.clock().now();
        let created = now - cigw_core::time::span(age);
        let mut state = self.state.lock();
        let project_id = state.projects.get(project_uuid).map(|p| p.id).unwrap_or_default();
        let build = SimBuild::new(project_uuid, project_id, branch, sha, created);
        let uuid = build.uuid.clone();
        state.builds.push(build);
        uuid
    }

    /// Every build uuid of a project, newest first.
    pub fn build_uuids(&self, project_uuid: &str) -> Vec<String> {
        let state = self.state.lock();
        let mut builds: Vec<&SimBuild> = state.builds.iter().rev().filter(|b| b.project_uuid == project_uuid).collect();
        builds.sort_by_key(|b| std::cmp::Reverse(b.runs[0].created_at));
        builds.into_iter().map(|b| b.uuid.clone()).collect()
    }

    /// How many times a build has run (1, plus one per Basic restart).
    pub fn runs_of(&self, build_uuid: &str) -> usize {
        self.state.lock().builds.by_id(build_uuid).map_or(0, |b| b.runs.len())
    }

    /// Change the sandbox's knobs (e.g. raise the rate limit for load tests).
    pub fn configure(&self, change: impl FnOnce(&mut CodeshipSimConfig)) {
        change(&mut self.state.lock().config);
    }
}
