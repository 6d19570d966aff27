//! The `CiTarget` of one CircleCI project.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::transport::Request;
use cigw_core::{
    CallKind, Capabilities, CiTarget, Decision, Error, GitRef, ParamValue, ProviderKind, ProviderRunRef, RecentQuery,
    RerunOptions, Result, RunCandidate, RunState, RunStatus, StepDetail, TriggerOutcome, TriggerSpec,
};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use url::Url;

use crate::client::Client;
use crate::config::{MAX_PARAMETER_NAME, MAX_PARAMETER_VALUE, MAX_PARAMETERS, RUN_ID_PARAMETER, TargetConfig};
use crate::models::{
    Job, JobType, MessageResponse, Pipeline, PipelineCreation, RerunResponse, Workflow, WorkflowStatus,
};
use crate::slug::ProjectSlug;
use crate::status::{deciding, newest_per_name, run_state, workflow_state, workflows_state};

/// Key of `ProviderRunRef.extra` holding the workflow ids a rerun created.
pub const EXTRA_WORKFLOW_IDS: &str = "workflow_ids";

/// One CircleCI project (and, optionally, pipeline definition) as a cigw target.
#[derive(Debug, Clone)]
pub struct CircleciTarget {
    name: String,
    client: Arc<Client>,
    app_url: Url,
    slug: ProjectSlug,
    definition_id: Option<String>,
    ignore_sha: bool,
    setup_grace: Duration,
    run_id_parameter: bool,
}

impl CircleciTarget {
    /// A target named `name` on `client`'s account.
    pub fn new(name: impl Into<String>, client: Arc<Client>, config: TargetConfig) -> Self {
        Self {
            name: name.into(),
            app_url: client.config().app_url.clone(),
            setup_grace: config.setup_grace.unwrap_or(client.config().setup_grace),
            client,
            slug: config.slug,
            definition_id: config.definition_id,
            ignore_sha: config.ignore_sha,
            run_id_parameter: config.run_id_parameter,
        }
    }

    /// Whether a requested sha is accepted and ignored (CircleCI builds the branch head) instead
    /// of refused; the gateway checks this at intake.
    pub fn ignore_sha(&self) -> bool {
        self.ignore_sha
    }

    /// The project slug.
    pub fn slug(&self) -> &ProjectSlug {
        &self.slug
    }

    fn pipeline_url(&self, number: Option<u64>) -> Option<String> {
        let number = number?;
        Some(format!("{}/pipelines/{}/{number}", self.app_url.as_str().trim_end_matches('/'), self.slug.app_path()))
    }

    fn run_ref(&self, id: String, number: Option<u64>, attempt: u32, extra: Value) -> ProviderRunRef {
        ProviderRunRef { url: self.pipeline_url(number), id, number, attempt, extra }
    }

    /// The request's parameters as CircleCI's typed map, with the run id added where the target
    /// declares `cigw_run_id`, checked against CircleCI's limits.
    fn parameters(&self, spec: &TriggerSpec) -> Result<Map<String, Value>> {
        let mut out: Map<String, Value> =
            spec.parameters.iter().map(|(k, e)| (k.to_string(), e.value.to_json())).collect();
        if self.run_id_parameter && !out.contains_key(RUN_ID_PARAMETER) {
            out.insert(RUN_ID_PARAMETER.into(), Value::String(spec.run_id.clone()));
        }
        let invalid = |message: String| Err(Error::InvalidRequest { message });
        if out.len() > MAX_PARAMETERS {
            return invalid(format!("{} parameters given; CircleCI takes at most {MAX_PARAMETERS}", out.len()));
        }
        for (name, e) in spec.parameters.iter() {
            if name.chars().count() > MAX_PARAMETER_NAME {
                return invalid(format!("parameter name `{name}` is longer than {MAX_PARAMETER_NAME} characters"));
            }
            if let ParamValue::String(s) = &e.value
                && s.chars().count() > MAX_PARAMETER_VALUE
            {
                return invalid(format!("parameter `{name}` is longer than {MAX_PARAMETER_VALUE} characters"));
            }
        }
        Ok(out)
    }

    async fn pipeline(&self, id: &str) -> Result<(Pipeline, Option<DateTime<Utc>>)> {
        pipeline(&self.client, id).await
    }

    async fn workflows(&self, pipeline_id: &str) -> Result<(Vec<Workflow>, Option<DateTime<Utc>>)> {
        workflows(&self.client, pipeline_id).await
    }

