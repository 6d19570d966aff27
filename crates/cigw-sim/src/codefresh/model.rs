//! Codefresh builds in memory, their life cycle computed lazily from the harness clock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::CodefreshSimConfig;

/// A 24-hex ObjectId: 4 bytes of seconds, then 8 random bytes (as MongoDB makes them).
pub(crate) fn object_id(now: DateTime<Utc>) -> String {
    let secs = now.timestamp().clamp(0, u32::MAX as i64) as u32;
    let random: u64 = rand::rng().random();
    format!("{secs:08x}{random:016x}")
}

fn dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A pipeline the simulator knows.
#[derive(Debug, Clone)]
pub struct SimPipeline {
    /// 24-hex id.
    pub id: String,
    /// Full name `project/pipeline`.
    pub name: String,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// One build as the simulator stores it.
#[derive(Debug, Clone)]
pub struct SimBuild {
    /// 24-hex build id.
    pub id: String,
    /// 24-hex progress id (distinct from the build id).
    pub progress: String,
    /// Pipeline id.
    pub pipeline_id: String,
    /// Full pipeline name.
    pub pipeline_name: String,
    /// Branch.
    pub branch: String,
    /// Commit sha (empty when none was given).
    pub sha: String,
    /// Variables as sent (`[{key, value, encrypted?}]`).
    pub variables: Vec<Value>,
    /// Run options as sent.
    pub options: Value,
    /// Pipeline trigger given in the run request.
    pub trigger_name: Option<String>,
    /// Annotations attached at creation.
    pub annotations: BTreeMap<String, String>,
    /// The `reqId` it was started with.
    pub req_id: Option<String>,
    /// When it was submitted.
    pub created: DateTime<Utc>,
    /// When it left `delayed` (`None` while delayed).
    pub admitted: Option<DateTime<Utc>>,
    /// Ends in `error` rather than `success`.
    pub fails: bool,
    /// Stops at an approval step when it starts running.
    pub needs_approval: bool,
    /// When an approval decision arrived, and whether it approved.
    pub decision: Option<(DateTime<Utc>, bool)>,
    /// When a terminate request arrived.
    pub terminate_requested: Option<DateTime<Utc>>,
    /// The build it restarts, for rebuilds.
    pub rebuild_of: Option<String>,
}

/// A status with the times it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) status: &'static str,
    pub(crate) started: Option<DateTime<Utc>>,
    pub(crate) finished: Option<DateTime<Utc>>,
    pub(crate) updated: DateTime<Utc>,
}

pub(crate) const FINAL: [&str; 3] = ["success", "error", "terminated"];

impl SimBuild {
    /// The life cycle without a terminate request:
    /// delayed → pending → elected → running (→ pending-approval → running) → success | error.
    fn natural(&self, cfg: &CodefreshSimConfig, now: DateTime<Utc>) -> Observed {
        let Some(start) = self.admitted else {
            return Observed { status: "delayed", started: None, finished: None, updated: self.created };
        };
        let elected_at = start + dur(cfg.pending_for);
        let running_at = elected_at + dur(cfg.elected_for);
        if now < elected_at {
            return Observed { status: "pending", started: None, finished: None, updated: start };
        }
        if now < running_at {
            return Observed { status: "elected", started: Some(elected_at), finished: None, updated: elected_at };
        }
        let started = Some(elected_at);
        let mut run_from = running_at;
        if self.needs_approval {
            match self.decision {
                None => {
                    return Observed { status: "pending-approval", started, finished: None, updated: running_at };
                }
                Some((at, false)) => {
                    return Observed { status: "error", started, finished: Some(at), updated: at };
                }
                Some((at, true)) => run_from = at,
            }
        }
        let done_at = run_from + dur(cfg.running_for);
        if now < done_at {
            return Observed { status: "running", started, finished: None, updated: run_from };
        }
        let status = if self.fails { "error" } else { "success" };
        Observed { status, started, finished: Some(done_at), updated: done_at }
    }

    /// The status at `now`, a terminate request passing through `terminating` to `terminated`.
    pub(crate) fn observe(&self, cfg: &CodefreshSimConfig, now: DateTime<Utc>) -> Observed {
        let Some(asked) = self.terminate_requested else { return self.natural(cfg, now) };
        let before = self.natural(cfg, asked);
        if FINAL.contains(&before.status) {
            // A terminate that arrived after the end changes nothing.
            return self.natural(cfg, now);
        }
        let done_at = asked + dur(cfg.terminating_for);
        if now < done_at {
            Observed { status: "terminating", started: before.started, finished: None, updated: asked }
        } else {
            Observed { status: "terminated", started: before.started, finished: Some(done_at), updated: done_at }
        }
    }

    /// The build object (providers/codefresh.md §3).
    pub(crate) fn to_json(&self, cfg: &CodefreshSimConfig, now: DateTime<Utc>) -> Value {
        let o = self.observe(cfg, now);
        let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let service_name = self.pipeline_name.rsplit('/').next().unwrap_or(&self.pipeline_name).to_string();
        json!({
            "id": self.id,
            "status": o.status,
            "created": time(Some(self.created)),
            "started": time(o.started),
            "finished": time(o.finished),
            "updated": time(Some(o.updated)),
            "progress": self.progress,
            "pipelineName": self.pipeline_name,
            "serviceName": service_name,
            "serviceId": self.pipeline_id,
            "repoOwner": "/",
            "repoName": "",
            "branchName": self.branch,
            "revision": self.sha,
            "pipelineTriggerId": Value::Null,
            "pipelineTriggerName": self.trigger_name,
            "trigger": "build",
            "webhookTriggered": false,
            "userYamlDescriptor": Value::Null,
            "pendingLicense": o.status == "delayed",
        })
    }

    /// `GET /api/progress/{id}`.
    pub(crate) fn progress_json(&self, cfg: &CodefreshSimConfig, now: DateTime<Utc>) -> Value {
        let o = self.observe(cfg, now);
        json!({
            "id": self.progress,
            "_id": self.progress,
            "status": o.status,
            "location": {"type": "firebase", "url": format!("https://sim.invalid/progress/{}", self.progress)},
        })
    }
}
