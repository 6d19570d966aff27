//! `CiTarget` for one Codeship project.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cigw_core::transport::Request;
use cigw_core::{
    CallKind, Capabilities, CiTarget, Decision, Error, GitRef, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions,
    Result, RunCandidate, RunState, RunStatus, TriggerOutcome, TriggerSpec,
};
use tokio::sync::OnceCell;

use crate::client::Client;
use crate::config::{TargetConfig, check_uuid_shape};
use crate::models::{Build, BuildEnvelope, BuildList, CreateBuild, ProjectEnvelope, ProjectType, next_link};
use crate::status::run_state;

/// Codeship's largest page.
pub const MAX_PER_PAGE: u32 = 50;

/// Keys of `ProviderRunRef::extra` for a Basic restart: the build still shows its previous run
/// until Codeship starts the new one, and that must not be read as the new run's result.
const EXTRA_PREVIOUS_FINISHED_AT: &str = "previous_finished_at";
const EXTRA_RESTARTED_AT: &str = "restarted_at";

/// Key of `ProviderRunRef::extra` naming the build's project uuid: Codeship addresses a build
/// only through its project, and this lets the run be followed after its target is removed.
pub const EXTRA_PROJECT_UUID: &str = "project_uuid";
/// Key of `ProviderRunRef::extra` naming the project type (`basic` or `pro`), where known.
pub const EXTRA_PROJECT_TYPE: &str = "project_type";

/// The project a ref records in `extra` (uuid, and type where recorded); `None` for refs made
/// before the project was recorded there, or with a malformed uuid.
pub fn project_of(run: &ProviderRunRef) -> Option<(String, Option<ProjectType>)> {
    let uuid = run.extra.get(EXTRA_PROJECT_UUID)?.as_str()?;
    check_uuid_shape(uuid).ok()?;
    let project_type =
        run.extra.get(EXTRA_PROJECT_TYPE).and_then(|v| serde_json::from_value::<ProjectType>(v.clone()).ok());
    Some((uuid.to_string(), project_type))
}

/// One Codeship project, sharing its account's client.
#[derive(Debug)]
pub struct CodeshipTarget {
    name: String,
    client: Arc<Client>,
    project_uuid: String,
    project_type: OnceCell<ProjectType>,
    /// The last read of the first page of the project's builds, shared by status reads; the
    /// lock makes concurrent status reads wait for one list instead of each sending a request.
    listed: tokio::sync::Mutex<Option<Listed>>,
    /// Whether status reads come from the build list (`status_from_list`).
    status_from_list: bool,
}

/// One read of a project's build list.
#[derive(Debug)]
struct Listed {
    /// When it was read (the client's clock): the observation time of statuses taken from it.
    observed_at: DateTime<Utc>,
    /// When the read started: it serves only status reads asked before that.
    started: tokio::time::Instant,
    builds: Vec<Build>,
}

/// Strip `refs/heads/`, `refs/` or `heads/` and refuse an empty branch.
pub fn normalize_branch(branch: &str) -> Result<String> {
    let trimmed = branch.trim();
    let name = trimmed
        .strip_prefix("refs/heads/")
        .or_else(|| trimmed.strip_prefix("refs/"))
        .or_else(|| trimmed.strip_prefix("heads/"))
        .unwrap_or(trimmed)
        .trim();
    if name.is_empty() {
        return Err(Error::InvalidRequest { message: format!("branch `{branch}` is empty once normalized") });
    }
    Ok(name.to_string())
}

fn created_at(build: &Build, now: DateTime<Utc>) -> DateTime<Utc> {
    // A build without any timestamp has only just been created.
    build.queued_at.or(build.allocated_at).or(build.finished_at).unwrap_or(now)
}

impl CodeshipTarget {
    /// A target for `config.project_uuid`; the project type is discovered with one GET when
    /// not configured.
    pub fn new(name: impl Into<String>, client: Arc<Client>, config: TargetConfig) -> Self {
        Self {
            name: name.into(),
            status_from_list: client.config().status_from_list,
            client,
            project_uuid: config.project_uuid,
            project_type: OnceCell::new_with(config.project_type),
            listed: tokio::sync::Mutex::new(None),
        }
    }