    async fn cancel_workflow(&self, id: &str) -> Result<()> {
        cancel_workflow(&self.client, id).await
    }
}

async fn pipeline(client: &Client, id: &str) -> Result<(Pipeline, Option<DateTime<Utc>>)> {
    let (p, answer) = client.get("get pipeline", Request::get(&["pipeline", id])).await?;
    Ok((p, answer.date))
}

async fn workflows(client: &Client, pipeline_id: &str) -> Result<(Vec<Workflow>, Option<DateTime<Utc>>)> {
    client.get_all("list pipeline workflows", Request::get(&["pipeline", pipeline_id, "workflow"]), |_| true).await
}

async fn cancel_workflow(client: &Client, id: &str) -> Result<()> {
    client.send(CallKind::Idempotent, "cancel workflow", Request::post(&["workflow", id, "cancel"])).await?;
    Ok(())
}

/// Read a pipeline and its workflows: all a status read needs is the pipeline id (and, for a
/// rerun, the workflow ids in `extra`). `url` links a pipeline number to the web app.
pub(crate) async fn pipeline_status(
    client: &Client,
    run: &ProviderRunRef,
    setup_grace: Duration,
    url: impl Fn(Option<u64>) -> Option<String>,
) -> Result<RunStatus> {
    let (workflows, list_date) = workflows(client, &run.id).await?;
    let newest = newest_per_name(&workflows);
    let rerun_listed = run.attempt <= 1 || {
        let listed: BTreeSet<&str> = workflows.iter().map(|w| w.id.as_str()).collect();
        rerun_ids(run).iter().all(|id| listed.contains(id.as_str()))
    };
    // Once workflows exist they alone decide the state: one call per poll. The pipeline is read
    // only before (its errors, the setup grace), or when the run's link needs its number.
    let deciding = deciding(&newest);
    let link = url(run.number);
    let decided = (rerun_listed && !deciding.is_empty() && link.is_some()).then(|| workflows_state(&deciding));
    let (pipeline, agg, provider_now) = match decided {
        Some(agg) => (None, agg, list_date.unwrap_or_else(Utc::now)),
        None => {
            let (pipeline, pipeline_date) = pipeline(client, &run.id).await?;
            let provider_now = list_date.or(pipeline_date).unwrap_or_else(Utc::now);
            let mut agg = run_state(&pipeline, &newest, provider_now, setup_grace);
            if !rerun_listed {
                agg.state = RunState::Queued;
                agg.message = Some("the rerun's workflows are not listed yet".into());
            }
            (Some(pipeline), agg, provider_now)
        }
    };
    let steps: Vec<StepDetail> = newest
        .iter()
        .map(|w| StepDetail {
            id: w.id.clone(),
            name: w.name.clone(),
            raw_status: w.status.to_string(),
            state: Some(workflow_state(&w.status)),
            started_at: Some(w.created_at),
            finished_at: w.stopped_at,
        })
        .collect();
    // Workflows exist only in a created pipeline, so an unread pipeline is `created`.
    let pipeline_state = pipeline.as_ref().map_or_else(|| "created".to_string(), |p| p.state.to_string());
    let mut raw = format!("pipeline {pipeline_state}");
    if !newest.is_empty() {
        let parts: Vec<String> = newest.iter().map(|w| format!("{} {}", w.name, w.status)).collect();
        raw.push_str(&format!("; {}", parts.join(", ")));
    }
    let finished_at =
        agg.state.is_terminal().then(|| newest.iter().filter_map(|w| w.stopped_at).max().unwrap_or(provider_now));
    Ok(RunStatus {
        state: agg.state,
        raw_status: raw,
        observed_at: Utc::now(),
        created_at: pipeline.as_ref().map(|p| p.created_at),
        started_at: newest.iter().map(|w| w.created_at).min(),
        finished_at,
        url: match &pipeline {
            Some(p) if p.number.is_some() => url(p.number),
            _ => link,
        },
        message: agg.message,
        steps,
    })
}

/// Cancel every workflow of a pipeline that has not finished: all it needs is the pipeline id.
pub(crate) async fn cancel_pipeline(client: &Client, run: &ProviderRunRef) -> Result<()> {
    let (workflows, _) = workflows(client, &run.id).await?;
    let live: Vec<&Workflow> = workflows.iter().filter(|w| !w.status.is_terminal()).collect();
    if live.is_empty() {
        if workflows.is_empty() {
            return Err(Error::Conflict {
                message: "the pipeline has no workflows yet; cancel again once they appear".into(),
            });
        }
        tracing::info!("no running workflow to cancel");
        return Ok(());
    }
    for w in live {
        cancel_workflow(client, &w.id).await?;
    }
    Ok(())
}

