//! Codeship API v2 JSON, deserialized leniently: every timestamp is optional, unknown fields are
//! ignored and status strings we do not know are kept as `Unknown(..)`.
//!
//! The field sets follow the official Go client's fixtures (`tests/resources/codeship-go/`) and a
//! live capture (`tests/resources/third-party/`), which the tests parse with these types.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `POST /v2/auth`: a token and the organizations of the user, or (even on a 2xx, for accounts
/// with two-factor authentication) a singular `error`.
#[derive(Deserialize)]
pub struct AuthResponse {
    /// The bearer token.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    /// When the token expires, in Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The organizations the user belongs to.
    #[serde(default)]
    pub organizations: Vec<Organization>,
    /// Why the exchange was refused (`Unauthorized`, the two-factor message).
    #[serde(default)]
    pub error: Option<String>,
}

impl fmt::Debug for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResponse")
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("organizations", &self.organizations)
            .field("error", &self.error)
            .finish()
    }
}

/// One organization in the auth answer; its uuid scopes every other path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Organization {
    /// The organization uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// What the token may do in it (`build.read`, `build.write`, `project.read`, `project.write`).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The error body of every endpoint except `/auth`: always an array.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorsBody {
    /// The messages.
    pub errors: Vec<String>,
}

/// The error body of `/auth`: a single string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AuthErrorBody {
    /// The message.
    pub error: String,
}

/// A build status string. Codeship publishes no enum, so unknown values are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    /// Created, not yet queued.
    Initiated,
    /// Waiting for a concurrency slot.
    Waiting,
    /// Running.
    Testing,
    /// Passed.
    Success,
    /// Failed.
    Error,
    /// Failed (seen only in the docs' list example).
    Failed,
    /// Stopped by a user or the API.
    Stopped,
    /// A failure on Codeship's side.
    InfrastructureFailure,
    /// Not run (e.g. a branch filter).
    Ignored,
    /// Not run (e.g. plan limits).
    Blocked,
    /// A status this adapter does not know.
    Unknown(String),
}

impl BuildStatus {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Initiated => "initiated",
            Self::Waiting => "waiting",
            Self::Testing => "testing",
            Self::Success => "success",
            Self::Error => "error",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::InfrastructureFailure => "infrastructure_failure",
            Self::Ignored => "ignored",
            Self::Blocked => "blocked",
            Self::Unknown(s) => s,
        }
    }

    /// Parse a wire string; never fails.
    pub fn parse(s: &str) -> Self {
        match s {
            "initiated" => Self::Initiated,
            "waiting" => Self::Waiting,
            "testing" => Self::Testing,
            "success" => Self::Success,
            "error" => Self::Error,
            "failed" => Self::Failed,
            "stopped" => Self::Stopped,
            "infrastructure_failure" => Self::InfrastructureFailure,
            "ignored" => Self::Ignored,
            "blocked" => Self::Blocked,
            other => Self::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BuildStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

impl Serialize for BuildStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Links of a build: `pipelines` on Basic projects, `services` and `steps` on Pro projects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct BuildLinks {
    /// Basic: the build's pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<String>,
    /// Pro: the build's services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    /// Pro: the build's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<String>,
}

/// One build (`{"build": …}`, or an element of `{"builds": […]}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Build {
    /// The build uuid (not validated: one official fixture has a non-hex digit).
    pub uuid: String,
    /// The project uuid.
    #[serde(default)]
    pub project_uuid: Option<String>,
    /// The project's numeric id.
    #[serde(default)]
    pub project_id: Option<i64>,
    /// The organization uuid.
    #[serde(default)]
    pub organization_uuid: Option<String>,
    /// `heads/<branch>`.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// The branch name.
    #[serde(default)]
    pub branch: Option<String>,
    /// The built commit.
    #[serde(default)]
    pub commit_sha: Option<String>,
    /// Its message.
    #[serde(default)]
    pub commit_message: Option<String>,
    /// Who started it.
    #[serde(default)]
    pub username: Option<String>,
    /// The status.
    pub status: BuildStatus,
    /// When it was queued.
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
    /// When a machine was allocated (always null on Basic).
    #[serde(default)]
    pub allocated_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Detail links.
    #[serde(default)]
    pub links: BuildLinks,
    /// The pull request, when there is one (undocumented; seen in a live capture).
    #[serde(default)]
    pub pr_number: Option<i64>,
}

impl Build {
    /// The branch: `branch`, or `ref` without its `heads/` prefix.
    pub fn branch_name(&self) -> Option<String> {
        self.branch
            .clone()
            .filter(|b| !b.is_empty())
            .or_else(|| self.git_ref.as_deref().and_then(|r| r.strip_prefix("heads/")).map(str::to_string))
    }
}

/// `GET …/builds/{uuid}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BuildEnvelope {
    /// The build.
    pub build: Build,
}

