//! The run state machine (DESIGN.md §2) as a pure function.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The normalized state of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Accepted and stored; not yet sent to the provider.
    Pending,
    /// Sent; the provider has not started it yet.
    Queued,
    /// Executing at the provider.
    Running,
    /// Waiting for an approval or on hold.
    Blocked,
    /// A cancel was requested and is not confirmed yet.
    Canceling,
    /// Finished successfully.
    Succeeded,
    /// Ran (or was evaluated) and failed, including invalid CI configuration.
    Failed,
    /// Cancelled before it finished.
    Canceled,
    /// The provider decided there was nothing to run.
    Skipped,
    /// Could not be run: refused, infrastructure failure, never appeared or timed out.
    Error,
}

impl RunState {
    /// Every state, in the order of the machine.
    pub const ALL: [RunState; 10] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Blocked,
        Self::Canceling,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::Skipped,
        Self::Error,
    ];

    /// The lower-case name used in the API, the store and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Canceling => "canceling",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Skipped => "skipped",
            Self::Error => "error",
        }
    }

    /// Terminal states are final for a run.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled | Self::Skipped | Self::Error)
    }

    /// How far along the machine a state is; moves only go to a higher rank, except the
    /// `running` ⇄ `blocked` pair which share one.
    fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Queued => 1,
            Self::Running | Self::Blocked => 2,
            Self::Canceling => 3,
            _ => 4,
        }
    }

    /// Apply an observed state to the current one: `Some(new)` when the run moves forward,
    /// `None` when the update is a repeat, a backward move, or the run is already terminal.
    pub fn apply(current: RunState, update: RunState) -> Option<RunState> {
        if current.is_terminal() || current == update {
            return None;
        }
        (update.rank() >= current.rank()).then_some(update)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown run state `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::{self, *};

    fn moves(from: RunState, to: RunState) -> bool {
        RunState::apply(from, to) == Some(to)
    }

    #[test]
    fn forward_moves_from_pending() {
        for to in [Queued, Running, Blocked, Canceling, Succeeded, Failed, Canceled, Skipped, Error] {
            assert!(moves(Pending, to), "pending -> {to}");
        }
    }

    #[test]
    fn queued_moves_forward_and_never_back() {
        for to in [Running, Blocked, Canceling, Succeeded, Failed, Canceled, Skipped, Error] {
            assert!(moves(Queued, to), "queued -> {to}");
        }
        assert!(!moves(Queued, Pending));
    }

    #[test]
    fn running_and_blocked_move_both_ways() {
        assert!(moves(Running, Blocked));
        assert!(moves(Blocked, Running));
        for from in [Running, Blocked] {
            assert!(!moves(from, Queued), "{from} -> queued");
            assert!(!moves(from, Pending), "{from} -> pending");
            assert!(moves(from, Canceling));
            assert!(moves(from, Succeeded));
            assert!(moves(from, Failed));
        }
    }

    #[test]
    fn canceling_only_ends() {
        for to in [Pending, Queued, Running, Blocked] {
            assert!(!moves(Canceling, to), "canceling -> {to}");
        }
        for to in [Canceled, Succeeded, Failed, Skipped, Error] {
            assert!(moves(Canceling, to), "canceling -> {to}");
        }
    }

    #[test]
    fn terminal_states_are_final() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert_eq!(RunState::apply(from, to), None, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn repeats_are_not_moves() {
        for s in RunState::ALL {
            assert_eq!(RunState::apply(s, s), None);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<RunState>().is_err());
    }
}