    /// The same target reading each build alone: a follower reads one build at a time, where a
    /// list would only cost more.
    pub(crate) fn reading_builds_alone(mut self) -> Self {
        self.status_from_list = false;
        self
    }

    /// The project uuid.
    pub fn project_uuid(&self) -> &str {
        &self.project_uuid
    }

    /// `extra` naming this target's project, so a ref can be followed without the target.
    fn project_extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        extra.insert(EXTRA_PROJECT_UUID.into(), self.project_uuid.clone().into());
        if let Some(t) = self.project_type.get() {
            extra.insert(EXTRA_PROJECT_TYPE.into(), t.as_str().into());
        }
        extra
    }

    /// A first-attempt ref of build `uuid` of this project.
    fn run_ref(&self, uuid: impl Into<String>) -> ProviderRunRef {
        let mut r = ProviderRunRef::new(uuid);
        r.extra = self.project_extra().into();
        r
    }

    /// Basic or Pro: as configured, or read once from the project.
    pub async fn project_type(&self) -> Result<ProjectType> {
        self.project_type
            .get_or_try_init(|| async {
                let request = Request::get(&["projects", &self.project_uuid]);
                let answer = self.client.send(CallKind::Idempotent, "codeship.get_project", request).await?;
                let project: ProjectEnvelope = answer.json("project")?;
                tracing::debug!(provider = "codeship", target = %self.name, project_type = %project.project.project_type, "discovered the project type");
                Ok(project.project.project_type)
            })
            .await
            .copied()
    }

    async fn get_build(&self, uuid: &str) -> Result<Build> {
        let request = Request::get(&["projects", &self.project_uuid, "builds", uuid]);
        let answer = self.client.send(CallKind::Idempotent, "codeship.get_build", request).await?;
        Ok(answer.json::<BuildEnvelope>("build")?.build)
    }

    async fn post_build_action(&self, uuid: &str, action: &str, kind: CallKind) -> Result<()> {
        let request = Request::post(&["projects", &self.project_uuid, "builds", uuid, action]);
        let request = if kind == CallKind::StartsBuild { request.write_ahead() } else { request };
        self.client.send(kind, &format!("codeship.{action}"), request).await.map(|_| ())
    }

    /// The build as the project's build list shows it, from a list read started after this
    /// call began: concurrent status reads of the project wait for one read instead of each
    /// sending a request, and none gets data older than its call. `None` when the build is not
    /// on the list's first page (or reading from the list is turned off).
    async fn listed_build(&self, uuid: &str) -> Result<Option<(Build, DateTime<Utc>)>> {
        if !self.status_from_list {
            return Ok(None);
        }
        let asked = tokio::time::Instant::now();
        let mut listed = self.listed.lock().await;
        if listed.as_ref().is_none_or(|l| l.started < asked) {
            let (observed_at, started) = (self.client.now(), tokio::time::Instant::now());
            let (list, _) = self.list_page(1).await?;
            *listed = Some(Listed { observed_at, started, builds: list.builds });
        }
        Ok(listed.as_ref().and_then(|l| l.builds.iter().find(|b| b.uuid == uuid).map(|b| (b.clone(), l.observed_at))))
    }

    fn run_status(&self, build: &Build, run: &ProviderRunRef) -> RunStatus {
        self.run_status_at(build, run, self.client.now())
    }

    fn run_status_at(&self, build: &Build, run: &ProviderRunRef, now: DateTime<Utc>) -> RunStatus {
        let (mut state, mut message) = run_state(&build.status, build.finished_at);
        if state.is_terminal() && self.shows_previous_run(build, run) {
            state = RunState::Queued;
            message =
                Some(format!("restart requested; Codeship still shows the previous run ({})", build.status.as_str()));
        }
        let mut status = RunStatus::new(state, build.status.as_str());
        status.observed_at = now;
        status.created_at = build.queued_at;
        status.started_at = build.allocated_at;
        status.finished_at = if state.is_terminal() { build.finished_at } else { None };
        status.message = message;
        status
    }

    /// After a Basic restart the build keeps showing its earlier final run until the new one
    /// starts; that earlier result belongs to the previous attempt.
    fn shows_previous_run(&self, build: &Build, run: &ProviderRunRef) -> bool {
        if run.attempt <= 1 || !run.extra.is_object() {
            return false;
        }
        let read = |key: &str| {
            run.extra
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc))
        };
        match (read(EXTRA_PREVIOUS_FINISHED_AT), read(EXTRA_RESTARTED_AT)) {
            (Some(previous), _) => build.finished_at.is_some_and(|f| f <= previous),
            (None, Some(restarted_at)) => build.finished_at.is_some_and(|f| f < restarted_at),
            (None, None) => false,
        }
    }

    fn check_run_id(run: &ProviderRunRef) -> Result<()> {
        check_uuid_shape(&run.id).map_err(|e| Error::InvalidRequest { message: format!("build id: {e}") })
    }

    async fn list_page(&self, page: u32) -> Result<(BuildList, Option<u32>)> {
        let request = Request::get(&["projects", &self.project_uuid, "builds"])
            .query("page", page.to_string())
            .query("per_page", MAX_PER_PAGE.to_string());
        let answer = self.client.send(CallKind::Idempotent, "codeship.list_builds", request).await?;
        let list: BuildList = answer.json("build list")?;
        // Follow `rel="next"` by its page number on our own base URL: the link's host is the
        // public API's even behind a proxy.
        let next = answer
            .headers
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .and_then(|link| url::Url::parse(&link).ok())
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "page").and_then(|(_, v)| v.parse::<u32>().ok()))
            .filter(|n| *n > page);
        Ok((list, next))
    }
}

