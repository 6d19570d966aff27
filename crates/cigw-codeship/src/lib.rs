//! Codeship API v2 adapter for cigw.
//!
//! **Sunset provider:** CloudBees CodeShip reached end of life on 2026-01-31. This adapter is
//! built from the provider notes and the official Go client's fixtures, and tested against the
//! simulator in `cigw-sim`.
//!
//! What makes Codeship different: an email/password exchange (`POST /v2/auth`) for a short-lived
//! bearer token, triggers that answer 202 with no build id (the gateway correlates the build
//! with [`CiTarget::find_recent`](cigw_core::CiTarget::find_recent)), restarts that re-run the
//! same build on Basic projects, no parameters, and a budget of 60 requests per minute answered
//! with a bodiless 403 when exceeded.
//!
//! Every `ProviderRunRef` the adapter makes records its project uuid (and type, where known) in
//! `extra`, so a build can still be followed ([`CodeshipFollower`]) after its target is removed.

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
pub use factory::{CodeshipAccount, CodeshipFactory};
pub use follow::CodeshipFollower;
pub use status::run_state;
pub use target::CodeshipTarget;
// Codeship's own:
pub use client::Clock;
pub use models::ProjectType;
