//! The CircleCI API v2 adapter of cigw (DESIGN.md §2): a project's pipelines are triggered
//! (classic endpoint, or `/pipeline/run` with a pipeline definition), followed through their
//! workflows, cancelled, rerun and approved; `workflow-completed` webhooks are verified.

pub mod client;
pub mod config;
pub mod error;
pub mod factory;
pub mod models;
pub mod slug;
pub mod status;
pub mod target;
pub mod webhook;

pub use client::CircleciClient;
pub use config::{AccountConfig, TargetConfig};
pub use factory::{CircleciAccount, CircleciFactory};
pub use slug::ProjectSlug;
pub use target::CircleciTarget;
