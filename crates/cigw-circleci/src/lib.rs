//! The CircleCI API v2 adapter of cigw (DESIGN.md §2): a project's pipelines are triggered
//! (classic endpoint, or `/pipeline/run` with a pipeline definition), followed through their
//! workflows, cancelled, rerun and approved; `workflow-completed` webhooks are verified. Pipelines
//! of a target removed from the configuration are still followed by id ([`CircleciFollower`]).

pub mod client;
pub mod config;
pub mod error;
pub mod factory;
pub mod follow;
pub mod models;
pub mod slug;
pub mod status;
pub mod target;
pub mod webhook;

pub use client::Client;
pub use config::{AccountConfig, TargetConfig};
pub use error::parse_error;
pub use factory::{CircleciAccount, CircleciFactory};
pub use follow::CircleciFollower;
pub use status::run_state;
pub use target::CircleciTarget;
// CircleCI's own:
pub use slug::ProjectSlug;
