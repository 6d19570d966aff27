//! Codefresh JSON as the API sends it (providers/codefresh.md §3), read leniently: every field
//! the notes do not guarantee is optional, and unknown status strings are kept, not refused.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// A build (workflow) status string (providers/codefresh.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStatus {
    /// Queued, or executions are paused for the account.
    Pending,
    /// No free builders; kept up to 7 days.
    Delayed,
    /// Picked by a runtime and initializing.
    Elected,
    /// Executing.
    Running,
    /// Paused at an approval step.
    PendingApproval,
    /// Gracefully terminating after a terminate request.
    Terminating,
    /// Finished successfully.
    Success,
    /// Failed because of errors.
    Error,
    /// Terminated manually or automatically.
    Terminated,
    /// A status this adapter does not know.
    Unknown(String),
}

impl BuildStatus {
    /// The string Codefresh uses.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Delayed => "delayed",
            Self::Elected => "elected",
            Self::Running => "running",
            Self::PendingApproval => "pending-approval",
            Self::Terminating => "terminating",
            Self::Success => "success",
            Self::Error => "error",
            Self::Terminated => "terminated",
            Self::Unknown(s) => s,
        }
    }

    /// `success`, `error` and `terminated` end a build (the CLI's `END_STATUSES`).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Success | Self::Error | Self::Terminated)
    }
}

impl From<String> for BuildStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "pending" => Self::Pending,
            "delayed" => Self::Delayed,
            "elected" => Self::Elected,
            "running" => Self::Running,
            "pending-approval" => Self::PendingApproval,
            "terminating" => Self::Terminating,
            "success" => Self::Success,
            "error" => Self::Error,
            "terminated" => Self::Terminated,
            _ => Self::Unknown(s),
        }
    }
}

impl<'de> Deserialize<'de> for BuildStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A timestamp that is absent, null or unparsable reads as `None` rather than failing the
/// whole build object.
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match raw {
        Some(serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(&s).ok().map(|t| t.with_timezone(&Utc)),
        _ => None,
    })
}

/// The build object of `GET /api/builds/{id}` and of `/api/workflow` list docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// The 24-hex build id.
    #[serde(default)]
    pub id: Option<String>,
    /// The Mongo-style `_id`, which some list documents carry instead of `id`.
    #[serde(default, rename = "_id")]
    pub object_id: Option<String>,
    /// The status string.
    pub status: BuildStatus,
    /// When the build was submitted.
    #[serde(default, deserialize_with = "lenient_time")]
    pub created: Option<DateTime<Utc>>,
    /// When execution started; absent while pending.
    #[serde(default, deserialize_with = "lenient_time")]
    pub started: Option<DateTime<Utc>>,
    /// When it finished; absent until final.
    #[serde(default, deserialize_with = "lenient_time")]
    pub finished: Option<DateTime<Utc>>,
    /// Last update.
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated: Option<DateTime<Utc>>,
    /// The progress id, needed to terminate the build (not the build id).
    #[serde(default)]
    pub progress: Option<String>,
    /// Full pipeline name, `project/pipeline`.
    #[serde(default)]
    pub pipeline_name: Option<String>,
    /// Pipeline id.
    #[serde(default)]
    pub service_id: Option<String>,
    /// Branch built.
    #[serde(default)]
    pub branch_name: Option<String>,
    /// Commit sha built.
    #[serde(default)]
    pub revision: Option<String>,
    /// Trigger type (`build`, `launch-image`, …).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Name of the pipeline trigger used.
    #[serde(default)]
    pub pipeline_trigger_name: Option<String>,
    /// Queued behind the account's concurrency licence.
    #[serde(default)]
    pub pending_license: Option<bool>,
    /// Build annotations, read only when a response carries them (not in the documented
    /// field table; `find_recent` falls back to the annotations API).
    #[serde(default)]
    pub annotations: Option<serde_json::Value>,
}

impl Build {
    /// The build id (`id`, else `_id`).
    pub fn build_id(&self) -> Option<&str> {
        self.id.as_deref().or(self.object_id.as_deref()).filter(|s| !s.is_empty())
    }

    /// The value of annotation `key` when the object carries annotations, as a map
    /// (`{key: value}`) or as a list of `{key, value}`.
    pub fn annotation(&self, key: &str) -> Option<String> {
        match self.annotations.as_ref()? {
            serde_json::Value::Object(map) => map.get(key).and_then(scalar_text),
            serde_json::Value::Array(items) => items
                .iter()
                .find(|a| a.get("key").and_then(|k| k.as_str()) == Some(key))
                .and_then(|a| a.get("value"))
                .and_then(scalar_text),
            _ => None,
        }
    }
}

