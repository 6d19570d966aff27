//! What a target's provider can do, so the gateway never branches on the provider kind.

use serde::Serialize;

/// Operations and features a target supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Runs can be cancelled at the provider.
    pub cancel: bool,
    /// Finished runs can be run again.
    pub rerun: bool,
    /// A rerun can be limited to the failed parts.
    pub rerun_failed_only: bool,
    /// Runs can wait for approval and be approved or denied through the API.
    pub approve: bool,
    /// A tag can be built instead of a branch.
    pub tag: bool,
    /// A commit sha can be pinned.
    pub pin_sha: bool,
    /// Typed parameters can be passed.
    pub parameters: bool,
    /// The trigger call answers with the provider's run id.
    pub trigger_returns_id: bool,
    /// The account receives the provider's completion callbacks (so polls only show progress).
    pub callbacks: bool,
    /// The provider's build records the gateway run id (a Codefresh annotation, a CircleCI
    /// `cigw_run_id` parameter), so a person can tell which build belongs to which run.
    pub echoes_run_id: bool,
}

impl Capabilities {
    /// What a follow-only target (see `ProviderAccount::follow_target`) can do: cancel, nothing else.
    pub const FOLLOW_ONLY: Capabilities = Capabilities {
        cancel: true,
        rerun: false,
        rerun_failed_only: false,
        approve: false,
        tag: false,
        pin_sha: false,
        parameters: false,
        trigger_returns_id: false,
        callbacks: false,
        echoes_run_id: false,
    };
}
