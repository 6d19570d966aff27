//! `GET /v1/triggers/{id}/tree` (a trigger tree: the root trigger and every trigger chains fired
//! from it) and `GET /v1/joins` (the open fan-in joins and what each still waits for).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use cigw_core::chain::Upstream;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::triggers::TriggerView;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::links::Links;
use crate::state::AppState;

/// One trigger of a tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TreeNode {
    /// The chain that fired it (`null` for the root).
    pub chain: Option<String>,
    /// Its depth: 0 for the root, 1 for a trigger fired by a root run, ….
    pub depth: u32,
    /// The upstream runs that fired it, the completing one first (a join's other members
    /// after); empty for the root. Each of its runs names the first as `chain_parent`.
    pub parent_run_ids: Vec<String>,
    /// The trigger with its runs.
    pub trigger: TriggerView,
}

/// A trigger tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerTreeView {
    /// The root trigger's id.
    pub root_trigger_id: String,
    /// The triggers, the root first, then by depth and age.
    pub triggers: Vec<TreeNode>,
}

/// The tree of the trigger: its root and every trigger chains fired from it, with their runs.
#[utoipa::path(get, path = "/v1/triggers/{id}/tree", tag = "chains", security(("bearer" = [])),
    params(("id" = String, Path, description = "Any trigger of the tree")),
    responses((status = 200, body = TriggerTreeView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn trigger_tree(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TriggerTreeView>, ApiError> {
    principal.require_read()?;
    let tree = state.store.trigger_tree(&id).await?;
    let links = Links::new(&state);
    let triggers = tree
        .triggers
        .iter()
        .map(|(trigger, link)| TreeNode {
            chain: link.as_ref().map(|l| l.chain.clone()),
            depth: link.as_ref().map_or(0, |l| l.depth),
            parent_run_ids: link.as_ref().map(|l| l.parents.clone()).unwrap_or_default(),
            trigger: TriggerView::new(trigger, &links),
        })
        .collect();
    Ok(Json(TriggerTreeView { root_trigger_id: tree.root_trigger_id, triggers }))
}

/// The latest run of one upstream target in a join.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinMemberView {
    /// The upstream target.
    pub target: String,
    /// Its latest run's id.
    pub run_id: String,
    /// That run's end state.
    #[schema(value_type = cigw_core::RunState)]
    pub state: String,
    /// Whether that state is one the chain wants (a failed run blocks the join until a rerun
    /// succeeds).
    pub done: bool,
}

/// An open fan-in join.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinView {
    /// The chain.
    pub chain: String,
    /// `root` (the root trigger id) or `sha` (a commit sha).
    #[schema(pattern = "^(root|sha)$")]
    pub join: String,
    /// The key value: a root trigger id or a sha.
    pub join_key: String,
    /// Every upstream target of the join.
    pub all_of: Vec<String>,
    /// The upstream targets without a run in a wanted state yet.
    pub waiting_for: Vec<String>,
    /// The latest run of each upstream target seen so far.
    pub members: Vec<JoinMemberView>,
    /// When its first member came in.
    pub opened_at: DateTime<Utc>,
    /// When it expires unless complete.
    pub expires_at: DateTime<Utc>,
}

/// The open joins.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinList {
    /// Soonest expiry first.
    pub joins: Vec<JoinView>,
}

/// The open fan-in joins, with what each still waits for.
#[utoipa::path(get, path = "/v1/joins", tag = "chains", security(("bearer" = [])),
    responses((status = 200, body = JoinList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_joins(State(state): State<AppState>, principal: Principal) -> Result<Json<JoinList>, ApiError> {
    principal.require_read()?;
    let joins = state
        .store
        .open_joins()
        .await?
        .into_iter()
        .map(|j| {
            let join = match state.settings.chains.get(&j.chain).map(|c| &c.upstream) {
                Some(Upstream::AllOf { key, .. }) => key.as_str().to_string(),
                _ => "root".to_string(),
            };
            JoinView {
                chain: j.chain.clone(),
                join,
                join_key: j.join_key.clone(),
                all_of: j.all_of.clone(),
                waiting_for: j.waiting_for(),
                members: j
                    .members
                    .iter()
                    .map(|(target, m)| JoinMemberView {
                        target: target.clone(),
                        run_id: m.run_id.clone(),
                        state: m.state.as_str().to_string(),
                        done: m.done,
                    })
                    .collect(),
                opened_at: j.opened_at,
                expires_at: j.expires_at,
            }
        })
        .collect();
    Ok(Json(JoinList { joins }))
}