/// A scalar JSON value as text (annotation values may be numbers).
pub(crate) fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `GET /api/workflow`: `{workflows: {docs, total}, pagination: {sessionId, nextPage}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowList {
    /// The page of builds.
    pub workflows: WorkflowDocs,
    /// The pagination session, where the server sends one.
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// The `workflows` part of a list page.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowDocs {
    /// Builds, newest first.
    #[serde(default)]
    pub docs: Vec<Build>,
    /// Matching builds in all pages.
    #[serde(default)]
    pub total: Option<u64>,
}

/// The `pagination` part of a list page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// Echoed back in `X-Pagination-Session-Id` on later pages.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The next page: a number, a numeric string, `true`, or null/false at the end.
    #[serde(default)]
    pub next_page: Option<serde_json::Value>,
}

impl Pagination {
    /// The next page number after `current`, if any.
    pub fn next_after(&self, current: u64) -> Option<u64> {
        match self.next_page.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64().filter(|&n| n > current),
            serde_json::Value::String(s) => s.parse::<u64>().ok().filter(|&n| n > current),
            serde_json::Value::Bool(true) => Some(current + 1),
            _ => None,
        }
    }
}

/// One entry of `GET /api/annotations`.
#[derive(Debug, Clone, Deserialize)]
pub struct Annotation {
    /// The annotation name.
    pub key: String,
    /// Its value (string or number).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// `GET /api/pipelines/{name}`, reduced to what the adapter needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    /// Name, id and project.
    pub metadata: PipelineMetadata,
}

/// `metadata` of a pipeline.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineMetadata {
    /// The pipeline id (what `/api/workflow?pipeline=` filters on).
    pub id: String,
    /// Its full name.
    #[serde(default)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_build_with_nulls_and_unknown_fields() {
        let b: Build = serde_json::from_str(include_str!("../tests/resources/build_running.json")).unwrap();
        assert_eq!(b.build_id(), Some("65f0c0ffee0123456789abcd"));
        assert_eq!(b.status, BuildStatus::Running);
        assert_eq!(b.progress.as_deref(), Some("65f0c0ffee0123456789abce"));
        assert!(b.started.is_some());
        assert!(b.finished.is_none());
        assert_eq!(b.branch_name.as_deref(), Some("main"));
    }

    #[test]
    fn unknown_statuses_are_kept() {
        assert_eq!(BuildStatus::from("denied".to_string()), BuildStatus::Unknown("denied".into()));
        assert_eq!(BuildStatus::from("denied".to_string()).as_str(), "denied");
        for s in ["pending", "delayed", "elected", "running", "pending-approval", "terminating", "success", "error"] {
            assert_eq!(BuildStatus::from(s.to_string()).as_str(), s);
        }
    }

    #[test]
    fn annotations_as_map_or_list() {
        let mut b: Build = serde_json::from_value(serde_json::json!({"id": "a", "status": "pending"})).unwrap();
        assert_eq!(b.annotation("cigw_run_id"), None);
        b.annotations = Some(serde_json::json!({"cigw_run_id": "run-1"}));
        assert_eq!(b.annotation("cigw_run_id").as_deref(), Some("run-1"));
        b.annotations = Some(serde_json::json!([{"key": "x", "value": 1}, {"key": "cigw_run_id", "value": "run-2"}]));
        assert_eq!(b.annotation("cigw_run_id").as_deref(), Some("run-2"));
        assert_eq!(b.annotation("x").as_deref(), Some("1"));
    }

    #[test]
    fn next_page_forms() {
        let p = |v: serde_json::Value| Pagination { session_id: None, next_page: Some(v) };
        assert_eq!(p(serde_json::json!(3)).next_after(2), Some(3));
        assert_eq!(p(serde_json::json!("3")).next_after(2), Some(3));
        assert_eq!(p(serde_json::json!(true)).next_after(2), Some(3));
        assert_eq!(p(serde_json::json!(null)).next_after(2), None);
        assert_eq!(p(serde_json::json!(false)).next_after(2), None);
        assert_eq!(p(serde_json::json!(2)).next_after(2), None, "a page that does not advance ends the walk");
    }
}
