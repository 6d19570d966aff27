//! The normalized model of cigw (DESIGN.md §2): what a target is, how a git ref and parameters are
//! validated, the run state machine, the `CiTarget` trait every provider adapter implements, the error
//! taxonomy with its retry rule, the layered configuration and telemetry set-up.
//!
//! This crate has no HTTP server and no database: adapters, the store and the gateway all build on it.

pub mod capabilities;
pub mod catalog;
pub mod chain;
pub mod ci_target;
pub mod condition;
pub mod config;
pub mod error;
pub mod follow;
pub mod git_ref;
pub mod hook;
pub mod notification;
pub mod params;
pub mod provider;
pub mod rate_limit;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod send_mark;
pub mod shared_budget;
pub mod signature;
pub mod state;
pub mod target;
pub mod telemetry;
pub mod template;
pub mod time;
#[cfg(feature = "transport")]
pub mod transport;

pub use capabilities::Capabilities;
pub use ci_target::CiTarget;
pub use error::{CallKind, Error, Result};
pub use git_ref::GitRef;
pub use params::{ParamType, ParamValue, ParameterSpec, Parameters};
pub use provider::ProviderKind;
pub use rate_limit::RateLimit;
pub use run::{
    Decision, ProviderRunRef, RecentQuery, RerunOptions, RunCandidate, RunStatus, StepDetail, TriggerOutcome,
    TriggerSpec,
};
pub use state::RunState;
pub use target::{ConcurrencyPolicy, TargetSpec};
