//! The JSON views of stored runs and events that several resources answer with.

use chrono::{DateTime, Utc};
use cigw_store::{EventRecord, RunRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::links::Links;

/// A git ref as stored: a branch or a tag, and optionally a sha.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefView {
    /// Branch name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Commit sha.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

/// The provider build a run owns.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderRefView {
    /// The provider's id (CircleCI pipeline id, Codefresh build id, Codeship build uuid).
    pub id: String,
    /// The provider's human number, where it has one.
    pub number: Option<u64>,
    /// Which attempt of that provider object this run is.
    pub attempt: u32,
    /// The run in the provider's web app.
    pub url: Option<String>,
}

/// Links of a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunLinks {
    /// This run.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its trigger.
    pub trigger: String,
    /// Its events.
    pub events: String,
    /// The run at the provider, once known.
    pub provider: Option<String>,
}

/// One run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    /// Run id (also the correlation id sent to the provider).
    pub id: String,
    /// The trigger it belongs to.
    pub trigger_id: String,
    /// Target name.
    pub target: String,
    /// `circleci`, `codefresh` or `codeship`.
    pub provider: String,
    /// Provider account name.
    pub account: String,
    /// `pending`, `queued`, `running`, `blocked`, `canceling`, `succeeded`, `failed`, `canceled`, `skipped` or `error`.
    #[schema(value_type = cigw_core::RunState)]
    pub state: String,
    /// The provider's last raw status.
    pub raw_status: Option<String>,
    /// Last message (error text, provider explanation).
    pub message: Option<String>,
    /// What it builds.
    #[serde(rename = "ref")]
    pub git_ref: RefView,
    /// Parameters; secret values are shown as `***`.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// The provider build, once known.
    pub provider_ref: Option<ProviderRefView>,
    /// Accepted by a provider that gives no id, and not yet matched with its build.
    pub unconfirmed: bool,
    /// How many times a dispatcher claimed it.
    pub dispatch_attempts: u32,
    /// Who or what requested it.
    pub requested_by: String,
    /// The upstream run of a chain.
    pub chain_parent: Option<String>,
    /// The run this one reruns.
    pub rerun_of: Option<String>,
    /// For a rerun: only what failed.
    pub rerun_failed_only: bool,
    /// A cancel was requested.
    pub cancel_requested: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was dispatched.
    pub queued_at: Option<DateTime<Utc>>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Related resources.
    pub links: RunLinks,
}

impl RunView {
    pub(crate) fn new(run: &RunRecord, links: &Links) -> Self {
        Self {
            id: run.id.clone(),
            trigger_id: run.trigger_id.clone(),
            target: run.target.clone(),
            provider: run.provider.to_string(),
            account: run.account.clone(),
            state: run.state.to_string(),
            raw_status: run.raw_status.clone(),
            message: run.message.clone(),
            git_ref: RefView {
                branch: run.git_ref.branch.clone(),
                tag: run.git_ref.tag.clone(),
                sha: run.git_ref.sha.clone(),
            },
            parameters: run.parameters.masked_json(),
            provider_ref: run.provider_ref.as_ref().map(|r| ProviderRefView {
                id: r.id.clone(),
                number: r.number,
                attempt: r.attempt,
                url: r.url.clone(),
            }),
            unconfirmed: run.unconfirmed,
            dispatch_attempts: run.dispatch_attempts,
            requested_by: run.requested_by.clone(),
            chain_parent: run.chain_parent.clone(),
            rerun_of: run.rerun_of.clone(),
            rerun_failed_only: run.rerun_failed_only,
            cancel_requested: run.cancel_requested,
            created_at: run.created_at,
            queued_at: run.queued_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            updated_at: run.updated_at,
            links: RunLinks {
                self_: links.run(&run.id),
                trigger: links.trigger(&run.trigger_id),
                events: links.run_events(&run.id),
                provider: run.provider_ref.as_ref().and_then(|r| r.url.clone()),
            },
        }
    }
}

/// One entry of a run's event log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Event id, increasing in commit order.
    pub id: i64,
    /// What happened (`created`, `dispatched`, `state_changed`, `cancel_requested`, …).
    pub kind: String,
    /// The run's state after it happened.
    #[schema(value_type = cigw_core::RunState)]
    pub state: String,
    /// Details; secret values masked.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        Self { id: e.id, kind: e.kind.to_string(), state: e.state.to_string(), data: e.data, created_at: e.created_at }
    }
}
