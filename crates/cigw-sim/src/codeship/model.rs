//! The simulator's state and how a build's status follows from the clock.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{CodeshipSimConfig, ORGANIZATION_UUID};
use crate::ledger::{Identified, Ledger};

/// Basic or Pro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimProjectType {
    /// A restart runs the same build uuid again.
    Basic,
    /// A restart creates a new build.
    Pro,
}

impl SimProjectType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Pro => "pro",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SimUser {
    pub(crate) password: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) two_factor: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SimToken {
    pub(crate) email: String,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimProject {
    pub(crate) uuid: String,
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) project_type: SimProjectType,
    pub(crate) created_at: DateTime<Utc>,
}

/// One run of a build: the first, plus one per Basic restart.
#[derive(Debug, Clone)]
pub(crate) struct BuildRun {
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) stopped_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimBuild {
    pub(crate) uuid: String,
    pub(crate) project_uuid: String,
    pub(crate) project_id: i64,
    pub(crate) branch: String,
    pub(crate) sha: String,
    pub(crate) runs: Vec<BuildRun>,
    /// The harness build-counter key: the `commit_sha` sent, else the ref.
    pub(crate) key: String,
    /// Uuids of the pipeline (Basic), service and step (Pro) the detail endpoints show.
    pub(crate) detail_uuids: [String; 3],
}

/// What a build shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) status: &'static str,
    pub(crate) queued_at: Option<DateTime<Utc>>,
    pub(crate) allocated_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

impl View {
    pub(crate) fn is_final(&self) -> bool {
        self.finished_at.is_some()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: CodeshipSimConfig,
    pub(crate) users: BTreeMap<String, SimUser>,
    pub(crate) tokens: BTreeMap<String, SimToken>,
    pub(crate) projects: BTreeMap<String, SimProject>,
    /// In creation order.
    pub(crate) builds: Ledger<SimBuild>,
    /// Per user: the minute of the current window and the requests in it.
    pub(crate) windows: BTreeMap<String, (i64, u32)>,
    pub(crate) branch_heads: BTreeMap<String, String>,
    pub(crate) next_project_id: i64,
}

fn dur(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// RFC 3339 with milliseconds and `+00:00`, the fixtures' format.
pub(crate) fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| t.to_rfc3339_opts(SecondsFormat::Millis, false).into())
}

impl SimBuild {
    pub(crate) fn new(project_uuid: &str, project_id: i64, branch: &str, sha: &str, at: DateTime<Utc>) -> Self {
        Self {
            uuid: uuid::Uuid::new_v4().to_string(),
            project_uuid: project_uuid.to_string(),
            project_id,
            branch: branch.to_string(),
            sha: sha.to_string(),
            runs: vec![BuildRun { created_at: at, stopped_at: None }],
            key: sha.to_string(),
            detail_uuids: [(); 3].map(|_| uuid::Uuid::new_v4().to_string()),
        }
    }

    /// The latest run's status at `now`, from its creation time and the phase durations.
    pub(crate) fn view(&self, config: &CodeshipSimConfig, project_type: SimProjectType, now: DateTime<Utc>) -> View {
        let run = self.runs.last().expect("a build has at least one run");
        let queued = run.created_at + dur(config.initiated_for);
        let started = queued + dur(config.waiting_for);
        let ends = started + dur(config.testing_for);
        let allocated = |at: DateTime<Utc>| (project_type == SimProjectType::Pro && at >= started).then_some(started);
        if let Some(stopped) = run.stopped_at.filter(|s| *s < ends && *s <= now) {
            return View {
                status: "stopped",
                queued_at: (stopped >= queued).then_some(queued),
                allocated_at: allocated(stopped),
                finished_at: Some(stopped),
            };
        }
        if now < queued {
            return View { status: "initiated", queued_at: None, allocated_at: None, finished_at: None };
        }
        if now < started {
            return View { status: "waiting", queued_at: Some(queued), allocated_at: None, finished_at: None };
        }
        if now < ends {
            return View {
                status: "testing",
                queued_at: Some(queued),
                allocated_at: allocated(now),
                finished_at: None,
            };
        }
        let status = if config.failing_branches.contains(&self.branch) {
            "error"
        } else if config.infrastructure_failure_branches.contains(&self.branch) {
            "infrastructure_failure"
        } else {
            "success"
        };
        View { status, queued_at: Some(queued), allocated_at: allocated(ends), finished_at: Some(ends) }
    }

    /// The build object with the fixtures' field set; links are absolute under `base`.
    pub(crate) fn to_json(&self, view: &View, project_type: SimProjectType, base: &str) -> Value {
        let self_url =
            format!("{base}/v2/organizations/{ORGANIZATION_UUID}/projects/{}/builds/{}", self.project_uuid, self.uuid);
        let links = match project_type {
            SimProjectType::Basic => json!({"pipelines": format!("{self_url}/pipelines")}),
            SimProjectType::Pro => {
                json!({"services": format!("{self_url}/services"), "steps": format!("{self_url}/steps")})
            }
        };
        json!({
            "allocated_at": ts(view.allocated_at),
            "branch": self.branch,
            "commit_message": format!("Commit {} on {}", &self.sha[..7.min(self.sha.len())], self.branch),
            "commit_sha": self.sha,
            "finished_at": ts(view.finished_at),
            "links": links,
            "organization_uuid": ORGANIZATION_UUID,
            "project_id": self.project_id,
            "project_uuid": self.project_uuid,
            "queued_at": ts(view.queued_at),
            "ref": format!("heads/{}", self.branch),
            "status": view.status,
            "username": "cigw-sim",
            "uuid": self.uuid,
        })
    }
}

impl SimProject {
    /// The project object with the fixtures' field set (Basic-only fields on Basic projects).
    pub(crate) fn to_json(&self) -> Value {
        let created = ts(Some(self.created_at));
        let mut project = json!({
            "aes_key": match self.project_type { SimProjectType::Pro => Value::from("sim-aes-key"), SimProjectType::Basic => Value::Null },
            "authentication_user": "cigw-sim",
            "created_at": created,
            "id": self.id,
            "name": self.name,
            "notification_rules": match self.project_type {
                // Options depend on the notifier: a chat notifier carries its room and key.
                SimProjectType::Pro => json!([{
                    "branch": null,
                    "branch_match": "exact",
                    "build_statuses": ["failed", "recovered"],
                    "notifier": "hipchat",
                    "options": {"key": "sim-key", "room": "builds", "url": "https://chat.example.com"},
                    "target": "all"
                }]),
                SimProjectType::Basic => json!([{
                    "branch": null,
                    "branch_match": "exact",
                    "build_statuses": ["failed", "recovered"],
                    "notifier": "email",
                    "options": {},
                    "target": "all"
                }]),
            },
            "organization_uuid": ORGANIZATION_UUID,
            "repository_provider": "github",
            "repository_url": format!("https://github.com/{}", self.name),
            "ssh_key": "ssh-rsa AAAAsimulated",
            "team_ids": [1007],
            "type": self.project_type.as_str(),
            "updated_at": created,
            "uuid": self.uuid,
        });
        if self.project_type == SimProjectType::Basic {
            let obj = project.as_object_mut().expect("an object");
            obj.insert("deployment_pipelines".into(), json!([]));
            obj.insert("environment_variables".into(), json!([]));
            obj.insert("setup_commands".into(), json!([]));
            obj.insert(
                "test_pipelines".into(),
                json!([{"commands": ["./run-tests.sh"], "id": 5, "name": "Test Commands"}]),
            );
        }
        project
    }
}

impl Identified for SimBuild {
    fn id(&self) -> &str {
        &self.uuid
    }
}
