//! The Codefresh build status → `RunState` table of DESIGN.md §2.

use cigw_core::RunState;

use crate::models::BuildStatus;

/// Map one build status. Unknown strings count as `running` (the caller logs a warning), so a
/// new provider status never ends a run early.
pub fn run_state(status: &BuildStatus) -> RunState {
    match status {
        BuildStatus::Pending | BuildStatus::Delayed => RunState::Queued,
        BuildStatus::Elected | BuildStatus::Running => RunState::Running,
        BuildStatus::PendingApproval => RunState::Blocked,
        BuildStatus::Terminating => RunState::Canceling,
        BuildStatus::Success => RunState::Succeeded,
        BuildStatus::Error => RunState::Failed,
        BuildStatus::Terminated => RunState::Canceled,
        BuildStatus::Unknown(_) => RunState::Running,
    }
}

/// A human explanation for states whose status string alone says little.
pub fn message(status: &BuildStatus, pending_license: bool) -> Option<String> {
    match status {
        BuildStatus::Pending if pending_license => {
            Some("waiting for a free build slot in the Codefresh account's licence".into())
        }
        BuildStatus::Delayed => Some("delayed: no free builders (Codefresh keeps delayed builds up to 7 days)".into()),
        BuildStatus::PendingApproval => Some("waiting at a Codefresh approval step".into()),
        BuildStatus::Error => Some("the Codefresh build failed".into()),
        BuildStatus::Terminated => Some(
            "terminated at Codefresh (by a cancel request, a user, a termination policy or a Codefresh limit)".into(),
        ),
        BuildStatus::Unknown(s) => Some(format!("unknown Codefresh status `{s}`, treated as running")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &str) -> RunState {
        run_state(&BuildStatus::from(s.to_string()))
    }

    #[test]
    fn pending_is_queued() {
        assert_eq!(state("pending"), RunState::Queued);
    }

    #[test]
    fn delayed_is_queued() {
        assert_eq!(state("delayed"), RunState::Queued);
    }

    #[test]
    fn elected_is_running() {
        assert_eq!(state("elected"), RunState::Running);
    }

    #[test]
    fn running_is_running() {
        assert_eq!(state("running"), RunState::Running);
    }

    #[test]
    fn pending_approval_is_blocked() {
        assert_eq!(state("pending-approval"), RunState::Blocked);
    }

    #[test]
    fn terminating_is_canceling() {
        assert_eq!(state("terminating"), RunState::Canceling);
    }

    #[test]
    fn success_is_succeeded() {
        assert_eq!(state("success"), RunState::Succeeded);
    }

    #[test]
    fn error_is_failed() {
        assert_eq!(state("error"), RunState::Failed);
    }

    #[test]
    fn terminated_is_canceled_with_a_detail() {
        assert_eq!(state("terminated"), RunState::Canceled);
        assert!(message(&BuildStatus::Terminated, false).unwrap().contains("termination policy"));
    }

    #[test]
    fn unknown_is_running_and_says_so() {
        assert_eq!(state("denied"), RunState::Running);
        assert_eq!(
            message(&BuildStatus::Unknown("denied".into()), false).as_deref(),
            Some("unknown Codefresh status `denied`, treated as running")
        );
    }
}
