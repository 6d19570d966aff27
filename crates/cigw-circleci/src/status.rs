//! CircleCI pipeline + workflows → `RunState` (the CircleCI table of DESIGN.md §2).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::RunState;

use crate::models::{Pipeline, PipelineState, Workflow, WorkflowStatus};

/// The normalized state of one workflow, for per-workflow detail.
pub fn workflow_state(status: &WorkflowStatus) -> RunState {
    match status {
        WorkflowStatus::Success => RunState::Succeeded,
        WorkflowStatus::Running | WorkflowStatus::Failing => RunState::Running,
        WorkflowStatus::Queued => RunState::Queued,
        WorkflowStatus::OnHold => RunState::Blocked,
        WorkflowStatus::Failed | WorkflowStatus::Error | WorkflowStatus::Unauthorized => RunState::Failed,
        WorkflowStatus::Canceled => RunState::Canceled,
        WorkflowStatus::NotRun => RunState::Skipped,
        WorkflowStatus::Unknown(_) => RunState::Running,
    }
}

/// The newest workflow of each name: a rerun creates a new workflow with the old one's name,
/// and only the newest says how the pipeline stands now.
pub fn newest_per_name(workflows: &[Workflow]) -> Vec<&Workflow> {
    let mut by_name: BTreeMap<&str, &Workflow> = BTreeMap::new();
    for w in workflows {
        by_name
            .entry(w.name.as_str())
            .and_modify(|cur| {
                if w.created_at > cur.created_at {
                    *cur = w;
                }
            })
            .or_insert(w);
    }
    let mut out: Vec<&Workflow> = by_name.into_values().collect();
    out.sort_by_key(|w| w.created_at);
    out
}

/// The aggregated state with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The run's state.
    pub state: RunState,
    /// Why, when it is not obvious (pipeline errors, no workflows).
    pub message: Option<String>,
}

impl Aggregate {
    fn plain(state: RunState) -> Self {
        Self { state, message: None }
    }

    fn with(state: RunState, message: impl Into<String>) -> Self {
        Self { state, message: Some(message.into()) }
    }
}

fn over_grace(since: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> bool {
    (now - since).to_std().is_ok_and(|elapsed| elapsed >= grace)
}

/// The state while some of `workflows` (newest per name, setup workflows that succeeded left
/// out) is still going: running, queued or on hold. `None` when every workflow has finished, or
/// there are none.
fn still_going(workflows: &[&Workflow]) -> Option<Aggregate> {
    let any = |f: fn(&WorkflowStatus) -> bool| workflows.iter().any(|w| f(&w.status));
    if any(|s| {
        matches!(
            s,
            WorkflowStatus::Running | WorkflowStatus::Failing | WorkflowStatus::Queued | WorkflowStatus::Unknown(_)
        )
    }) {
        for w in workflows.iter().filter(|w| matches!(w.status, WorkflowStatus::Unknown(_))) {
            tracing::warn!(workflow = %w.id, status = %w.status, "unknown CircleCI workflow status, taken as running");
        }
        return Some(Aggregate::plain(RunState::Running));
    }
    if any(|s| *s == WorkflowStatus::OnHold) {
        return Some(Aggregate::with(RunState::Blocked, "waiting for approval"));
    }
    None
}

/// The workflows a pipeline's state depends on: all but setup workflows that succeeded (those
/// only say that continuation workflows may follow).
pub fn deciding<'w>(workflows: &[&'w Workflow]) -> Vec<&'w Workflow> {
    workflows.iter().copied().filter(|w| !(w.is_setup() && w.status == WorkflowStatus::Success)).collect()
}

