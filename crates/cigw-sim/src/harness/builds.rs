//! Counts builds simulators really started, per correlation value, so tests can prove "exactly
//! once" through faults and crashes.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Builds started per correlation value (Codefresh `reqId`, CircleCI `cigw_run_id` parameter or
/// branch, Codeship `commit_sha` or ref).
#[derive(Debug, Default)]
pub struct BuildCounter {
    counts: Mutex<BTreeMap<String, usize>>,
}

impl BuildCounter {
    /// Record one started build.
    pub fn record(&self, key: &str) {
        *self.counts.lock().entry(key.to_string()).or_default() += 1;
    }

    /// Builds started for `key`.
    pub fn count(&self, key: &str) -> usize {
        self.counts.lock().get(key).copied().unwrap_or(0)
    }

    /// Every key and its count.
    pub fn all(&self) -> BTreeMap<String, usize> {
        self.counts.lock().clone()
    }

    /// Total builds started.
    pub fn total(&self) -> usize {
        self.counts.lock().values().sum()
    }
}
