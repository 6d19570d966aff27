//! `CiTarget` for one Codefresh pipeline.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::transport::Request;
use cigw_core::{
    CallKind, Capabilities, CiTarget, Decision, Error, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, Result,
    RunCandidate, RunStatus, TriggerOutcome, TriggerSpec,
};
use reqwest::Method;
use reqwest::header::HeaderName;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::client::{Client, build_id};
use crate::config::{PipelineLocator, RUN_ID_ANNOTATION, TargetConfig};
use crate::models::{Annotation, Build, Pipeline, WorkflowList, scalar_text};
use crate::status;

/// Builds per `/api/workflow` page (the CLI's default).
const PAGE_SIZE: usize = 25;
/// `find_recent` reads at most this many pages.
const MAX_PAGES: u64 = 20;
/// The annotation naming who asked for the run.
const REQUESTED_BY_ANNOTATION: &str = "cigw_requested_by";

/// What every Codefresh target can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    cancel: true,
    rerun: true,
    // The UI's "restart from failed step" has no public API.
    rerun_failed_only: false,
    approve: true,
    // The run API takes a branch and a sha, no tag.
    tag: false,
    pin_sha: true,
    parameters: true,
    trigger_returns_id: true,
    // Codefresh pushes nothing; builds are polled.
    callbacks: false,
    // The run id goes in the build's annotations (legacy service builds take none).
    echoes_run_id: true,
};

/// One configured Codefresh pipeline, sharing its account's client.
#[derive(Debug)]
pub struct CodefreshTarget {
    name: String,
    client: Arc<Client>,
    config: TargetConfig,
    pipeline_id: OnceCell<String>,
}

impl CodefreshTarget {
    /// A target named `name` driving `config.pipeline` through `client`.
    pub fn new(name: impl Into<String>, client: Arc<Client>, config: TargetConfig) -> Self {
        Self { name: name.into(), client, config, pipeline_id: OnceCell::new() }
    }

    /// The parsed target configuration.
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    fn run_ref(&self, id: String) -> ProviderRunRef {
        let mut r = ProviderRunRef::new(id);
        r.url = Some(self.client.build_link(&r.id));
        r
    }