/// The run state of a pipeline and its (newest-per-name) workflows, observed at `provider_now` (the
/// provider's clock, so it compares with `created_at` without skew).
pub fn run_state(
    pipeline: &Pipeline,
    workflows: &[&Workflow],
    provider_now: DateTime<Utc>,
    setup_grace: Duration,
) -> Aggregate {
    if pipeline.state == PipelineState::Errored || !pipeline.errors.is_empty() {
        let messages: Vec<String> = pipeline.errors.iter().map(|e| format!("{}: {}", e.kind, e.message)).collect();
        let message = if messages.is_empty() { "pipeline errored".to_string() } else { messages.join("; ") };
        return Aggregate::with(RunState::Failed, message);
    }
    let considered = deciding(workflows);
    if considered.is_empty() {
        if let Some(done) = workflows.iter().filter(|w| w.is_setup()).filter_map(|w| w.stopped_at).max() {
            return if over_grace(done, provider_now, setup_grace) {
                Aggregate::with(RunState::Skipped, "the setup workflow continued no workflow")
            } else {
                Aggregate::with(RunState::Running, "setup done; waiting for continuation workflows")
            };
        }
        return if pipeline.state == PipelineState::Created && over_grace(pipeline.created_at, provider_now, setup_grace)
        {
            Aggregate::with(
                RunState::Skipped,
                format!("no workflows {}s after the pipeline was created", setup_grace.as_secs()),
            )
        } else {
            Aggregate::plain(RunState::Queued)
        };
    }
    workflows_state(&considered)
}

