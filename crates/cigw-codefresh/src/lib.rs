//! The Codefresh classic-pipelines adapter of cigw (DESIGN.md §2, providers/codefresh.md).
//!
//! - trigger: `POST /api/pipelines/run/{project%2Fpipeline}?reqId=<run id>` with branch, sha,
//!   variables (secret parameters encrypted) and the run id as the `cigw_run_id` annotation;
//!   the answer is the build id (`Started`). Legacy targets use `POST /api/builds/{serviceId}`.
//! - status: `GET /api/builds/{id}`, mapped by [`status::run_state`].
//! - cancel: read the build's `progress`, then `DELETE /api/progress/{progress}`.
//! - rerun: `GET /api/builds/rebuild/{id}` → a new build id.
//! - approve/deny: `GET /api/workflow/{id}/pending-approval/{approve|deny}`.
//! - find_recent: `GET /api/workflow` by pipeline id, branch and start date, paginated, each
//!   candidate with its `cigw_run_id` annotation when it has one.
//! - follow-only ([`CodefreshFollower`]): status and terminate a build by its id alone, for runs
//!   whose target was removed from the configuration.
//!
//! Configuration keys are listed in `docs/providers/codefresh.md`.

pub mod client;
pub mod config;
pub mod error;
pub mod factory;
pub mod follow;
pub mod models;
pub mod status;
pub mod target;

pub use client::Client;
pub use config::{AccountConfig, TargetConfig};
pub use error::parse_error;
pub use factory::{CodefreshAccount, CodefreshFactory};
pub use follow::CodefreshFollower;
pub use status::run_state;
pub use target::CodefreshTarget;
// Codefresh's own:
pub use config::{PipelineLocator, RunOptions};
pub use target::CAPABILITIES;
