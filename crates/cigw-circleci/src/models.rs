//! CircleCI API v2 JSON, read leniently: nullable and optional fields are `Option`, and status
//! strings CircleCI may add later land in `Unknown(String)`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

macro_rules! lenient_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this adapter does not know.
            Unknown(String),
        }

        impl $name {
            /// The string CircleCI uses.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(s) => s,
                }
            }

            /// Parse CircleCI's string; unknown values are kept.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&String::deserialize(d)?))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

lenient_enum!(
    /// A pipeline's `state`: config processing, not the build result.
    PipelineState {
        /// Config processed; workflows follow.
        Created = "created",
        /// Config processing failed.
        Errored = "errored",
        /// Dynamic config: waiting for the setup workflow.
        SetupPending = "setup-pending",
        /// Dynamic config: the setup workflow runs.
        Setup = "setup",
        /// Config being processed.
        Pending = "pending",
    }
);

lenient_enum!(
    /// A workflow's `status` (the spec's enum plus the documented `queued`).
    WorkflowStatus {
        /// Finished successfully.
        Success = "success",
        /// Jobs are running.
        Running = "running",
        /// Never ran.
        NotRun = "not_run",
        /// Finished with a failed job.
        Failed = "failed",
        /// Could not run.
        Error = "error",
        /// A job failed, others still run.
        Failing = "failing",
        /// Waiting for an approval.
        OnHold = "on_hold",
        /// Cancelled.
        Canceled = "canceled",
        /// The actor may not run it (restricted contexts).
        Unauthorized = "unauthorized",
        /// Waiting in a serial group (documented, missing from the spec's enum).
        Queued = "queued",
    }
);

impl WorkflowStatus {
    /// Whether the workflow will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Error | Self::Canceled | Self::Unauthorized | Self::NotRun)
    }
}

lenient_enum!(
    /// A job's `type`.
    JobType {
        /// A build job.
        Build = "build",
        /// An approval (hold) job.
        Approval = "approval",
    }
);

/// `{"message": …}` answers (202 Accepted, 200 of `/pipeline/run`).
#[derive(Debug, Clone, Deserialize)]
pub struct MessageResponse {
    /// The text.
    #[serde(default)]
    pub message: String,
}

/// The 201 answer to a trigger.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineCreation {
    /// Pipeline UUID.
    pub id: String,
    /// Config-processing state at creation.
    pub state: Option<PipelineState>,
    /// Per-project number.
    pub number: Option<u64>,
    /// Creation time.
    pub created_at: Option<DateTime<Utc>>,
}

/// One entry of a pipeline's `errors[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineError {
    /// `config`, `config-fetch`, `permission`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

/// A pipeline's `vcs` block.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PipelineVcs {
    /// Branch, when a branch was built.
    pub branch: Option<String>,
    /// Tag, when a tag was built.
    pub tag: Option<String>,
    /// The commit built.
    pub revision: Option<String>,
}

/// A pipeline (`GET /pipeline/{id}`, list items).
#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    /// UUID.
    pub id: String,
    /// Per-project number.
    pub number: Option<u64>,
    /// Config-processing state.
    pub state: PipelineState,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Config errors.
    #[serde(default)]
    pub errors: Vec<PipelineError>,
    /// What was built.
    pub vcs: Option<PipelineVcs>,
    /// The trigger's parameters (open map).
    #[serde(default)]
    pub trigger_parameters: Option<BTreeMap<String, serde_json::Value>>,
}

/// A workflow.
#[derive(Debug, Clone, Deserialize)]
pub struct Workflow {
    /// UUID (a rerun creates a new one).
    pub id: String,
    /// Name from the config; shared by a workflow and its reruns.
    pub name: String,
    /// Status.
    pub status: WorkflowStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// End time.
    pub stopped_at: Option<DateTime<Utc>>,
    /// `setup` for the setup workflow of dynamic config.
    pub tag: Option<String>,
}

impl Workflow {
    /// The setup workflow of a dynamic-config pipeline.
    pub fn is_setup(&self) -> bool {
        self.tag.as_deref() == Some("setup")
    }
}

/// A workflow's job.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `build` or `approval`.
    #[serde(rename = "type")]
    pub kind: JobType,
    /// Status string (the spec's enum is long and drifts, so it stays a string).
    pub status: String,
    /// Set on approval jobs.
    pub approval_request_id: Option<String>,
}

/// One page of a paginated list.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Token of the next page; absent or null at the end.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The 202 answer to a workflow rerun.
#[derive(Debug, Clone, Deserialize)]
pub struct RerunResponse {
    /// The new workflow's id.
    pub workflow_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_are_kept() {
        let w: WorkflowStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(w, WorkflowStatus::Unknown("paused".into()));
        assert_eq!(w.to_string(), "paused");
        assert!(!w.is_terminal());
        let q: WorkflowStatus = serde_json::from_str("\"queued\"").unwrap();
        assert_eq!(q, WorkflowStatus::Queued);
    }

    #[test]
    fn pipeline_reads_with_optional_fields_missing() {
        let p: Pipeline = serde_json::from_str(
            r#"{"id":"p1","number":3,"state":"created","created_at":"2024-01-01T00:00:00Z","errors":[],
                "project_slug":"gh/o/r","trigger":{"type":"api","received_at":"2024-01-01T00:00:00Z","actor":{"login":"x","avatar_url":null}}}"#,
        )
        .unwrap();
        assert_eq!(p.state, PipelineState::Created);
        assert!(p.vcs.is_none());
        assert!(p.trigger_parameters.is_none());
    }
}
