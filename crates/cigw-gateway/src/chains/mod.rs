//! Chains: when an upstream run ends, fire the `[chains.<name>]` whose `when` it matches, through
//! [`intake_chain`] (source `chain:<name>`).
//!
//! The run events are read by a durable consumer ([`feed`]) after a named cursor: a chain fires
//! in the transaction that stores its downstream trigger, keyed by (chain, upstream run), and the
//! cursor only moves past an event once it was handled. A crash between the upstream ending and
//! the firing re-reads the event and fires once; two replicas reading the same events fire once.
//! Fan-in joins (`when.all_of`) record each upstream's latest end first ([`Store::record_join_arrival`])
//! and fire once the join is complete, marking it fired in the same transaction.
//!
//! [`Store::record_join_arrival`]: cigw_store::Store::record_join_arrival

pub mod feed;

use std::collections::BTreeMap;

use cigw_core::ParamType;
use cigw_core::chain::{Chain, JoinKey, Upstream};
use cigw_store::{
    ChainFiring, ChainJoinRecord, EventRecord, JoinArrival, JoinMember, JoinState, RunRecord, StoreError,
};
use serde_json::{Value, json};

use crate::auth::{Principal, Scope};
use crate::intake::request::TriggerRequest;
use crate::intake::{ChainIntake, IntakeError, Submission, intake_chain};
use crate::links::Links;
use crate::state::AppState;

/// What a chain did about one upstream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A downstream trigger was stored.
    Fired {
        /// The chain.
        chain: String,
        /// Its trigger.
        trigger_id: String,
    },
    /// The firing had been stored before (a re-read event, another replica).
    AlreadyFired {
        /// The chain.
        chain: String,
    },
    /// The run joined a fan-in join that still waits.
    Waiting {
        /// The chain.
        chain: String,
        /// The targets it waits for.
        waiting_for: Vec<String>,
    },
    /// The chain did not fire, and will not for this event (why, for the log).
    Refused {
        /// The chain.
        chain: String,
        /// Why.
        message: String,
    },
}

/// Whether a run event reports a run's move into an end state (the moment chains react to);
/// later events on an ended run (a rerun note, a join expiry) are not transitions.
pub fn is_terminal_transition(event: &EventRecord) -> bool {
    event.state.is_terminal()
        && event.data.get("to").and_then(Value::as_str) == Some(event.state.as_str())
        && event.data.get("from").is_some()
}

/// The JSON document chain conditions and templates read as `upstream`.
pub fn upstream_document(state: &AppState, run: &RunRecord, labels: &Value) -> Value {
    json!({
        "run_id": run.id,
        "trigger_id": run.trigger_id,
        "target": run.target,
        "provider": run.provider.as_str(),
        "account": run.account,
        "state": run.state.as_str(),
        "branch": run.git_ref.branch,
        "tag": run.git_ref.tag,
        "sha": run.git_ref.sha,
        "url": run.provider_ref.as_ref().and_then(|r| r.url.clone()),
        "provider_run_id": run.provider_ref.as_ref().map(|r| r.id.clone()),
        "link": Links::new(state).run(&run.id),
        "parameters": run.parameters.masked_json(),
        "labels": labels,
        "message": run.message,
        "requested_by": run.requested_by,
    })
}

