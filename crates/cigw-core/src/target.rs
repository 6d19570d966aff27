//! A configured target: one provider object that can be built.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::params::ParameterSpec;
use crate::provider::ProviderKind;

/// What to do with earlier runs of the same target and branch when a new one starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConcurrencyPolicy {
    /// Let them run; the new run waits its turn at the provider.
    #[default]
    Queue,
    /// Cancel earlier non-terminal runs of the same branch.
    CancelPrevious,
    /// End earlier runs of the same branch that were not sent yet (`pending`) as `skipped`,
    /// each linking the run that replaced it; runs already sent keep going.
    Supersede,
}

impl ConcurrencyPolicy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Queue => "queue",
            ConcurrencyPolicy::CancelPrevious => "cancel-previous",
            ConcurrencyPolicy::Supersede => "supersede",
        }
    }
}

/// The provider-independent part of a target's configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSpec {
    /// The target's name (its key under `[targets]`).
    pub name: String,
    /// The provider kind.
    pub provider: ProviderKind,
    /// The account (under `[providers.<kind>]`) it uses.
    pub account: String,
    /// Built when a request names neither branch nor tag.
    pub default_branch: String,
    /// Declared parameters.
    pub parameters: Vec<ParameterSpec>,
    /// Runs longer than this are cancelled and end in `error`.
    #[serde(with = "humantime_serde")]
    pub max_duration: Option<Duration>,
    /// What happens to earlier runs of the same branch.
    pub concurrency: ConcurrencyPolicy,
    /// How long a new run waits before it is sent; a newer run of the same branch arriving
    /// meanwhile supersedes it (as with [`ConcurrencyPolicy::Supersede`]).
    #[serde(with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// A human description.
    pub description: Option<String>,
}

impl TargetSpec {
    /// Whether a new run of this target supersedes the earlier unsent runs of its branch.
    pub fn supersedes(&self) -> bool {
        self.concurrency == ConcurrencyPolicy::Supersede || self.debounce.is_some()
    }
}
