//! CDEvents v0.5.1 `pipelineRun` events (`shared/specs/cdevents/`) built from run events.
//!
//! A run's `created` event becomes `pipelinerun.queued`, its first move into `running` (or
//! `blocked`, waiting for an approval mid-pipeline) from `pending`/`queued` becomes
//! `pipelinerun.started`, and its move into a terminal state becomes `pipelinerun.finished`
//! with the outcome of DESIGN.md §4 (`skipped` finishes as `success`; the cigw state is always
//! in `customData.cigw.state`). Other run events send nothing.

use chrono::SecondsFormat;
use cigw_core::RunState;
use cigw_store::{EventKind, EventRecord, RunRecord};
use serde_json::{Value, json};

/// The CDEvents specification version the events follow.
pub const SPEC_VERSION: &str = "0.5.1";

/// Which `pipelineRun` event a run event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineRunEvent {
    /// The run was accepted and waits to be sent or to start.
    Queued,
    /// The run started at its provider.
    Started,
    /// The run ended.
    Finished,
}

impl PipelineRunEvent {
    /// The CDEvents `context.type`.
    pub fn cdevents_type(self) -> &'static str {
        match self {
            Self::Queued => "dev.cdevents.pipelinerun.queued.0.3.0",
            Self::Started => "dev.cdevents.pipelinerun.started.0.3.0",
            Self::Finished => "dev.cdevents.pipelinerun.finished.0.3.0",
        }
    }

    /// The state a notification's `states` filter sees: `pending` for queued, `running` for
    /// started, the end state for finished.
    pub fn filter_state(self, event: &EventRecord) -> RunState {
        match self {
            Self::Queued => RunState::Pending,
            Self::Started => RunState::Running,
            Self::Finished => event.state,
        }
    }

    /// Which event `event` is, if any.
    pub fn of(event: &EventRecord) -> Option<PipelineRunEvent> {
        if event.kind == EventKind::Created {
            return Some(Self::Queued);
        }
        // Moves carry `from` (the state before) in their data; other events leave the state alone.
        let from = event.data.get("from").and_then(Value::as_str)?.parse::<RunState>().ok()?;
        if from == event.state {
            return None;
        }
        if event.state.is_terminal() && !from.is_terminal() {
            Some(Self::Finished)
        } else if matches!(event.state, RunState::Running | RunState::Blocked)
            && matches!(from, RunState::Pending | RunState::Queued)
        {
            Some(Self::Started)
        } else {
            None
        }
    }
}

/// The `finished` outcome of a terminal state (DESIGN.md §4).
pub fn outcome(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded | RunState::Skipped => "success",
        RunState::Failed => "failure",
        RunState::Canceled => "cancel",
        _ => "error",
    }
}

/// Where events say they come from and how they link to cigw.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `context.source` and `subject.source`: `server.public_url`, or `/cigw` without one.
    pub source: String,
    /// `server.public_url` without a trailing slash, when set (absolute run links).
    pub public_url: Option<String>,
}

impl Origin {
    /// From `server.public_url`.
    pub fn new(public_url: Option<&str>) -> Self {
        let public_url = public_url.map(|u| u.trim_end_matches('/').to_string()).filter(|u| !u.is_empty());
        Self { source: public_url.clone().unwrap_or_else(|| "/cigw".into()), public_url }
    }

    fn run_link(&self, run_id: &str) -> Option<String> {
        self.public_url.as_ref().map(|base| format!("{base}/v1/runs/{run_id}"))
    }
}

/// The event id: stable for one (notification, run event), unique across notifications and
/// databases (run ids are UUIDs), so a receiver can drop repeats.
pub fn event_id(notification: &str, event: &EventRecord) -> String {
    format!("{}.{}.{}", event.run_id, event.id, notification)
}

/// The CDEvent a notification sends about `event` of `run` (`run` as read when the event was
/// consumed: its parameters are masked).
pub fn build(
    kind: PipelineRunEvent,
    notification: &str,
    event: &EventRecord,
    run: &RunRecord,
    origin: &Origin,
) -> Value {
    let provider_url = run.provider_ref.as_ref().and_then(|r| r.url.clone());
    let run_url = origin.run_link(&run.id);
    let mut content = json!({ "pipelineName": run.target });
    let uri = provider_url.clone().filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    if let Some(uri) = uri.or_else(|| run_url.clone()) {
        content["uri"] = json!(uri);
    }
    if kind == PipelineRunEvent::Finished {
        content["outcome"] = json!(outcome(event.state));
        if matches!(event.state, RunState::Failed | RunState::Error)
            && let Some(message) = run.message.as_deref().filter(|m| !m.is_empty())
        {
            content["errors"] = json!(message);
        }
    }
    json!({
        "context": {
            "specversion": SPEC_VERSION,
            "id": event_id(notification, event),
            "source": origin.source,
            "type": kind.cdevents_type(),
            "timestamp": event.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "chainId": run.trigger_id,
        },
        "subject": {
            "id": run.id,
            "source": origin.source,
            "content": content,
        },
        "customDataContentType": "application/json",
        "customData": {
            "cigw": {
                "notification": notification,
                "event_id": event.id,
                "event_kind": event.kind.as_str(),
                "state": event.state.as_str(),
                "run_id": run.id,
                "trigger_id": run.trigger_id,
                "target": run.target,
                "provider": run.provider.as_str(),
                "account": run.account,
                "ref": run.git_ref,
                "parameters": run.parameters.masked_json(),
                "requested_by": run.requested_by,
                "provider_run_id": run.provider_ref.as_ref().map(|r| r.id.clone()),
                "provider_url": provider_url,
                "run_url": run_url,
                "message": run.message,
                "rerun_of": run.rerun_of,
                "chain_parent": run.chain_parent,
            }
        }
    })
}