/// Handle one run event: every chain whose upstream includes the run's target. A store failure
/// is returned (the event is read again later); anything else is decided here, once.
pub async fn handle_event(state: &AppState, event: &EventRecord) -> Result<Vec<Outcome>, StoreError> {
    if !is_terminal_transition(event) {
        return Ok(vec![]);
    }
    let chains: Vec<&Chain> =
        state.settings.chains.values().filter(|c| c.upstream.targets().contains(&event.target)).collect();
    if chains.is_empty() {
        return Ok(vec![]);
    }
    let run = match state.store.get_run(&event.run_id).await {
        Ok(run) => run,
        Err(StoreError::NotFound { .. }) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let labels = match state.store.get_trigger(&run.trigger_id).await {
        Ok(t) => t.labels,
        Err(StoreError::NotFound { .. }) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let link = state.store.chain_link(&run.trigger_id).await?;
    let (root, depth) = match &link {
        Some(l) => (l.root_trigger_id.clone(), l.depth),
        None => (run.trigger_id.clone(), 0),
    };
    let doc = upstream_document(state, &run, &labels);
    let mut outcomes = Vec::new();
    for chain in chains {
        let name = chain.name.clone();
        if let Err(why) = chain.matches(run.git_ref.branch.as_deref(), &doc) {
            tracing::debug!(chain = %name, run_id = %run.id, why, "chain does not match");
            continue;
        }
        if depth + 1 > chain.max_depth {
            let message = format!(
                "not fired: run {} sits at depth {depth} of trigger tree {root}, and the chain allows {}",
                run.id, chain.max_depth
            );
            tracing::warn!(chain = %name, "{message}");
            crate::metrics::record_intake("chain", "depth_limited");
            outcomes.push(Outcome::Refused { chain: name, message });
            continue;
        }
        let outcome = match &chain.upstream {
            Upstream::AnyOf(_) => {
                if !chain.wants(run.state) {
                    continue;
                }
                let firing = ChainFiring {
                    chain: name.clone(),
                    upstream_run_id: run.id.clone(),
                    parents: vec![run.id.clone()],
                    root_trigger_id: root.clone(),
                    depth: depth + 1,
                    join_key: None,
                };
                let context = json!({"chain": name, "upstream": doc, "upstreams": {run.target.clone(): doc}});
                fire(state, chain, &run, context, firing).await?
            }
            Upstream::AllOf { targets, key, ttl } => {
                let join_key = match key {
                    JoinKey::Root => root.clone(),
                    JoinKey::Sha => match &run.git_ref.sha {
                        Some(sha) => sha.to_ascii_lowercase(),
                        None => {
                            tracing::info!(chain = %name, run_id = %run.id, "no sha on the run: it cannot join by sha");
                            continue;
                        }
                    },
                };
                let arrival = JoinArrival {
                    chain: name.clone(),
                    join_key: join_key.clone(),
                    all_of: targets.clone(),
                    target: run.target.clone(),
                    member: JoinMember {
                        run_id: run.id.clone(),
                        state: run.state,
                        done: chain.wants(run.state),
                        event_id: event.id,
                    },
                    ttl: *ttl,
                    now: state.now(),
                };
                let join = state.store.record_join_arrival(arrival).await?;
                match join.state {
                    JoinState::Fired => Outcome::AlreadyFired { chain: name },
                    JoinState::Open if join.complete() => fire_join(state, chain, &run, &doc, &join, depth).await?,
                    _ => Outcome::Waiting { chain: name, waiting_for: join.waiting_for() },
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Fire a complete join: the completing run first among the parents, every member's document
/// under `upstreams`.
async fn fire_join(
    state: &AppState,
    chain: &Chain,
    run: &RunRecord,
    doc: &Value,
    join: &ChainJoinRecord,
    depth: u32,
) -> Result<Outcome, StoreError> {
    let mut parents = vec![run.id.clone()];
    let mut upstreams = serde_json::Map::new();
    upstreams.insert(run.target.clone(), doc.clone());
    for (target, member) in &join.members {
        if member.run_id == run.id {
            continue;
        }
        parents.push(member.run_id.clone());
        match state.store.get_run(&member.run_id).await {
            Ok(other) => {
                let labels = state.store.get_trigger(&other.trigger_id).await.map(|t| t.labels).unwrap_or(Value::Null);
                upstreams.insert(target.clone(), upstream_document(state, &other, &labels));
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let root = match chain.upstream {
        Upstream::AllOf { key: JoinKey::Root, .. } => join.join_key.clone(),
        _ => doc["trigger_id"].as_str().map(str::to_string).unwrap_or_default(),
    };
    let root = match state.store.chain_link(&root).await? {
        Some(l) => l.root_trigger_id,
        None => root,
    };
    let firing = ChainFiring {
        chain: chain.name.clone(),
        upstream_run_id: run.id.clone(),
        parents,
        root_trigger_id: root,
        depth: depth + 1,
        join_key: Some(join.join_key.clone()),
    };
    let context = json!({"chain": chain.name, "upstream": doc, "upstreams": upstreams, "join_key": join.join_key});
    fire(state, chain, run, context, firing).await
}

/// Render the downstream request and take it in; a refused request is logged, never retried.
async fn fire(
    state: &AppState,
    chain: &Chain,
    upstream: &RunRecord,
    context: Value,
    firing: ChainFiring,
) -> Result<Outcome, StoreError> {
    let name = chain.name.clone();
    let refused = |message: String| {
        tracing::error!(chain = %name, upstream_run_id = %upstream.id, "chain not fired: {message}");
        crate::metrics::record_intake("chain", "rejected");
        Ok(Outcome::Refused { chain: name.clone(), message })
    };
    let body = match request_body(state, chain, upstream, &context) {
        Ok(body) => body,
        Err(message) => return refused(message),
    };
    let request: TriggerRequest = match serde_json::from_value(body.clone()) {
        Ok(r) => r,
        Err(e) => return refused(format!("the rendered request is not valid: {e}")),
    };
    let raw = match serde_json::value::to_raw_value(&body) {
        Ok(raw) => raw,
        Err(e) => return refused(e.to_string()),
    };
    let who = format!("chain:{name}");
    let requester = Principal::new(who.clone(), who.clone(), Scope::parse("trigger").into_iter().collect());
    let submission = Submission { source: who, request, body: raw };
    match intake_chain(state, submission, &requester, firing).await {
        Ok(ChainIntake::Created(accepted)) => {
            tracing::info!(chain = %name, upstream_run_id = %upstream.id, trigger_id = %accepted.trigger_id, "chain fired");
            crate::metrics::record_intake("chain", "accepted");
            Ok(Outcome::Fired { chain: name, trigger_id: accepted.trigger_id })
        }
        Ok(ChainIntake::AlreadyFired { .. }) => {
            crate::metrics::record_intake("chain", "replayed");
            Ok(Outcome::AlreadyFired { chain: name })
        }
        Ok(ChainIntake::JoinNotReady) => Ok(Outcome::Waiting { chain: name, waiting_for: vec![] }),
        Err(IntakeError::Store(e)) => Err(e),
        Err(e) => refused(e.to_string()),
    }
}

/// The trigger request a firing makes: every downstream target gets its ref (rendered, or by
/// default the upstream's sha where the target can pin one, else its branch or tag) and its
/// parameters (rendered, then typed as the target declares them) as a per-target override.
fn request_body(state: &AppState, chain: &Chain, upstream: &RunRecord, context: &Value) -> Result<Value, String> {
    let rendered_ref = chain.render_ref(context).map_err(|e| e.to_string())?;
    let parameters = chain.render_parameters(context).map_err(|e| e.to_string())?;
    let mut overrides = serde_json::Map::new();
    for target_name in &chain.targets {
        let Some(target) = state.target(target_name) else {
            return Err(format!("target `{target_name}` is not configured"));
        };
        let git_ref = match &rendered_ref {
            Some(r) => json!({"branch": r.branch, "tag": r.tag, "sha": r.sha}),
            None => {
                let pin = target.target.capabilities().pin_sha;
                let sha = upstream.git_ref.sha.clone().filter(|_| pin);
                match (&upstream.git_ref.branch, &upstream.git_ref.tag) {
                    (_, Some(tag)) => json!({"tag": tag, "sha": sha}),
                    (Some(branch), None) => json!({"branch": branch, "sha": sha}),
                    (None, None) => json!({"sha": sha}),
                }
            }
        };
        let git_ref: serde_json::Map<String, Value> = git_ref
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let typed: BTreeMap<String, Value> = parameters
            .iter()
            .map(|(pname, v)| {
                let kind = target.spec.parameters.iter().find(|p| &p.name == pname).map(|p| p.kind);
                (pname.clone(), typed_value(kind, v))
            })
            .collect();
        let mut entry = json!({"parameters": typed});
        if !git_ref.is_empty() {
            entry["ref"] = Value::Object(git_ref);
        }
        overrides.insert(target_name.clone(), entry);
    }
    Ok(json!({"targets": chain.targets, "overrides": overrides, "labels": chain.labels}))
}

/// A rendered string as the declared type wants it (`"true"` for a boolean, `"42"` for an
/// integer); anything that does not read as that type is left for intake to refuse by name.
fn typed_value(kind: Option<ParamType>, v: &Value) -> Value {
    match (kind, v) {
        (Some(ParamType::Boolean), Value::String(s)) => match s.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v.clone(),
        },
        (Some(ParamType::Integer), Value::String(s)) => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    }
}

/// Expire the open joins past their TTL at the gateway's clock; returns how many expired here.
pub async fn expire_due_joins(state: &AppState) -> Result<usize, StoreError> {
    let now = state.now();
    let mut expired = 0;
    for join in state.store.open_joins().await? {
        if join.expires_at > now {
            break;
        }
        if let Some(j) = state.store.expire_join(&join.chain, &join.join_key, now).await? {
            tracing::warn!(chain = %j.chain, join_key = %j.join_key, waiting_for = ?j.waiting_for(), "join expired");
            expired += 1;
        }
    }
    if expired > 0 {
        state.notify_events();
    }
    Ok(expired)
}