/// The state of a pipeline from its deciding workflows (see [`deciding`]; at least one). A
/// pipeline that has workflows was created without errors, so they alone decide it, and a
/// status read needs no pipeline read then.
pub fn workflows_state(considered: &[&Workflow]) -> Aggregate {
    if let Some(going) = still_going(considered) {
        return going;
    }
    let any = |f: fn(&WorkflowStatus) -> bool| considered.iter().any(|w| f(&w.status));
    if any(|s| matches!(s, WorkflowStatus::Failed | WorkflowStatus::Error | WorkflowStatus::Unauthorized)) {
        return Aggregate::plain(RunState::Failed);
    }
    if any(|s| *s == WorkflowStatus::Canceled) {
        return Aggregate::plain(RunState::Canceled);
    }
    if any(|s| *s == WorkflowStatus::Success) {
        return Aggregate::plain(RunState::Succeeded);
    }
    Aggregate::with(RunState::Skipped, "no workflow ran")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::models::PipelineError;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn pipeline(state: PipelineState) -> Pipeline {
        Pipeline {
            id: "p".into(),
            number: Some(1),
            state,
            created_at: t(0),
            errors: vec![],
            vcs: None,
            trigger_parameters: None,
        }
    }

    fn wf(name: &str, status: &str, created: i64) -> Workflow {
        Workflow {
            id: format!("{name}-{created}"),
            name: name.into(),
            status: WorkflowStatus::parse(status),
            created_at: t(created),
            stopped_at: WorkflowStatus::parse(status).is_terminal().then(|| t(created + 5)),
            tag: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(60);

    fn state_of(p: &Pipeline, ws: &[Workflow], now: i64) -> RunState {
        let newest = newest_per_name(ws);
        run_state(p, &newest, t(now), GRACE).state
    }

    #[test]
    fn row_processing_pipeline_without_workflows_is_queued() {
        for s in ["created", "pending", "setup-pending", "setup"] {
            assert_eq!(state_of(&pipeline(PipelineState::parse(s)), &[], 5), RunState::Queued, "{s}");
        }
    }

    #[test]
    fn row_errored_or_errors_is_failed_with_messages() {
        let a = run_state(&pipeline(PipelineState::Errored), &[], t(1), GRACE);
        assert_eq!(a.state, RunState::Failed);
        let mut p = pipeline(PipelineState::Created);
        p.errors.push(PipelineError { kind: "config".into(), message: "Unexpected argument(s): deploy".into() });
        let w = wf("build", "running", 1);
        let a = run_state(&p, &[&w], t(2), GRACE);
        assert_eq!(a, Aggregate::with(RunState::Failed, "config: Unexpected argument(s): deploy"));
    }

    #[test]
    fn row_any_running_failing_queued_or_unknown_is_running() {
        let p = pipeline(PipelineState::Created);
        for s in ["running", "failing", "queued", "paused-by-martians"] {
            assert_eq!(
                state_of(&p, &[wf("a", "success", 1), wf("b", s, 1), wf("c", "on_hold", 1)], 9),
                RunState::Running
            );
        }
    }

    #[test]
    fn row_on_hold_without_running_is_blocked() {
        let p = pipeline(PipelineState::Created);
        assert_eq!(
            state_of(&p, &[wf("a", "success", 1), wf("b", "on_hold", 1), wf("c", "failed", 1)], 9),
            RunState::Blocked
        );
    }

    #[test]
    fn row_all_terminal_with_a_failure_is_failed() {
        let p = pipeline(PipelineState::Created);
        for s in ["failed", "error", "unauthorized"] {
            assert_eq!(
                state_of(&p, &[wf("a", "success", 1), wf("b", s, 1), wf("c", "canceled", 1)], 9),
                RunState::Failed
            );
        }
    }

    #[test]
    fn row_else_canceled_is_canceled() {
        let p = pipeline(PipelineState::Created);
        assert_eq!(state_of(&p, &[wf("a", "success", 1), wf("b", "canceled", 1)], 9), RunState::Canceled);
    }

    #[test]
    fn row_else_success_is_succeeded_ignoring_not_run() {
        let p = pipeline(PipelineState::Created);
        assert_eq!(state_of(&p, &[wf("a", "success", 1), wf("b", "not_run", 1)], 9), RunState::Succeeded);
    }

    #[test]
    fn row_all_not_run_is_skipped() {
        let p = pipeline(PipelineState::Created);
        assert_eq!(state_of(&p, &[wf("a", "not_run", 1), wf("b", "not_run", 1)], 9), RunState::Skipped);
    }

    #[test]
    fn row_no_workflows_after_the_grace_is_skipped() {
        let p = pipeline(PipelineState::Created);
        assert_eq!(state_of(&p, &[], 59), RunState::Queued);
        let a = run_state(&p, &[], t(60), GRACE);
        assert_eq!(a.state, RunState::Skipped);
        assert!(a.message.unwrap().contains("no workflows 60s after"));
        // Config still being processed is not "nothing to run", however long it takes.
        assert_eq!(state_of(&pipeline(PipelineState::Pending), &[], 600), RunState::Queued);
    }

    #[test]
    fn newest_workflow_per_name_wins() {
        let p = pipeline(PipelineState::Created);
        let ws = [wf("test", "failed", 1), wf("build", "success", 1), wf("test", "running", 30)];
        assert_eq!(state_of(&p, &ws, 40), RunState::Running);
        let ws = [wf("test", "failed", 1), wf("build", "success", 1), wf("test", "success", 30)];
        assert_eq!(state_of(&p, &ws, 40), RunState::Succeeded);
        assert_eq!(newest_per_name(&ws).iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["build-1", "test-30"]);
    }

    #[test]
    fn a_successful_setup_workflow_waits_for_its_continuation() {
        let p = pipeline(PipelineState::Created);
        let mut setup = wf("setup", "success", 1);
        setup.tag = Some("setup".into());
        assert_eq!(state_of(&p, std::slice::from_ref(&setup), 10), RunState::Running);
        assert_eq!(state_of(&p, std::slice::from_ref(&setup), 6 + 60), RunState::Skipped);
        assert_eq!(state_of(&p, &[setup.clone(), wf("build", "success", 8)], 20), RunState::Succeeded);
        let mut failed_setup = wf("setup", "failed", 1);
        failed_setup.tag = Some("setup".into());
        assert_eq!(state_of(&p, &[failed_setup], 20), RunState::Failed);
    }

    #[test]
    fn workflow_states_for_detail() {
        assert_eq!(workflow_state(&WorkflowStatus::Queued), RunState::Queued);
        assert_eq!(workflow_state(&WorkflowStatus::OnHold), RunState::Blocked);
        assert_eq!(workflow_state(&WorkflowStatus::NotRun), RunState::Skipped);
        assert_eq!(workflow_state(&WorkflowStatus::Unauthorized), RunState::Failed);
    }
}
