//! What goes into a provider call and what comes back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::git_ref::GitRef;
use crate::params::Parameters;
use crate::state::RunState;

/// Everything an adapter needs to start one run.
#[derive(Debug, Clone)]
pub struct TriggerSpec {
    /// The gateway's run id: the correlation id, sent where the provider has a place for it.
    pub run_id: String,
    /// What to build, with the target's default branch already filled in.
    pub git_ref: GitRef,
    /// Validated parameters.
    pub parameters: Parameters,
    /// Who or what asked for it (token name, hook, chain), for provider-side annotations.
    pub requested_by: String,
}

/// A provider's handle on one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRunRef {
    /// The provider's id (CircleCI pipeline id, Codefresh build id, Codeship build uuid).
    pub id: String,
    /// The provider's human number, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// Which attempt of that provider object this run is (1 for the first; reruns that reuse
    /// the same id count up).
    pub attempt: u32,
    /// A link to the run in the provider's web app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Adapter-private data the adapter needs later (e.g. the workflow ids of a CircleCI rerun).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

impl ProviderRunRef {
    /// A first attempt of `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into(), number: None, attempt: 1, url: None, extra: serde_json::Value::Null }
    }
}

/// The answer to a trigger or rerun.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOutcome {
    /// The provider started a run and told us its id.
    Started(ProviderRunRef),
    /// The provider accepted the request without an id; the gateway correlates it later with
    /// `find_recent`.
    AcceptedWithoutId {
        /// When the request was sent (lower bound of the candidates' creation time).
        sent_at: DateTime<Utc>,
    },
    /// The provider decided there is nothing to run.
    NothingToRun {
        /// The provider's explanation.
        message: String,
    },
}

/// Options of a rerun.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunOptions {
    /// Rerun only what failed, where the provider can.
    #[serde(default)]
    pub failed_only: bool,
}

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let the run go on.
    Approve,
    /// Stop it.
    Deny,
}

/// What to look for among a target's recent provider runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentQuery {
    /// Only runs created at or after this time.
    pub since: DateTime<Utc>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of this tag.
    pub tag: Option<String>,
    /// Only runs of this sha.
    pub sha: Option<String>,
}

/// A recent provider run the gateway may adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCandidate {
    /// The provider's handle.
    pub run_ref: ProviderRunRef,
    /// Its branch.
    pub branch: Option<String>,
    /// Its tag.
    pub tag: Option<String>,
    /// Its sha.
    pub sha: Option<String>,
    /// When the provider created it.
    pub created_at: DateTime<Utc>,
    /// The gateway run id, where the provider echoes it back.
    pub correlation_id: Option<String>,
}

/// One workflow, job or step of a run, as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDetail {
    /// Provider id of the part.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The provider's status string.
    pub raw_status: String,
    /// The normalized state, where it maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One observation of a run at its provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    /// The normalized state.
    pub state: RunState,
    /// The provider's own status string(s), for display and debugging.
    pub raw_status: String,
    /// When this was observed (updates older than the stored one are dropped).
    pub observed_at: DateTime<Utc>,
    /// When the provider created the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it started executing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Link to the run in the provider's web app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A human explanation (error messages, "terminated automatically", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-workflow / per-step detail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepDetail>,
}

impl RunStatus {
    /// A bare observation of `state` now.
    pub fn new(state: RunState, raw_status: impl Into<String>) -> Self {
        Self {
            state,
            raw_status: raw_status.into(),
            observed_at: Utc::now(),
            created_at: None,
            started_at: None,
            finished_at: None,
            url: None,
            message: None,
            steps: Vec::new(),
        }
    }
}