    /// Variables: the target's fixed ones, then the run's parameters (secret ones encrypted).
    fn variables(&self, spec: &TriggerSpec) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .config
            .variables
            .iter()
            .filter(|(k, _)| spec.parameters.get(k).is_none())
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        for (name, entry) in spec.parameters.iter() {
            let mut var = json!({"key": name, "value": entry.value.to_string()});
            if entry.secret {
                var["encrypted"] = Value::Bool(true);
            }
            out.push(var);
        }
        out
    }

    fn run_body(&self, spec: &TriggerSpec) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(branch) = &spec.git_ref.branch {
            body.insert("branch".into(), branch.clone().into());
        }
        if let Some(sha) = &spec.git_ref.sha {
            body.insert("sha".into(), sha.clone().into());
        }
        if let Some(trigger) = &self.config.trigger {
            body.insert("trigger".into(), trigger.clone().into());
        }
        let variables = self.variables(spec);
        if !variables.is_empty() {
            body.insert("variables".into(), variables.into());
        }
        let mut annotations = serde_json::Map::new();
        annotations.insert(RUN_ID_ANNOTATION.into(), spec.run_id.clone().into());
        if !spec.requested_by.is_empty() {
            annotations.insert(REQUESTED_BY_ANNOTATION.into(), spec.requested_by.clone().into());
        }
        body.insert("annotations".into(), annotations.into());
        if !self.config.contexts.is_empty() {
            body.insert("contexts".into(), self.config.contexts.clone().into());
        }
        body.insert("options".into(), serde_json::to_value(&self.config.options).unwrap_or_else(|_| json!({})));
        body.into()
    }

    /// The body of the legacy `POST /api/builds/{serviceId}`: variables as an object map.
    fn legacy_body(&self, spec: &TriggerSpec) -> Value {
        let mut variables: serde_json::Map<String, Value> =
            self.config.variables.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        for (name, entry) in spec.parameters.iter() {
            variables.insert(name.to_string(), entry.value.to_string().into());
        }
        let mut body = serde_json::Map::new();
        if let Some(branch) = &spec.git_ref.branch {
            body.insert("branch".into(), branch.clone().into());
        }
        if let Some(sha) = &spec.git_ref.sha {
            body.insert("sha".into(), sha.clone().into());
        }
        if !variables.is_empty() {
            body.insert("variables".into(), variables.into());
        }
        if self.config.options.no_cache {
            body.insert("buildFlags".into(), json!({"nocache": true}));
        }
        body.into()
    }

    /// The pipeline id `/api/workflow?pipeline=` filters on, resolved once for a name.
    async fn pipeline_id(&self) -> Result<&str> {
        self.pipeline_id
            .get_or_try_init(|| async {
                match &self.config.pipeline {
                    PipelineLocator::Id(id) | PipelineLocator::Service(id) => Ok(id.clone()),
                    PipelineLocator::Name(name) => {
                        let answer = self
                            .client
                            .send(CallKind::Idempotent, "get pipeline", Request::get(&["pipelines", name]))
                            .await?;
                        let pipeline: Pipeline = answer.json("GET /pipelines/{name}")?;
                        Ok(pipeline.metadata.id)
                    }
                }
            })
            .await
            .map(String::as_str)
    }

    /// The gateway run id a build carries: from the build object when it has annotations,
    /// else from the annotations API. Builds without it (started elsewhere) have `None`.
    async fn correlation_id(&self, build: &Build, id: &str) -> Result<Option<String>> {
        if let Some(v) = build.annotation(RUN_ID_ANNOTATION) {
            return Ok(Some(v));
        }
        if matches!(self.config.pipeline, PipelineLocator::Service(_)) {
            return Ok(None);
        }
        let call = Request::get(&["annotations"])
            .query("entityType", "build")
            .query("entityId", id)
            .query("key", RUN_ID_ANNOTATION);
        match self.client.send(CallKind::Idempotent, "list annotations", call).await {
            Ok(answer) => {
                let list: Vec<Annotation> = answer.json("GET /annotations")?;
                Ok(list
                    .into_iter()
                    .find(|a| a.key == RUN_ID_ANNOTATION)
                    .and_then(|a| a.value.as_ref().and_then(scalar_text)))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(Error::PermissionDenied { message }) => {
                tracing::warn!(build = id, %message, "cannot read build annotations; matching without the run id");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

async fn get_build(client: &Client, id: &str) -> Result<Build> {
    let answer = client
        .send(CallKind::Idempotent, "get build", Request::get(&["builds", id]).query("noAccount", "false"))
        .await?;
    answer.json("GET /builds/{id}")
}

/// `GET /api/builds/{id}`, mapped: all a status read needs is the build id.
pub(crate) async fn build_status(client: &Client, run: &ProviderRunRef) -> Result<RunStatus> {
    let build = get_build(client, &run.id).await?;
    let state = status::run_state(&build.status);
    if let crate::models::BuildStatus::Unknown(s) = &build.status {
        tracing::warn!(status = %s, "unknown Codefresh build status, treated as running");
    }
    let mut out = RunStatus::new(state, build.status.as_str());
    out.created_at = build.created;
    out.started_at = build.started;
    out.finished_at = build.finished;
    out.url = Some(client.build_link(&run.id));
    out.message = status::message(&build.status, build.pending_license.unwrap_or(false));
    Ok(out)
}

/// Terminate a build unless it has finished: all it needs is the build id.
pub(crate) async fn terminate_build(client: &Client, run: &ProviderRunRef) -> Result<()> {
    // Termination is keyed by the build's progress id, never the build id.
    let build = get_build(client, &run.id).await?;
    if build.status.is_final() {
        tracing::debug!(status = %build.status, "build already finished; nothing to terminate");
        return Ok(());
    }
    let progress = build
        .progress
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::other(format!("Codefresh build {} has no progress id to terminate", run.id)))?;
    client
        .send(CallKind::Idempotent, "terminate build", Request::new(Method::DELETE, &["progress", &progress]))
        .await?;
    Ok(())
}

fn matches_query(build: &Build, query: &RecentQuery) -> bool {
    let branch_ok = query.branch.as_ref().is_none_or(|b| build.branch_name.as_ref() == Some(b));
    let sha_ok = query.sha.as_ref().is_none_or(|s| {
        build.revision.as_ref().is_some_and(|r| r.to_ascii_lowercase().starts_with(&s.to_ascii_lowercase()))
    });
    branch_ok && sha_ok
}

#[async_trait]
impl CiTarget for CodefreshTarget {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codefresh
    }

    fn locator(&self) -> String {
        self.config.pipeline.as_str().to_string()
    }

    fn capabilities(&self) -> Capabilities {
        let echoes_run_id = !matches!(self.config.pipeline, PipelineLocator::Service(_));
        Capabilities { echoes_run_id, ..CAPABILITIES }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, run_id = %spec.run_id))]
    async fn trigger(&self, spec: &TriggerSpec) -> Result<TriggerOutcome> {
        if spec.git_ref.tag.is_some() {
            return Err(Error::Unsupported { operation: "tag" });
        }
        let answer = match &self.config.pipeline {
            PipelineLocator::Name(p) | PipelineLocator::Id(p) => {
                // The same reqId on every attempt lets Codefresh drop a repeated request.
                let call = Request::post(&["pipelines", "run", p])
                    .query("reqId", spec.run_id.clone())
                    .json(self.run_body(spec))
                    .write_ahead();
                self.client.send(CallKind::StartsBuild, "run pipeline", call).await?
            }
            PipelineLocator::Service(id) => {
                let call = Request::post(&["builds", id]).json(self.legacy_body(spec)).write_ahead();
                self.client.send(CallKind::StartsBuild, "build by service", call).await?
            }
        };
        let id = build_id(&answer, "the run request")?;
        tracing::debug!(build = %id, "Codefresh build started");
        Ok(TriggerOutcome::Started(self.run_ref(id)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        build_status(&self.client, run).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        terminate_build(&self.client, run).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id))]
    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> Result<TriggerOutcome> {
        if options.failed_only {
            return Err(Error::Unsupported { operation: "rerun_failed_only" });
        }
        let answer = self
            .client
            .send(CallKind::StartsBuild, "restart build", Request::get(&["builds", "rebuild", &run.id]).write_ahead())
            .await?;
        let id = build_id(&answer, "the restart request")?;
        tracing::info!(new_build = %id, "Codefresh build restarted");
        Ok(TriggerOutcome::Started(self.run_ref(id)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name, build = %run.id))]
    async fn approve(&self, run: &ProviderRunRef, decision: Decision) -> Result<()> {
        let verb = match decision {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        };
        self.client
            .send(CallKind::Idempotent, "approve build", Request::get(&["workflow", &run.id, "pending-approval", verb]))
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = "codefresh", target = %self.name))]
    async fn find_recent(&self, query: &RecentQuery) -> Result<Vec<RunCandidate>> {
        if query.tag.is_some() {
            // Codefresh targets never build tags through cigw.
            return Ok(Vec::new());
        }
        let pipeline_id = self.pipeline_id().await?.to_string();
        let mut candidates = Vec::new();
        let mut page: u64 = 1;
        let mut session: Option<String> = None;
        loop {
            let mut call = Request::get(&["workflow"])
                .query("limit", PAGE_SIZE.to_string())
                .query("page", page.to_string())
                .query("pipeline", pipeline_id.clone())
                .query("startDate", query.since.format("%Y-%m-%d").to_string())
                .query("paginationReset", (page == 1).to_string());
            if let Some(branch) = &query.branch {
                call = call.query("branchName", branch.clone());
            }
            if let Some(sha) = query.sha.as_ref().filter(|s| s.len() == 40) {
                call = call.query("revision", sha.clone());
            }
            if let Some(s) = &session {
                call = call.header(HeaderName::from_static("x-pagination-session-id"), s.clone());
            }
            let answer = self.client.send(CallKind::Idempotent, "list builds", call).await?;
            let list: WorkflowList = answer.json("GET /workflow")?;
            if let Some(s) = list.pagination.as_ref().and_then(|p| p.session_id.clone()) {
                session.get_or_insert(s);
            }
            let count = list.workflows.docs.len();
            let mut reached_older = false;
            for build in &list.workflows.docs {
                let Some(created) = build.created else { continue };
                if created < query.since {
                    reached_older = true;
                    continue;
                }
                let Some(id) = build.build_id() else { continue };
                if !matches_query(build, query) {
                    continue;
                }
                candidates.push(candidate(self, build, id, created, self.correlation_id(build, id).await?));
            }
            let next = match &list.pagination {
                Some(p) if p.next_page.is_some() => p.next_after(page),
                _ => (count >= PAGE_SIZE).then_some(page + 1),
            };
            match next {
                Some(n) if !reached_older && count > 0 && n <= MAX_PAGES => page = n,
                _ => break,
            }
        }
        Ok(candidates)
    }
}

fn candidate(
    target: &CodefreshTarget,
    build: &Build,
    id: &str,
    created: DateTime<Utc>,
    correlation_id: Option<String>,
) -> RunCandidate {
    RunCandidate {
        run_ref: target.run_ref(id.to_string()),
        branch: build.branch_name.clone(),
        tag: None,
        sha: build.revision.clone().filter(|s| !s.is_empty()),
        created_at: created,
        correlation_id,
    }
}