fn rerun_ids(run: &ProviderRunRef) -> Vec<String> {
    run.extra
        .get(EXTRA_WORKFLOW_IDS)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[async_trait]
impl CiTarget for CircleciTarget {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Circleci
    }

    fn locator(&self) -> String {
        match &self.definition_id {
            Some(d) => format!("{} (definition {d})", self.slug),
            None => self.slug.to_string(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            rerun: true,
            rerun_failed_only: true,
            approve: true,
            tag: true,
            pin_sha: false,
            parameters: true,
            trigger_returns_id: true,
            // Only an account that verifies CircleCI's webhooks hears from them.
            callbacks: !self.client.config().webhook_secrets.is_empty(),
            echoes_run_id: self.run_id_parameter,
        }
    }

    /// A sha is refused unless the target sets `ignore_sha` (CircleCI builds the branch head).
    fn check_ref(&self, git_ref: &GitRef) -> std::result::Result<(), String> {
        if git_ref.sha.is_some() && !self.ignore_sha {
            return Err("CircleCI cannot build a given commit; leave out `sha`, or set `ignore_sha = true` on the \
                        target to build the branch head instead"
                .into());
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %spec.run_id))]
    async fn trigger(&self, spec: &TriggerSpec) -> Result<TriggerOutcome> {
        let git_ref = &spec.git_ref;
        git_ref.validate().map_err(|message| Error::InvalidRequest { message })?;
        self.check_ref(git_ref).map_err(|message| Error::InvalidRequest { message })?;
        // Never both, never empty: CircleCI answers 400 to an empty branch.
        let (ref_key, ref_value) = match (&git_ref.branch, &git_ref.tag) {
            (Some(b), None) => ("branch", b.clone()),
            (None, Some(t)) => ("tag", t.clone()),
            _ => return Err(Error::InvalidRequest { message: "a CircleCI trigger needs a branch or a tag".into() }),
        };
        let parameters = self.parameters(spec)?;
        let [vcs, org, project] = self.slug.segments();
        let (segments, body): (Vec<&str>, Value) = match &self.definition_id {
            Some(definition_id) => {
                let mut body = json!({
                    "definition_id": definition_id,
                    "config": {ref_key: ref_value},
                    "checkout": {ref_key: ref_value},
                });
                if !parameters.is_empty() {
                    body["parameters"] = Value::Object(parameters);
                }
                (vec!["project", vcs, org, project, "pipeline", "run"], body)
            }
            None => {
                let mut body = json!({ref_key: ref_value});
                if !parameters.is_empty() {
                    body["parameters"] = Value::Object(parameters);
                }
                (vec!["project", vcs, org, project, "pipeline"], body)
            }
        };
        let answer = self
            .client
            .send(CallKind::StartsBuild, "trigger pipeline", Request::post(&segments).json(body).write_ahead())
            .await?;
        if answer.status == StatusCode::OK && self.definition_id.is_some() {
            let m: MessageResponse = answer.json("trigger pipeline")?;
            tracing::info!(message = %m.message, "CircleCI created no pipeline");
            return Ok(TriggerOutcome::NothingToRun { message: m.message });
        }
        let created: PipelineCreation = answer.json("trigger pipeline")?;
        tracing::debug!(pipeline = %created.id, number = ?created.number, "pipeline created");
        Ok(TriggerOutcome::Started(self.run_ref(created.id, created.number, 1, Value::Null)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, attempt = run.attempt))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        pipeline_status(&self.client, run, self.setup_grace, |number| self.pipeline_url(number)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        cancel_pipeline(&self.client, run).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id))]
    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> Result<TriggerOutcome> {
        let (pipeline, _) = self.pipeline(&run.id).await?;
        let (workflows, _) = self.workflows(&run.id).await?;
        let newest = newest_per_name(&workflows);
        if newest.is_empty() {
            return Err(Error::Conflict { message: "the pipeline has no workflows to rerun".into() });
        }
        if let Some(w) = newest.iter().find(|w| !w.status.is_terminal()) {
            return Err(Error::Conflict { message: format!("workflow `{}` is still {}", w.name, w.status) });
        }
        let failed = |w: &&&Workflow| {
            matches!(w.status, WorkflowStatus::Failed | WorkflowStatus::Error | WorkflowStatus::Unauthorized)
        };
        let chosen: Vec<&Workflow> = if options.failed_only {
            newest.iter().filter(failed).copied().collect()
        } else {
            newest.iter().filter(|w| w.status != WorkflowStatus::NotRun).copied().collect()
        };
        if chosen.is_empty() {
            let what = if options.failed_only { "no workflow failed" } else { "no workflow ran" };
            return Err(Error::Conflict { message: format!("nothing to rerun: {what}") });
        }
        let body = if options.failed_only { json!({"from_failed": true}) } else { json!({}) };
        let mut new_ids = Vec::new();
        for w in chosen {
            let answer = self
                .client
                .send(
                    CallKind::StartsBuild,
                    "rerun workflow",
                    Request::post(&["workflow", &w.id, "rerun"]).json(body.clone()).write_ahead(),
                )
                .await?;
            let r: RerunResponse = answer.json("rerun workflow")?;
            tracing::info!(old = %w.id, new = %r.workflow_id, name = %w.name, "workflow rerun");
            new_ids.push(Value::String(r.workflow_id));
        }
        let extra = json!({ EXTRA_WORKFLOW_IDS: new_ids });
        Ok(TriggerOutcome::Started(self.run_ref(
            run.id.clone(),
            pipeline.number.or(run.number),
            run.attempt + 1,
            extra,
        )))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name, run_id = %run.id, ?decision))]
    async fn approve(&self, run: &ProviderRunRef, decision: Decision) -> Result<()> {
        let (workflows, _) = self.workflows(&run.id).await?;
        let held: Vec<&Workflow> =
            newest_per_name(&workflows).into_iter().filter(|w| w.status == WorkflowStatus::OnHold).collect();
        if held.is_empty() {
            return Err(Error::Conflict { message: "no workflow of this pipeline is waiting for approval".into() });
        }
        for w in held {
            match decision {
                Decision::Approve => {
                    let (jobs, _): (Vec<Job>, _) = self
                        .client
                        .get_all("list workflow jobs", Request::get(&["workflow", &w.id, "job"]), |_| true)
                        .await?;
                    let pending = jobs.iter().filter(|j| j.kind == JobType::Approval && j.status == "on_hold");
                    for job in pending {
                        let Some(request_id) = &job.approval_request_id else {
                            return Err(Error::other(format!(
                                "approval job `{}` has no approval_request_id",
                                job.name
                            )));
                        };
                        self.client
                            .send(
                                CallKind::Idempotent,
                                "approve job",
                                Request::post(&["workflow", &w.id, "approve", request_id]),
                            )
                            .await?;
                    }
                }
                // API v2 has no deny: a held workflow that is not approved is cancelled.
                Decision::Deny => self.cancel_workflow(&w.id).await?,
            }
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "circleci", target = %self.name))]
    async fn find_recent(&self, query: &RecentQuery) -> Result<Vec<RunCandidate>> {
        let [vcs, org, project] = self.slug.segments();
        let mut request = Request::get(&["project", vcs, org, project, "pipeline"]);
        if let Some(b) = &query.branch {
            request = request.query("branch", b.as_str());
        }
        let since = query.since;
        // Pipelines come newest first: stop paging once a page reaches past `since`.
        let (pipelines, _): (Vec<Pipeline>, _) = self
            .client
            .get_all("list project pipelines", request, |page: &[Pipeline]| page.iter().all(|p| p.created_at >= since))
            .await?;
        let mut out: Vec<RunCandidate> = pipelines
            .into_iter()
            .filter(|p| p.created_at >= since)
            .filter_map(|p| {
                let vcs = p.vcs.clone().unwrap_or_default();
                if query.branch.is_some() && vcs.branch.is_some() && vcs.branch != query.branch {
                    return None;
                }
                if query.tag.is_some() && vcs.tag != query.tag {
                    return None;
                }
                if let (Some(want), Some(have)) = (&query.sha, &vcs.revision)
                    && !have.starts_with(want.as_str())
                {
                    return None;
                }
                let correlation_id = p
                    .trigger_parameters
                    .as_ref()
                    .and_then(|t| t.get(RUN_ID_PARAMETER))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Some(RunCandidate {
                    run_ref: self.run_ref(p.id.clone(), p.number, 1, Value::Null),
                    branch: vcs.branch.or_else(|| query.branch.clone().filter(|_| vcs.tag.is_none())),
                    tag: vcs.tag,
                    sha: vcs.revision,
                    created_at: p.created_at,
                    correlation_id,
                })
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(out)
    }
}
