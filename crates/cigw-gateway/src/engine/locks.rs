//! Per-target locks of one engine: id-less triggers of a target are sent one at a time, and one
//! correlation pass (one provider list) at a time serves all unconfirmed runs of a target.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// When a target's last correlation pass started (guarded by its lock).
pub(crate) type LastPass = Option<tokio::time::Instant>;

/// The locks, created on first use and kept for the life of the engine (one per target).
#[derive(Debug, Default)]
pub(crate) struct TargetLocks {
    send: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    correlate: Mutex<HashMap<String, Arc<tokio::sync::Mutex<LastPass>>>>,
}

impl TargetLocks {
    /// The lock serializing trigger sends of `target`.
    pub(crate) fn send_lock(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.send.lock().entry(target.to_string()).or_default().clone()
    }

    /// The lock of `target`'s correlation passes, holding when the last one started.
    pub(crate) fn correlate_lock(&self, target: &str) -> Arc<tokio::sync::Mutex<LastPass>> {
        self.correlate.lock().entry(target.to_string()).or_default().clone()
    }
}
