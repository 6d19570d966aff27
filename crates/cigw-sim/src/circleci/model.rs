//! The simulated objects and their JSON; statuses are computed from the clock, never stored.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::CircleciSimConfig;

/// A project the simulator knows.
#[derive(Debug, Clone)]
pub struct SimProject {
    /// Slug in the API's spelling (`gh/org/repo`, `circleci/<org-id>/<project-id>`).
    pub slug: String,
    /// Project UUID.
    pub id: String,
    /// Organization UUID.
    pub organization_id: String,
    /// Pipeline definitions `/pipeline/run` accepts.
    pub definition_ids: Vec<String>,
    /// Pipeline parameters its config declares (others are "Unexpected argument(s)").
    pub parameters: Vec<String>,
    /// Built when a classic trigger names neither branch nor tag.
    pub default_branch: String,
}

impl SimProject {
    /// A project declaring the `cigw_run_id` and `require_approval` parameters.
    pub fn new(slug: impl Into<String>) -> Self {
        Self {
            slug: slug.into(),
            id: uuid::Uuid::new_v4().to_string(),
            organization_id: uuid::Uuid::new_v4().to_string(),
            definition_ids: Vec::new(),
            parameters: vec!["cigw_run_id".into(), super::APPROVAL_PARAMETER.into()],
            default_branch: "main".into(),
        }
    }

    /// Accept this pipeline definition on `/pipeline/run`.
    pub fn with_definition(mut self, id: impl Into<String>) -> Self {
        self.definition_ids.push(id.into());
        self
    }

    /// Declare more parameters.
    pub fn with_parameters<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.parameters.extend(names.into_iter().map(Into::into));
        self
    }

    /// The slug as webhooks spell it (`github/…`).
    pub fn webhook_slug(&self) -> String {
        match self.slug.split_once('/') {
            Some(("gh", rest)) => format!("github/{rest}"),
            Some(("bb", rest)) => format!("bitbucket/{rest}"),
            _ => self.slug.clone(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.slug.rsplit('/').next().unwrap_or(&self.slug)
    }

    fn vcs_provider(&self) -> &'static str {
        if self.slug.starts_with("bb/") { "Bitbucket" } else { "GitHub" }
    }

    fn repo_url(&self) -> String {
        let mut parts = self.slug.splitn(3, '/');
        let (_, org, repo) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let host = if self.slug.starts_with("bb/") { "bitbucket.org" } else { "github.com" };
        format!("https://{host}/{org}/{repo}")
    }
}

/// A pipeline.
#[derive(Debug, Clone)]
pub struct SimPipeline {
    /// UUID.
    pub id: String,
    /// Per-project number.
    pub number: u64,
    /// The project's slug.
    pub project_slug: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Branch built.
    pub branch: Option<String>,
    /// Tag built.
    pub tag: Option<String>,
    /// Commit (the branch head: CircleCI cannot pin one).
    pub revision: String,
    /// Parameters as sent.
    pub parameters: Map<String, Value>,
    /// Config errors (`type`, `message`): the pipeline is `errored`.
    pub errors: Vec<(String, String)>,
    /// Whether `/pipeline/run` created it.
    pub via_definition: bool,
}

/// A workflow of a pipeline.
#[derive(Debug, Clone)]
pub struct SimWorkflow {
    /// UUID.
    pub id: String,
    /// Its pipeline.
    pub pipeline_id: String,
    /// Its pipeline's number.
    pub pipeline_number: u64,
    /// The project's slug.
    pub project_slug: String,
    /// Name (shared with its reruns).
    pub name: String,
    /// Creation time (it is listed from then on).
    pub created_at: DateTime<Utc>,
    /// Its job fails.
    pub fails: bool,
    /// It holds for an approval after its build job.
    pub hold: bool,
    /// The approval request (the approval job's id) when `hold`.
    pub approval_request_id: Option<String>,
    /// When approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// When cancelled.
    pub canceled_at: Option<DateTime<Utc>>,
    /// The workflow this one reruns.
    pub rerun_of: Option<String>,
    /// Job UUIDs: build, then (when `hold`) the deploy job.
    pub job_ids: Vec<String>,
}

