//! Which recent provider build belongs to a run: the gateway's side of correlation
//! (adapters only list candidates).

use chrono::{DateTime, Utc};
use cigw_core::{GitRef, ProviderRunRef, RunCandidate};

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

/// A run accepted without an id, waiting for its build.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The run id.
    pub(crate) run_id: String,
    /// What it builds.
    pub(crate) git_ref: GitRef,
    /// When its trigger was sent.
    pub(crate) sent_at: DateTime<Utc>,
}

/// Match runs accepted without an id (in send order) with free provider builds (each with the
/// ref its owner would adopt), one to one.
///
/// Where the provider echoes correlation ids, each run takes the build carrying its id. Otherwise
/// the order is kept: the oldest waiting run takes the oldest free build of its ref queued after
/// its send, the next run the oldest of the rest, and so on; a run whose build is not listed yet
/// gets nothing this time.
pub(crate) fn assign(
    waiting: &[Waiting],
    mut free: Vec<(RunCandidate, ProviderRunRef)>,
) -> Vec<(String, ProviderRunRef)> {
    if free.iter().any(|(c, _)| c.correlation_id.is_some()) {
        return waiting
            .iter()
            .filter_map(|w| {
                let (_, r) = free.iter().find(|(c, _)| c.correlation_id.as_deref() == Some(w.run_id.as_str()))?;
                Some((w.run_id.clone(), r.clone()))
            })
            .collect();
    }
    // Providers list newest first; builds with the same creation time (Codeship shows none
    // until a build is queued) keep the provider's order.
    free.reverse();
    free.sort_by_key(|(c, _)| c.created_at);
    let mut taken = vec![false; free.len()];
    let mut out = Vec::new();
    for w in waiting {
        let found = free.iter().enumerate().position(|(i, (c, _))| {
            !taken[i]
                && same(&c.branch, &w.git_ref.branch)
                && same(&c.tag, &w.git_ref.tag)
                && (w.git_ref.sha.is_none()
                    || c.sha.as_deref().is_some_and(|s| sha_matches(s, w.git_ref.sha.as_deref())))
                && c.created_at >= w.sent_at - CLOCK_SKEW
        });
        if let Some(i) = found {
            taken[i] = true;
            out.push((w.run_id.clone(), free[i].1.clone()));
        }
    }
    out
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

    fn waiting(id: &str, branch: &str, sent: i64) -> Waiting {
        Waiting { run_id: id.into(), git_ref: GitRef::branch(branch), sent_at: at(sent) }
    }

    fn free(v: Vec<RunCandidate>) -> Vec<(RunCandidate, ProviderRunRef)> {
        v.into_iter().map(|c| (c.clone(), c.run_ref)).collect()
    }

    fn pairs(v: Vec<(String, ProviderRunRef)>) -> Vec<(String, String)> {
        v.into_iter().map(|(run, r)| (run, r.id)).collect()
    }

    #[test]
    fn assignment_is_one_to_one_and_keeps_the_order_of_sends() {
        // Listed newest first, as providers do; three runs of one branch sent a second apart.
        let builds = vec![
            cand("c", "main", None, 1_002, None),
            cand("other", "dev", None, 1_001, None),
            cand("b", "main", None, 1_001, None),
            cand("a", "main", None, 1_000, None),
        ];
        let runs = [waiting("r1", "main", 1_000), waiting("r2", "main", 1_001), waiting("r3", "main", 1_002)];
        let got = pairs(assign(&runs, free(builds)));
        let want = [("r1", "a"), ("r2", "b"), ("r3", "c")].map(|(r, b)| (r.to_string(), b.to_string()));
        assert_eq!(got, want);
    }

    #[test]
    fn a_build_not_listed_yet_leaves_the_newest_runs_waiting() {
        let runs = [waiting("r1", "main", 1_000), waiting("r2", "main", 1_001), waiting("r3", "main", 1_002)];
        let got = pairs(assign(&runs, free(vec![cand("a", "main", None, 1_000, None)])));
        assert_eq!(got, [("r1".to_string(), "a".to_string())]);
        let none = assign(&runs, free(vec![cand("old", "main", None, 100, None)]));
        assert!(none.is_empty(), "a build queued long before every send belongs to none of them");
    }

    #[test]
    fn echoed_ids_assign_each_run_its_own_build() {
        let runs = [waiting("r1", "main", 1_000), waiting("r2", "main", 1_001)];
        let builds = vec![cand("x", "main", None, 1_000, Some("r2")), cand("y", "main", None, 1_001, Some("r9"))];
        assert_eq!(pairs(assign(&runs, free(builds))), [("r2".to_string(), "x".to_string())]);
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
