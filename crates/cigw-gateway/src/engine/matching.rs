//! Which recent provider build belongs to a run: the gateway's side of correlation
//! (adapters only list candidates).

use chrono::{DateTime, Utc};
use cigw_core::{GitRef, RunCandidate};

/// How far a provider's creation time may lag behind ours (clock skew between hosts).
pub(crate) const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// The candidates that may be the build started for run `run_id` of `git_ref`, sent at
/// `sent_at`, best first.
///
/// Where the provider echoes correlation ids, only the candidate carrying `run_id` qualifies.
/// Otherwise candidates of the same ref (and sha, when pinned) created after the send qualify,
/// oldest first: of several runs of one ref sent in order, the earliest build belongs to the
/// earliest send. The caller skips candidates another run already owns.
pub(crate) fn rank_candidates(
    run_id: &str,
    git_ref: &GitRef,
    sent_at: DateTime<Utc>,
    mut candidates: Vec<RunCandidate>,
) -> Vec<RunCandidate> {
    if candidates.iter().any(|c| c.correlation_id.is_some()) {
        candidates.retain(|c| c.correlation_id.as_deref() == Some(run_id));
        return candidates;
    }
    candidates.retain(|c| {
        same(&c.branch, &git_ref.branch)
            && same(&c.tag, &git_ref.tag)
            && (git_ref.sha.is_none() || c.sha.as_deref().is_some_and(|s| sha_matches(s, git_ref.sha.as_deref())))
            && c.created_at >= sent_at - CLOCK_SKEW
    });
    candidates.sort_by_key(|c| c.created_at);
    candidates
}

fn same(candidate: &Option<String>, wanted: &Option<String>) -> bool {
    wanted.is_none() || candidate == wanted
}

/// A short sha matches the full one it abbreviates.
fn sha_matches(candidate: &str, wanted: Option<&str>) -> bool {
    let Some(w) = wanted else { return true };
    let (c, w) = (candidate.to_ascii_lowercase(), w.to_ascii_lowercase());
    c.starts_with(&w) || w.starts_with(&c)
}

#[cfg(test)]
mod tests {
    use cigw_core::ProviderRunRef;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn cand(id: &str, branch: &str, sha: Option<&str>, created: i64, corr: Option<&str>) -> RunCandidate {
        RunCandidate {
            run_ref: ProviderRunRef::new(id),
            branch: Some(branch.into()),
            tag: None,
            sha: sha.map(Into::into),
            created_at: at(created),
            correlation_id: corr.map(Into::into),
        }
    }

    fn ids(v: Vec<RunCandidate>) -> Vec<String> {
        v.into_iter().map(|c| c.run_ref.id).collect()
    }

    #[test]
    fn echoed_correlation_ids_decide_alone() {
        let got = rank_candidates(
            "run-1",
            &GitRef::branch("main"),
            at(0),
            vec![cand("a", "main", None, 5, Some("run-2")), cand("b", "main", None, 6, Some("run-1"))],
        );
        assert_eq!(ids(got), ["b"]);
        let none =
            rank_candidates("run-3", &GitRef::branch("main"), at(0), vec![cand("a", "main", None, 5, Some("x"))]);
        assert!(none.is_empty(), "never adopt another run's build");
    }

    #[test]
    fn without_echo_same_ref_after_the_send_oldest_first() {
        let got = rank_candidates(
            "run-1",
            &GitRef::branch("main"),
            at(100),
            vec![
                cand("late", "main", None, 130, None),
                cand("other-branch", "dev", None, 120, None),
                cand("early", "main", None, 110, None),
                cand("long-before", "main", None, 10, None),
                cand("skewed", "main", None, 50, None),
            ],
        );
        assert_eq!(ids(got), ["skewed", "early", "late"]);
    }

    #[test]
    fn a_pinned_sha_must_match_allowing_abbreviations() {
        let r = GitRef::branch("main").with_sha("abcdef1");
        let got = rank_candidates(
            "run-1",
            &r,
            at(0),
            vec![
                cand("full", "main", Some("abcdef1234567890abcdef1234567890abcdef12"), 5, None),
                cand("other", "main", Some("1234567"), 6, None),
                cand("unknown", "main", None, 7, None),
            ],
        );
        assert_eq!(ids(got), ["full"]);
    }
}