/// A workflow's status at some time, with its stop time when terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Phase {
    pub(crate) status: &'static str,
    pub(crate) stopped_at: Option<DateTime<Utc>>,
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SimWorkflow {
    /// The status the clock implies, before any cancel.
    fn natural(&self, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> Phase {
        let running = |status| Phase { status, stopped_at: None };
        let start = after(self.created_at, cfg.queued_for);
        if now < start {
            return running("queued");
        }
        if self.hold {
            let held = after(start, cfg.run_for / 2);
            if now < held {
                return running("running");
            }
            let Some(approved) = self.approved_at else { return running("on_hold") };
            let end = after(approved.max(held), cfg.run_for / 2);
            return if now < end { running("running") } else { Phase { status: "success", stopped_at: Some(end) } };
        }
        let end = after(start, cfg.run_for);
        match (self.fails, now < end) {
            (false, true) => running("running"),
            (false, false) => Phase { status: "success", stopped_at: Some(end) },
            (true, true) if now < after(start, cfg.run_for / 2) => running("running"),
            (true, true) => running("failing"),
            (true, false) => Phase { status: "failed", stopped_at: Some(end) },
        }
    }

    pub(crate) fn phase(&self, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> Phase {
        match self.canceled_at {
            Some(c) if c <= now => Phase { status: "canceled", stopped_at: Some(c) },
            _ => self.natural(now, cfg),
        }
    }

    pub(crate) fn to_json(&self, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> Value {
        let phase = self.phase(now, cfg);
        json!({
            "pipeline_id": self.pipeline_id,
            "id": self.id,
            "name": self.name,
            "project_slug": self.project_slug,
            "status": phase.status,
            "started_by": "d8a3f0c1-4b7e-4a8f-9f4c-5a0b8e2c1d33",
            "pipeline_number": self.pipeline_number,
            "created_at": ts(self.created_at),
            "stopped_at": phase.stopped_at.map(ts),
        })
    }

    /// The jobs, as `GET /workflow/{id}/job` lists them.
    pub(crate) fn jobs_json(&self, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> Vec<Value> {
        let phase = self.phase(now, cfg);
        let start = after(self.created_at, cfg.queued_for);
        let started = |t: DateTime<Utc>| ts(if now < t { self.created_at } else { t });
        let job = |id: &str, name: &str, kind: &str, status: &str, started_at: String, deps: Vec<&str>| {
            json!({"id": id, "name": name, "type": kind, "status": status, "started_at": started_at,
                   "dependencies": deps, "project_slug": self.project_slug, "stopped_at": Value::Null})
        };
        if !self.hold {
            let status = match phase.status {
                "failing" => "running",
                "queued" => "queued",
                s => s,
            };
            let mut j = job(&self.job_ids[0], &format!("{}-job", self.name), "build", status, started(start), vec![]);
            j["job_number"] = json!(self.pipeline_number * 10 + 1);
            j["stopped_at"] = json!(phase.stopped_at.map(ts));
            return vec![j];
        }
        let held = after(start, cfg.run_for / 2);
        let canceled = phase.status == "canceled";
        let build_status = if now < start {
            "queued"
        } else if now < held {
            if canceled { "canceled" } else { "running" }
        } else {
            "success"
        };
        let approval = self.approval_request_id.clone().unwrap_or_default();
        let approval_status = match (now < held, self.approved_at, canceled) {
            (true, _, _) => "blocked",
            (false, Some(_), _) => "success",
            (false, None, true) => "canceled",
            (false, None, false) => "on_hold",
        };
        let deploy_status = match (self.approved_at, phase.status) {
            (_, "canceled") => "canceled",
            (Some(_), "success") => "success",
            (Some(_), _) => "running",
            (None, _) => "blocked",
        };
        let mut build = job(&self.job_ids[0], "build", "build", build_status, started(start), vec![]);
        build["job_number"] = json!(self.pipeline_number * 10 + 1);
        let mut hold = job(&approval, "hold", "approval", approval_status, started(held), vec![&self.job_ids[0]]);
        hold["approval_request_id"] = json!(approval);
        let deploy = job(
            &self.job_ids[1],
            "deploy",
            "build",
            deploy_status,
            ts(self.approved_at.unwrap_or(self.created_at)),
            vec![&approval],
        );
        vec![build, hold, deploy]
    }
}

impl SimPipeline {
    pub(crate) fn state(&self, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> &'static str {
        if !self.errors.is_empty() {
            "errored"
        } else if now < after(self.created_at, cfg.pending_for) {
            "pending"
        } else {
            "created"
        }
    }

    pub(crate) fn to_json(&self, project: Option<&SimProject>, now: DateTime<Utc>, cfg: &CircleciSimConfig) -> Value {
        let mut vcs = json!({
            "provider_name": project.map_or("GitHub", SimProject::vcs_provider),
            "origin_repository_url": project.map(SimProject::repo_url).unwrap_or_default(),
            "target_repository_url": project.map(SimProject::repo_url).unwrap_or_default(),
            "revision": self.revision,
            "commit": {"subject": "Simulated change", "body": ""},
        });
        if let Some(b) = &self.branch {
            vcs["branch"] = json!(b);
        }
        if let Some(t) = &self.tag {
            vcs["tag"] = json!(t);
        }
        let mut trigger_parameters = self.parameters.clone();
        let git = json!({"branch": self.branch, "tag": self.tag, "checkout_sha": self.revision});
        trigger_parameters.insert("git".into(), git);
        json!({
            "id": self.id,
            "errors": self.errors.iter().map(|(t, m)| json!({"type": t, "message": m})).collect::<Vec<_>>(),
            "project_slug": self.project_slug,
            "updated_at": ts(self.created_at),
            "number": self.number,
            "trigger_parameters": trigger_parameters,
            "state": self.state(now, cfg),
            "created_at": ts(self.created_at),
            "trigger": {"type": "api", "received_at": ts(self.created_at),
                        "actor": {"login": "sim-user", "avatar_url": Value::Null}},
            "vcs": vcs,
        })
    }

    pub(crate) fn app_url(&self, project: &SimProject) -> String {
        format!("https://app.circleci.com/pipelines/{}/{}", project.webhook_slug(), self.number)
    }
}

/// A random 40-hex commit id.
pub(crate) fn revision() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}