#[async_trait]
impl CiTarget for CodeshipTarget {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Codeship
    }

    fn locator(&self) -> String {
        self.project_uuid.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            rerun: true,
            rerun_failed_only: false,
            approve: false,
            tag: false,
            pin_sha: true,
            parameters: false,
            trigger_returns_id: false,
            callbacks: false,
            // A Codeship build has no field for it.
            echoes_run_id: false,
        }
    }

    fn check_ref(&self, git_ref: &GitRef) -> std::result::Result<(), String> {
        if git_ref.tag.is_some() {
            return Err("codeship targets cannot build a tag; give a branch".into());
        }
        match git_ref.branch.as_deref().map(normalize_branch) {
            Some(Err(Error::InvalidRequest { message })) => Err(message),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip(self, spec), fields(provider = "codeship", target = %self.name, run_id = %spec.run_id))]
    async fn trigger(&self, spec: &TriggerSpec) -> Result<TriggerOutcome> {
        if !spec.parameters.is_empty() {
            return Err(Error::InvalidRequest { message: "Codeship builds take no parameters".into() });
        }
        if spec.git_ref.tag.is_some() {
            return Err(Error::Unsupported { operation: "build a tag" });
        }
        let branch = spec
            .git_ref
            .branch
            .as_deref()
            .ok_or_else(|| Error::InvalidRequest { message: "a Codeship build needs a branch".into() })?;
        let body = CreateBuild {
            git_ref: format!("heads/{}", normalize_branch(branch)?),
            commit_sha: spec.git_ref.sha.clone(),
        };
        let body = serde_json::to_value(&body).map_err(|e| Error::other(e.to_string()))?;
        let sent_at = self.client.now();
        let request = Request::post(&["projects", &self.project_uuid, "builds"]).json(body).write_ahead();
        self.client.send(CallKind::StartsBuild, "codeship.create_build", request).await?;
        tracing::debug!(provider = "codeship", target = %self.name, "build accepted (202, no id); correlate with find_recent");
        Ok(TriggerOutcome::AcceptedWithoutId { sent_at })
    }

    #[tracing::instrument(level = "debug", skip(self, run), fields(provider = "codeship", target = %self.name, run = %run.id, attempt = run.attempt))]
    async fn status(&self, run: &ProviderRunRef) -> Result<RunStatus> {
        Self::check_run_id(run)?;
        match self.listed_build(&run.id).await {
            Ok(Some((build, observed_at))) => return Ok(self.run_status_at(&build, run, observed_at)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(provider = "codeship", error = %e, "reading the build list failed; reading the build alone")
            }
        }
        let build = self.get_build(&run.id).await?;
        Ok(self.run_status(&build, run))
    }

    #[tracing::instrument(level = "debug", skip(self, run), fields(provider = "codeship", target = %self.name, run = %run.id))]
    async fn cancel(&self, run: &ProviderRunRef) -> Result<()> {
        Self::check_run_id(run)?;
        match self.post_build_action(&run.id, "stop", CallKind::Idempotent).await {
            Ok(()) => Ok(()),
            // Stopping a finished build is undocumented; a refusal with `errors` leaves the
            // outcome to the next status read, like an accepted stop.
            Err(Error::InvalidRequest { message }) => {
                tracing::info!(provider = "codeship", target = %self.name, %message, "Codeship refused the stop; the build has probably finished");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(level = "debug", skip(self, run), fields(provider = "codeship", target = %self.name, run = %run.id, attempt = run.attempt))]
    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> Result<TriggerOutcome> {
        if options.failed_only {
            return Err(Error::Unsupported { operation: "rerun only the failed parts" });
        }
        Self::check_run_id(run)?;
        let project_type = self.project_type().await?;
        let build = self.get_build(&run.id).await?;
        let (state, _) = run_state(&build.status, build.finished_at);
        if !state.is_terminal() {
            // Codeship ignores a restart of an unfinished build while answering 202.
            return Err(Error::Conflict {
                message: format!("build {} is still {}; Codeship restarts only finished builds", run.id, build.status),
            });
        }
        let sent_at = self.client.now();
        self.post_build_action(&run.id, "restart", CallKind::StartsBuild).await?;
        match project_type {
            ProjectType::Pro => Ok(TriggerOutcome::AcceptedWithoutId { sent_at }),
            ProjectType::Basic => {
                let mut next = ProviderRunRef::new(run.id.clone());
                next.number = run.number;
                next.url = run.url.clone();
                next.attempt = run.attempt.saturating_add(1);
                let mut extra = self.project_extra();
                extra.insert(EXTRA_RESTARTED_AT.into(), sent_at.to_rfc3339().into());
                if let Some(f) = build.finished_at {
                    extra.insert(EXTRA_PREVIOUS_FINISHED_AT.into(), f.to_rfc3339().into());
                }
                next.extra = extra.into();
                Ok(TriggerOutcome::Started(next))
            }
        }
    }

    async fn approve(&self, _run: &ProviderRunRef, _decision: Decision) -> Result<()> {
        Err(Error::Unsupported { operation: "approve" })
    }

    #[tracing::instrument(level = "debug", skip(self, query), fields(provider = "codeship", target = %self.name))]
    async fn find_recent(&self, query: &RecentQuery) -> Result<Vec<RunCandidate>> {
        if query.tag.is_some() {
            return Ok(Vec::new());
        }
        let branch = query.branch.as_deref().map(normalize_branch).transpose()?;
        let sha = query.sha.as_deref().map(str::to_ascii_lowercase);
        let since = query.since - cigw_core::time::span(self.client.config().clock_skew);
        let now = self.client.now();
        let mut out = Vec::new();
        let mut page = 1;
        for _ in 0..self.client.config().find_recent_max_pages {
            let (list, next) = self.list_page(page).await?;
            let mut any_recent = false;
            for build in list.builds {
                let created = created_at(&build, now);
                if created < since {
                    continue;
                }
                any_recent = true;
                let build_branch = build.branch_name();
                if branch.as_ref().is_some_and(|b| build_branch.as_deref() != Some(b.as_str())) {
                    continue;
                }
                if sha.as_ref().is_some_and(|s| {
                    !build.commit_sha.as_deref().is_some_and(|c| c.to_ascii_lowercase().starts_with(s.as_str()))
                }) {
                    continue;
                }
                out.push(RunCandidate {
                    run_ref: self.run_ref(build.uuid.clone()),
                    branch: build_branch,
                    tag: None,
                    sha: build.commit_sha.clone(),
                    created_at: created,
                    correlation_id: None,
                });
            }
            // Codeship lists newest first: a page with nothing recent ends the search.
            match next {
                Some(n) if any_recent => page = n,
                _ => break,
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_normalized() {
        assert_eq!(normalize_branch("main").unwrap(), "main");
        assert_eq!(normalize_branch("refs/heads/feature/x").unwrap(), "feature/x");
        assert_eq!(normalize_branch("heads/dev").unwrap(), "dev");
        assert_eq!(normalize_branch(" refs/release ").unwrap(), "release");
        for empty in ["", "  ", "refs/heads/", "heads/"] {
            assert!(matches!(normalize_branch(empty), Err(Error::InvalidRequest { .. })), "{empty:?}");
        }
    }
}
