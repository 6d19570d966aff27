//! The Codeship API types the adapter does not read, kept in full so the fixture tests see every
//! documented field (projects, pipelines, services, steps).

// Fields are declared so that no fixture field is ignored, not to be read.
#![allow(dead_code, unreachable_pub)]

use std::fmt;

use chrono::{DateTime, Utc};
use cigw_codeship::ProjectType;
use cigw_codeship::models::BuildStatus;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// A command pipeline of a Basic project (test or deployment).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TestPipeline {
    /// Its id, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Its name.
    pub name: String,
    /// Its shell commands.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// A project with every documented field.
#[derive(Clone, Deserialize)]
pub struct Project {
    /// The project uuid.
    pub uuid: String,
    /// The numeric id.
    #[serde(default)]
    pub id: Option<i64>,
    /// Basic or Pro.
    #[serde(rename = "type")]
    pub project_type: ProjectType,
    /// The repository's full name.
    #[serde(default)]
    pub name: Option<String>,
    /// The organization uuid.
    #[serde(default)]
    pub organization_uuid: Option<String>,
    /// The repository URL.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// `github`, `bitbucket`, `gitlab`.
    #[serde(default)]
    pub repository_provider: Option<String>,
    /// The user Codeship acts as.
    #[serde(default)]
    pub authentication_user: Option<String>,
    /// Pro only: the key of encrypted files (a secret).
    #[serde(default)]
    pub aes_key: Option<SecretString>,
    /// The deploy key's public half.
    #[serde(default)]
    pub ssh_key: Option<String>,
    /// Teams with access.
    #[serde(default)]
    pub team_ids: Vec<i64>,
    /// Notification rules, kept as JSON.
    #[serde(default)]
    pub notification_rules: Vec<serde_json::Value>,
    /// Basic only: setup commands.
    #[serde(default)]
    pub setup_commands: Option<Vec<String>>,
    /// Basic only: environment variables, kept as JSON.
    #[serde(default)]
    pub environment_variables: Option<Vec<serde_json::Value>>,
    /// Basic only: test pipelines.
    #[serde(default)]
    pub test_pipelines: Option<Vec<TestPipeline>>,
    /// Basic only: deployment pipelines, kept as JSON.
    #[serde(default)]
    pub deployment_pipelines: Option<Vec<serde_json::Value>>,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Project")
            .field("uuid", &self.uuid)
            .field("type", &self.project_type)
            .field("name", &self.name)
            .field("organization_uuid", &self.organization_uuid)
            .field("aes_key", &self.aes_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// `GET /organizations/{org}/projects/{uuid}` (and create / update answers).
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectEnvelope {
    /// The project.
    pub project: Project,
}

/// `GET /organizations/{org}/projects`: one page.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectList {
    /// The projects of this page.
    pub projects: Vec<Project>,
    /// How many there are in all.
    #[serde(default)]
    pub total: Option<u64>,
    /// The page size.
    #[serde(default)]
    pub per_page: Option<u64>,
    /// This page's number.
    #[serde(default)]
    pub page: Option<u64>,
}

/// The request body of `POST /organizations/{org}/projects` (the shape the official client's
/// fixtures send; cigw never creates projects, its simulator does).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct NewProject {
    /// The repository to build.
    pub repository_url: String,
    /// Basic or Pro.
    #[serde(rename = "type")]
    pub project_type: ProjectType,
    /// Basic only: test pipelines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_pipelines: Vec<TestPipeline>,
}

/// One pipeline run of a Basic build (`GET …/builds/{uuid}/pipelines`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pipeline {
    /// The pipeline run uuid.
    pub uuid: String,
    /// The build it belongs to.
    #[serde(default)]
    pub build_uuid: Option<String>,
    /// `build` or a deployment.
    #[serde(default, rename = "type")]
    pub pipeline_type: Option<String>,
    /// Its status (same vocabulary as builds).
    pub status: BuildStatus,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Machine metrics, all as strings.
    #[serde(default)]
    pub metrics: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One service of a Pro build (`GET …/builds/{uuid}/services`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Service {
    /// The service uuid.
    pub uuid: String,
    /// The build it belongs to.
    #[serde(default)]
    pub build_uuid: Option<String>,
    /// Its name.
    pub name: String,
    /// Its status (`finished`, …).
    pub status: String,
    /// When its image pull started.
    #[serde(default)]
    pub pulling_at: Option<DateTime<Utc>>,
    /// When its image build started.
    #[serde(default)]
    pub building_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// One step of a Pro build (`GET …/builds/{uuid}/steps`); steps nest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Step {
    /// The step uuid.
    pub uuid: String,
    /// The build it belongs to.
    #[serde(default)]
    pub build_uuid: Option<String>,
    /// The service it runs in.
    #[serde(default)]
    pub service_uuid: Option<String>,
    /// Its name.
    pub name: String,
    /// `run`, `push`, `serial`, `parallel`, …
    #[serde(default, rename = "type")]
    pub step_type: Option<String>,
    /// Its status (same vocabulary as builds).
    pub status: BuildStatus,
    /// The command it runs.
    #[serde(default)]
    pub command: Option<String>,
    /// The image it pushes, for push steps.
    #[serde(default)]
    pub image_name: Option<String>,
    /// The registry it pushes to.
    #[serde(default)]
    pub registry: Option<String>,
    /// The tag filter.
    #[serde(default)]
    pub tag: Option<String>,
    /// When it started building.
    #[serde(default)]
    pub building_at: Option<DateTime<Utc>>,
    /// When it started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Nested steps.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// `{"pipelines": […]}` page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PipelineList {
    /// The items.
    pub pipelines: Vec<Pipeline>,
    /// Total count.
    #[serde(default)]
    pub total: Option<u64>,
    /// Page size.
    #[serde(default)]
    pub per_page: Option<u64>,
    /// Page number.
    #[serde(default)]
    pub page: Option<u64>,
}

/// `{"services": […]}` page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ServiceList {
    /// The items.
    pub services: Vec<Service>,
    /// Total count.
    #[serde(default)]
    pub total: Option<u64>,
    /// Page size.
    #[serde(default)]
    pub per_page: Option<u64>,
    /// Page number.
    #[serde(default)]
    pub page: Option<u64>,
}

/// `{"steps": […]}` page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StepList {
    /// The items.
    pub steps: Vec<Step>,
    /// Total count.
    #[serde(default)]
    pub total: Option<u64>,
    /// Page size.
    #[serde(default)]
    pub per_page: Option<u64>,
    /// Page number.
    #[serde(default)]
    pub page: Option<u64>,
}