/// `GET …/builds`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BuildList {
    /// The builds of this page.
    pub builds: Vec<Build>,
    /// How many builds there are in all.
    #[serde(default)]
    pub total: Option<u64>,
    /// The page size.
    #[serde(default)]
    pub per_page: Option<u64>,
    /// This page's number (from 1).
    #[serde(default)]
    pub page: Option<u64>,
}

/// The request body of `POST …/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CreateBuild {
    /// `heads/<branch>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit to build; without it Codeship takes the branch head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
}

/// `basic` or `pro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectType {
    /// Codeship Basic: a restart runs the same build uuid again.
    Basic,
    /// Codeship Pro: a restart creates a new build.
    Pro,
}

impl ProjectType {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Pro => "pro",
        }
    }
}

impl fmt::Display for ProjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project, as far as the adapter reads it (the fixture tests hold the full shape).
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    /// The project uuid.
    pub uuid: String,
    /// Basic or Pro.
    #[serde(rename = "type")]
    pub project_type: ProjectType,
}

/// `GET /organizations/{org}/projects/{uuid}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectEnvelope {
    /// The project.
    pub project: Project,
}

/// The URL of the `rel="next"` page in a `Link` header, if any.
pub fn next_link(link_header: &str) -> Option<String> {
    link_header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|v| v.trim_matches('"').split_whitespace().any(|r| r == "next"))
        });
        is_next.then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_strings_are_kept() {
        let s: BuildStatus = serde_json::from_str("\"paused_for_lunch\"").unwrap();
        assert_eq!(s, BuildStatus::Unknown("paused_for_lunch".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"paused_for_lunch\"");
        for known in ["initiated", "waiting", "testing", "success", "error", "failed", "stopped", "ignored", "blocked"]
        {
            assert_eq!(BuildStatus::parse(known).as_str(), known);
            assert!(!matches!(BuildStatus::parse(known), BuildStatus::Unknown(_)));
        }
        assert_eq!(BuildStatus::parse("infrastructure_failure"), BuildStatus::InfrastructureFailure);
    }

    #[test]
    fn link_header_next_is_found() {
        let h = r#"<https://api.codeship.com/v2/organizations/o/projects/p/builds?page=3&per_page=50>; rel="next", <https://api.codeship.com/v2/organizations/o/projects/p/builds?page=9&per_page=50>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.codeship.com/v2/organizations/o/projects/p/builds?page=3&per_page=50")
        );
        assert_eq!(next_link(r#"<https://x/builds?page=1>; rel="first", <https://x/builds?page=1>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("<https://x/a>; rel=next").as_deref(), Some("https://x/a"));
    }

    #[test]
    fn branch_falls_back_to_the_ref() {
        let b: Build = serde_json::from_value(serde_json::json!({
            "uuid": "u", "status": "testing", "ref": "heads/feature/x", "branch": null
        }))
        .unwrap();
        assert_eq!(b.branch_name().as_deref(), Some("feature/x"));
        assert_eq!(b.links, BuildLinks::default());
        assert!(b.queued_at.is_none());
    }

    #[test]
    fn auth_debug_hides_the_token() {
        let a: AuthResponse =
            serde_json::from_str(r#"{"access_token":"sekrit-token","expires_at":1,"organizations":[]}"#).unwrap();
        assert!(!format!("{a:?}").contains("sekrit"));
    }
}
