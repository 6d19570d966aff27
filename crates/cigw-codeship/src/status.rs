//! The Codeship build status → `RunState` table of DESIGN.md §2.

use chrono::{DateTime, Utc};
use cigw_core::RunState;

use crate::models::BuildStatus;

/// Map a build status (and whether the build has finished) to a run state, with a message where
/// the mapping needs explaining.
///
/// An unknown status counts as running while `finished_at` is null and as `error` once it is set.
pub fn run_state(status: &BuildStatus, finished_at: Option<DateTime<Utc>>) -> (RunState, Option<String>) {
    match status {
        BuildStatus::Initiated | BuildStatus::Waiting => (RunState::Queued, None),
        BuildStatus::Testing => (RunState::Running, None),
        BuildStatus::Success => (RunState::Succeeded, None),
        BuildStatus::Error | BuildStatus::Failed => (RunState::Failed, None),
        BuildStatus::Stopped => (RunState::Canceled, None),
        BuildStatus::InfrastructureFailure => {
            (RunState::Error, Some("Codeship reported an infrastructure failure".to_string()))
        }
        BuildStatus::Ignored => (RunState::Skipped, Some("Codeship ignored the build".to_string())),
        BuildStatus::Blocked => (RunState::Skipped, Some("Codeship blocked the build".to_string())),
        BuildStatus::Unknown(s) => match finished_at {
            Some(_) => (RunState::Error, Some(format!("unknown final status {s}"))),
            None => {
                tracing::warn!(provider = "codeship", status = %s, "unknown Codeship build status; treating it as running");
                (RunState::Running, Some(format!("unknown status {s}")))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &str) -> RunState {
        run_state(&BuildStatus::parse(s), None).0
    }

    #[test]
    fn initiated_is_queued() {
        assert_eq!(state("initiated"), RunState::Queued);
    }

    #[test]
    fn waiting_is_queued() {
        assert_eq!(state("waiting"), RunState::Queued);
    }

    #[test]
    fn testing_is_running() {
        assert_eq!(state("testing"), RunState::Running);
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
    fn failed_is_failed() {
        assert_eq!(state("failed"), RunState::Failed);
    }

    #[test]
    fn stopped_is_canceled() {
        assert_eq!(state("stopped"), RunState::Canceled);
    }

    #[test]
    fn infrastructure_failure_is_error() {
        let (s, m) = run_state(&BuildStatus::InfrastructureFailure, Some(Utc::now()));
        assert_eq!(s, RunState::Error);
        assert_eq!(m.as_deref(), Some("Codeship reported an infrastructure failure"));
    }

    #[test]
    fn ignored_is_skipped() {
        assert_eq!(state("ignored"), RunState::Skipped);
    }

    #[test]
    fn blocked_is_skipped() {
        assert_eq!(state("blocked"), RunState::Skipped);
    }

    #[test]
    fn unknown_unfinished_is_running() {
        let (s, m) = run_state(&BuildStatus::parse("rebooting"), None);
        assert_eq!(s, RunState::Running);
        assert_eq!(m.as_deref(), Some("unknown status rebooting"));
    }

    #[test]
    fn unknown_finished_is_error() {
        let (s, m) = run_state(&BuildStatus::parse("rebooting"), Some(Utc::now()));
        assert_eq!(s, RunState::Error);
        assert_eq!(m.as_deref(), Some("unknown final status rebooting"));
    }
}
