//! The records the store reads and writes. No SQL or driver type appears here.

use chrono::{DateTime, Utc};
use cigw_core::{GitRef, Parameters, ProviderKind, ProviderRunRef, RunState};
use serde_json::Value;

/// What a run event records. Stored (and shown by the API) as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run was stored (by intake or as a rerun).
    Created,
    /// A dispatch outcome was recorded (data: the outcome).
    Dispatched,
    /// A dispatch was postponed (data: when and why).
    DispatchRetry,
    /// The run's state moved (data: from, to, the status).
    StateChanged,
    /// A provider build was adopted by the run (data: the provider ref).
    Adopted,
    /// A cancel was requested (state: canceled for a pending run, else canceling).
    CancelRequested,
    /// A rerun of this run was created (data: the new run id).
    Rerun,
    /// The gateway could not run it (data: the message).
    Error,
    /// A second provider build may exist after an unresolved ambiguous trigger.
    PossibleDuplicate,
    /// An ambiguous dispatch was resolved by adopting a provider build.
    Reconciled,
    /// The cancel was sent to the provider.
    CancelSent,
    /// The run exceeded its target's maximum duration.
    TimedOut,
    /// The run was approved through the API.
    Approved,
    /// The run was denied through the API.
    Denied,
    /// A newer run of the same target and branch replaced this unsent one, which ended
    /// `skipped` (data: `superseded_by`, its link).
    Superseded,
    /// A fan-in join this run belonged to expired before every upstream was in (data: the
    /// chain, the join key, what it still waited for).
    JoinExpired,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 16] = [
        Self::Created,
        Self::Dispatched,
        Self::DispatchRetry,
        Self::StateChanged,
        Self::Adopted,
        Self::CancelRequested,
        Self::Rerun,
        Self::Error,
        Self::PossibleDuplicate,
        Self::Reconciled,
        Self::CancelSent,
        Self::TimedOut,
        Self::Approved,
        Self::Denied,
        Self::Superseded,
        Self::JoinExpired,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Dispatched => "dispatched",
            Self::DispatchRetry => "dispatch_retry",
            Self::StateChanged => "state_changed",
            Self::Adopted => "adopted",
            Self::CancelRequested => "cancel_requested",
            Self::Rerun => "rerun",
            Self::Error => "error",
            Self::PossibleDuplicate => "possible_duplicate",
            Self::Reconciled => "reconciled",
            Self::CancelSent => "cancel_sent",
            Self::TimedOut => "timed_out",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Superseded => "superseded",
            Self::JoinExpired => "join_expired",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A trigger request to store with its runs, in one transaction.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    /// Gateway-generated id (UUID v7 text).
    pub id: String,
    /// Where it came from: `api`, `hook:<name>`, `chain:<name>`, `ui`, `cli`.
    pub source: String,
    /// Token id or name, hook name, or chain name.
    pub requested_by: String,
    /// The request as received (secret parameter values already masked by the caller).
    pub request: Value,
    /// Free-form labels (a JSON object).
    pub labels: Value,
    /// Intake time; also the "now" against which an idempotency key's expiry is checked.
    pub created_at: DateTime<Utc>,
    /// One run per target; at least one.
    pub runs: Vec<NewRun>,
    /// The `Idempotency-Key`, when the caller sent one.
    pub idempotency: Option<IdempotencyKey>,
    /// The chain firing this trigger results from; recorded (or completed) in the same transaction.
    pub chain_firing: Option<ChainFiring>,
    /// The schedule slot this trigger fires; recorded in the same transaction, once per slot.
    pub schedule_slot: Option<ScheduleSlot>,
    /// The hook delivery this trigger answers; recorded with its trigger id in the same
    /// transaction, once per (hook, delivery id) while it is remembered.
    pub hook_delivery: Option<NewHookDelivery>,
}

/// One run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Gateway-generated id (UUID v7 text): the correlation id sent to the provider.
    pub id: String,
    /// Target name.
    pub target: String,
    /// The target's provider.
    pub provider: ProviderKind,
    /// The provider account name.
    pub account: String,
    /// What to build (default branch already filled in).
    pub git_ref: GitRef,
    /// Validated parameters, secrets included (stored until the run is sent, never logged).
    pub parameters: Parameters,
    /// The upstream run whose end fired the chain that created this run.
    pub chain_parent: Option<String>,
    /// The run this one reruns.
    pub rerun_of: Option<String>,
    /// For a rerun: rerun only what failed.
    pub rerun_failed_only: bool,
    /// Earliest dispatch time (normally the creation time).
    pub dispatch_at: DateTime<Utc>,
}

/// An idempotency key, scoped to the token that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyKey {
    /// The scope: the token id.
    pub scope: String,
    /// The key as sent.
    pub key: String,
    /// The request body as parsed JSON; compared as JSON (key order does not matter).
    pub fingerprint: Value,
    /// The response to replay for a repeat.
    pub response: Value,
    /// When the key stops counting (an expired key is treated as absent and replaced).
    pub expires_at: DateTime<Utc>,
}

/// A chain rule firing: chain `chain` fired for the end of `upstream_run_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFiring {
    /// The chain's name.
    pub chain: String,
    /// The upstream run (of a join: the run that completed it).
    pub upstream_run_id: String,
    /// Every upstream run of the firing, `upstream_run_id` first (a join's other members after).
    pub parents: Vec<String>,
    /// The root trigger of the tree the firing extends.
    pub root_trigger_id: String,
    /// How deep the new trigger sits (1: fired by a run of a root trigger).
    pub depth: u32,
    /// A join firing: the join's key. The store fires it only while the join is open and every
    /// member is done, and marks it fired in the same transaction.
    pub join_key: Option<String>,
}

/// Where a chain-fired trigger sits in its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The trigger.
    pub trigger_id: String,
    /// The chain that fired it.
    pub chain: String,
    /// Its tree's root trigger.
    pub root_trigger_id: String,
    /// Its depth (the root is 0).
    pub depth: u32,
    /// The upstream runs that fired it, the completing one first.
    pub parents: Vec<String>,
}

/// A trigger tree: a root trigger and every trigger chains fired from it, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerTree {
    /// The root trigger's id.
    pub root_trigger_id: String,
    /// The triggers, the root first, each with its chain link (the root has none).
    pub triggers: Vec<(TriggerRecord, Option<ChainLink>)>,
}

/// Whether a join waits, fired or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinState {
    /// Waiting for members.
    Open,
    /// Fired its downstream trigger.
    Fired,
    /// Expired before every member was in.
    Expired,
}

impl JoinState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinState::Open => "open",
            JoinState::Fired => "fired",
            JoinState::Expired => "expired",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [JoinState::Open, JoinState::Fired, JoinState::Expired].into_iter().find(|j| j.as_str() == s)
    }
}

/// The latest run of one upstream target in a join.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinMember {
    /// The run.
    pub run_id: String,
    /// Its end state.
    pub state: RunState,
    /// Whether that state is one the chain wants (the member is done).
    pub done: bool,
    /// The event that reported it (a later event of the same target replaces it).
    pub event_id: i64,
}

/// A fan-in join as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainJoinRecord {
    /// The chain.
    pub chain: String,
    /// The join key (a root trigger id or a sha).
    pub join_key: String,
    /// Open, fired or expired.
    pub state: JoinState,
    /// The upstream targets it waits for.
    pub all_of: Vec<String>,
    /// The latest run of each upstream target seen so far.
    pub members: std::collections::BTreeMap<String, JoinMember>,
    /// When its first member came in.
    pub opened_at: DateTime<Utc>,
    /// When it expires unless complete.
    pub expires_at: DateTime<Utc>,
    /// When it fired or expired.
    pub closed_at: Option<DateTime<Utc>>,
    /// The trigger it fired.
    pub trigger_id: Option<String>,
}

impl ChainJoinRecord {
    /// The upstream targets without a done member yet.
    pub fn waiting_for(&self) -> Vec<String> {
        self.all_of.iter().filter(|t| !self.members.get(*t).is_some_and(|m| m.done)).cloned().collect()
    }

    /// Every upstream target has a done member.
    pub fn complete(&self) -> bool {
        self.waiting_for().is_empty()
    }
}

/// One upstream run's end, reported to a join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinArrival {
    /// The chain.
    pub chain: String,
    /// The join key.
    pub join_key: String,
    /// The targets the join waits for.
    pub all_of: Vec<String>,
    /// The upstream target.
    pub target: String,
    /// Its run and end state.
    pub member: JoinMember,
    /// How long a join opened now stays open.
    pub ttl: std::time::Duration,
    /// Now.
    pub now: DateTime<Utc>,
}

/// A schedule slot: schedule `schedule` is due at `slot` (an instant, whatever the zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSlot {
    /// The schedule's name.
    pub schedule: String,
    /// The slot's time (whole microseconds are kept).
    pub slot: DateTime<Utc>,
}

/// A verified inbound hook delivery to remember (and, for the newest ones, keep for replay).
#[derive(Debug, Clone, PartialEq)]
pub struct NewHookDelivery {
    /// The hook's name.
    pub hook: String,
    /// The sender's delivery id (or one the gateway made up when the sender gives none).
    pub delivery_id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When its id stops counting as seen (`retention.deliveries` after arrival).
    pub expires_at: DateTime<Utc>,
    /// Its headers, secret-bearing ones removed (a JSON object of lower-cased names).
    pub headers: Value,
    /// Its body as received (JSON text).
    pub body: String,
    /// What came of it: `triggered`, `not_matched`, `ping`, `template_error`, `rejected`.
    pub outcome: String,
    /// The rule that matched, if one did.
    pub rule: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The JSON it was answered with (for a trigger, intake adds `trigger_id` and `runs`).
    pub response: Value,
    /// How many of the hook's newest deliveries keep their headers and body.
    pub keep: u32,
}

/// A hook delivery as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDeliveryRecord {
    /// The hook's name.
    pub hook: String,
    /// The delivery id.
    pub delivery_id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When its id stops counting as seen.
    pub expires_at: DateTime<Utc>,
    /// Its headers, while kept (and when read one by one).
    pub headers: Option<Value>,
    /// Its body, while kept (and when read one by one).
    pub body: Option<String>,
    /// Whether headers and body are still kept (it can be replayed).
    pub kept: bool,
    /// What came of it.
    pub outcome: String,
    /// The rule that matched, if one did.
    pub rule: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The JSON it was answered with.
    pub response: Value,
    /// The trigger it started, if any.
    pub trigger_id: Option<String>,
}

/// How many deliveries a hook has remembered and when the latest arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDeliveryStats {
    /// The hook's name.
    pub hook: String,
    /// Remembered (unexpired) deliveries.
    pub deliveries: u64,
    /// Of those, how many started a trigger.
    pub triggered: u64,
    /// When the latest arrived.
    pub last_received_at: Option<DateTime<Utc>>,
}

/// What `create_trigger` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored: the trigger, its runs, the key and a `created` event per run.
    Created(TriggerRecord),
    /// The same key with an equal body was seen before and has not expired: nothing stored.
    Replayed {
        /// The trigger the key belongs to.
        trigger_id: String,
        /// The stored response.
        response: Value,
    },
    /// The same key with a different body: nothing stored.
    KeyConflict {
        /// The trigger the key belongs to.
        trigger_id: String,
    },
    /// This chain firing already produced a trigger: nothing stored.
    ChainAlreadyFired {
        /// The trigger it produced.
        trigger_id: String,
    },
    /// This schedule slot already fired (here or on another replica): nothing stored.
    SlotAlreadyFired {
        /// The trigger it produced.
        trigger_id: String,
    },
    /// The join of a join firing is no longer open and complete (a member failed meanwhile, or
    /// it expired): nothing stored.
    JoinNotReady,
    /// This hook delivery already started a trigger and is still remembered: nothing stored.
    DeliveryAlreadyHandled(Box<HookDeliveryRecord>),
}

/// A stored trigger with its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    /// Id.
    pub id: String,
    /// Where it came from.
    pub source: String,
    /// Who or what asked.
    pub requested_by: String,
    /// The request as stored.
    pub request: Value,
    /// Labels.
    pub labels: Value,
    /// Intake time.
    pub created_at: DateTime<Utc>,
    /// Its runs, oldest first (reruns included).
    pub runs: Vec<RunRecord>,
}

/// One stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Id (the correlation id).
    pub id: String,
    /// The trigger it belongs to.
    pub trigger_id: String,
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub provider: ProviderKind,
    /// Provider account name.
    pub account: String,
    /// What it builds.
    pub git_ref: GitRef,
    /// Parameters (`Debug` masks secret ones). Secret values are kept only while the run may
    /// still have to send its trigger (no provider build yet and not ended); from the change that
    /// gives it a build or ends it on, they are `***` here and in the database, since a run with
    /// a build is never triggered again and a rerun uses the provider's own rerun.
    pub parameters: Parameters,
    /// Current state.
    pub state: RunState,
    /// The provider's last raw status.
    pub raw_status: Option<String>,
    /// Last message (error text, provider explanation).
    pub message: Option<String>,
    /// The provider build this run owns, once known.
    pub provider_ref: Option<ProviderRunRef>,
    /// Accepted without an id and not yet correlated with a provider build.
    pub unconfirmed: bool,
    /// When the accepted-without-id trigger was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// When an unconfirmed run gives up ("accepted but no build appeared").
    pub confirm_deadline: Option<DateTime<Utc>>,
    /// How many times a dispatcher claimed it (sends, reconciliations and crashed claims alike;
    /// see `maybe_sent_count` for the sends that may have reached the provider).
    pub dispatch_attempts: u32,
    /// The dispatcher or tracker holding the run.
    pub lease_owner: Option<String>,
    /// Until when the lease holds.
    pub lease_until: Option<DateTime<Utc>>,
    /// When the run is due for dispatch; `None` once dispatched (or ended).
    pub next_dispatch_at: Option<DateTime<Utc>>,
    /// When the run is due for a status poll; `None` when not tracked.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Observation time of the last applied status.
    pub observed_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was dispatched (reached `queued`).
    pub queued_at: Option<DateTime<Utc>>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The upstream run of a chain.
    pub chain_parent: Option<String>,
    /// The run this one reruns.
    pub rerun_of: Option<String>,
    /// For a rerun: only what failed.
    pub rerun_failed_only: bool,
    /// Copied from the trigger.
    pub requested_by: String,
    /// A cancel was requested; the gateway cancels at the provider once the build is known.
    pub cancel_requested: bool,
    /// Sends that may have reached the provider without the gateway learning the build: ambiguous
    /// answers (timeout, reset, 5xx after sending) and claims that ended without an outcome.
    pub maybe_sent_count: u32,
    /// When the latest of those sends was made (for a crashed claim: its lease end).
    pub last_maybe_sent_at: Option<DateTime<Utc>>,
    /// When the tracker last claimed the run to read it at its provider.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// When a read was last requested out of schedule (refresh).
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// When a send of the trigger started whose outcome is not recorded yet (write-ahead mark).
    pub sending_since: Option<DateTime<Utc>>,
}

impl RunRecord {
    /// Whether a lease is held at `now` by anyone.
    pub fn is_leased(&self, now: DateTime<Utc>) -> bool {
        self.lease_owner.is_some() && self.lease_until.is_some_and(|t| t > now)
    }
}

/// What the dispatcher learnt from one trigger attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOutcome {
    /// The provider started a build → `queued`, tracked from `next_poll_at`.
    Started {
        /// The build.
        run_ref: ProviderRunRef,
        /// First poll.
        next_poll_at: DateTime<Utc>,
    },
    /// Accepted without an id → `queued` + unconfirmed until matched or past `deadline`.
    Unconfirmed {
        /// When the request was sent.
        sent_at: DateTime<Utc>,
        /// When to give up.
        deadline: DateTime<Utc>,
        /// First correlation attempt.
        next_poll_at: DateTime<Utc>,
    },
    /// The provider had nothing to run → `skipped`.
    NothingToRun {
        /// Its explanation.
        message: String,
    },
    /// The provider refused the request → `error`.
    Refused {
        /// Its message.
        message: String,
    },
    /// The send may have reached the provider (timeout, reset, 5xx after sending): stays
    /// `pending` (or `canceling`), counts one more possibly-sent send made at `sent_at`, and is
    /// claimed again at `at` to reconcile before anything is sent again.
    MaybeSent {
        /// The last moment the request may have reached the provider (when its ambiguous answer
        /// came): the reconciliation grace counts from here.
        sent_at: DateTime<Utc>,
        /// Next attempt (a reconciliation).
        at: DateTime<Utc>,
        /// Why, for the event.
        reason: String,
    },
    /// The run was canceled and nothing it sent could be found at the provider → `canceled`.
    Canceled {
        /// Why, for the run's message.
        message: String,
    },
    /// Not sent (or rate limited): stays `pending`, lease released, dispatched again at `at`.
    /// A run whose cancel was requested meanwhile becomes `canceled` instead, unless an earlier
    /// send may have reached the provider (then it keeps reconciling).
    RetryAt {
        /// Next attempt.
        at: DateTime<Utc>,
        /// Why, for the event.
        reason: String,
    },
}

/// The result of an update that goes through the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    /// The run after the update.
    pub run: RunRecord,
    /// The state before, when the state moved.
    pub moved_from: Option<RunState>,
    /// The update was older than the stored observation and was dropped.
    pub stale: bool,
}

/// One entry of the append-only run event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Monotonically increasing in commit order (safe for `Last-Event-ID`).
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// Its trigger.
    pub trigger_id: String,
    /// Its target.
    pub target: String,
    /// What happened.
    pub kind: EventKind,
    /// The run's state after it happened.
    pub state: RunState,
    /// Details (secrets already masked).
    pub data: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An event the gateway appends itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The run (its trigger, target and current state are copied into the event).
    pub run_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Details; the caller masks secret parameter values.
    pub data: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this target.
    pub target: Option<String>,
    /// Only this trigger.
    pub trigger_id: Option<String>,
    /// Only this run.
    pub run_id: Option<String>,
    /// Only events leaving the run in this state.
    pub state: Option<RunState>,
}

/// Which runs to list (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this target.
    pub target: Option<String>,
    /// Only this state.
    pub state: Option<RunState>,
    /// Only this trigger.
    pub trigger_id: Option<String>,
    /// Only runs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Page size (1..=1000).
    pub limit: u32,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self { target: None, state: None, trigger_id: None, since: None, limit: 50 }
    }
}

/// One page of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<RunRecord>,
    /// Pass it back for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An API token to store (the store only ever sees its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Id.
    pub id: String,
    /// Unique name among live tokens.
    pub name: String,
    /// Hash of the secret.
    pub hash: String,
    /// Scopes (`read`, `trigger:web-*`, `cancel`, `approve`, `admin`).
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Browser origins allowed to use it.
    pub allowed_origins: Vec<String>,
    /// Requests per minute.
    pub rate_limit_per_minute: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A stored, live API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Hash of the secret.
    pub hash: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Allowed browser origins.
    pub allowed_origins: Vec<String>,
    /// Requests per minute.
    pub rate_limit_per_minute: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last successful use.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The latest fired slot of a schedule, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFiringRecord {
    /// The schedule.
    pub schedule: String,
    /// The slot.
    pub slot: DateTime<Utc>,
    /// When it fired (intake time).
    pub fired_at: DateTime<Utc>,
    /// The trigger it produced.
    pub trigger_id: String,
}

/// A chain firing as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFiringRecord {
    /// The chain.
    pub chain: String,
    /// The upstream run.
    pub upstream_run_id: String,
    /// When it fired.
    pub fired_at: DateTime<Utc>,
    /// The trigger it produced, once created.
    pub trigger_id: Option<String>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Terminal runs past the runs retention.
    pub runs: u64,
    /// Their events.
    pub events: u64,
    /// Triggers left without runs.
    pub triggers: u64,
    /// Expired idempotency keys.
    pub idempotency_keys: u64,
    /// Expired delivery ids.
    pub deliveries: u64,
    /// Delivered or dead-lettered outbox rows past the outbox retention.
    pub outbox: u64,
    /// Chain firings whose upstream run was pruned.
    pub chain_firings: u64,
    /// Schedule firings past the runs retention, except each schedule's latest.
    pub schedule_firings: u64,
    /// Fired or expired joins closed before the runs retention.
    pub chain_joins: u64,
    /// Hook deliveries past `retention.deliveries`.
    pub hook_deliveries: u64,
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up (attempts used up, or the receiver answered 410 Gone): dead-lettered until redelivered.
    Dead,
}

impl OutboxStatus {
    /// Every status.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Dead];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A notification to deliver about one run event (table `outbox`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxRow {
    /// The `[notifications.<name>]` it goes to.
    pub notification: String,
    /// The run event it reports; with `notification`, unique (a repeat is ignored).
    pub event_id: i64,
    /// The run of that event (deliveries of one run and notification keep event order).
    pub run_id: String,
    /// The document to POST (secrets already masked).
    pub payload: Value,
    /// When it was enqueued; also its first attempt time.
    pub created_at: DateTime<Utc>,
}

/// One stored outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Id (increasing in insertion order).
    pub id: i64,
    /// The notification.
    pub notification: String,
    /// The run event it reports.
    pub event_id: i64,
    /// The run.
    pub run_id: String,
    /// The document to POST.
    pub payload: Value,
    /// Where it stands.
    pub status: OutboxStatus,
    /// Attempts made since it was enqueued or last redelivered (a claim counts one).
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the latest failed attempt failed.
    pub last_error: Option<String>,
    /// The HTTP status of the latest attempt that got an answer.
    pub last_status: Option<u16>,
    /// When the latest attempt ended.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The worker holding it.
    pub lease_owner: Option<String>,
    /// Until when.
    pub lease_until: Option<DateTime<Utc>>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or dead-lettered.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Try again at `at`.
    Retry {
        /// Next attempt.
        at: DateTime<Utc>,
        /// The receiver's status, when it answered.
        status: Option<u16>,
        /// Why (no secret, no URL).
        error: String,
    },
    /// Give up: the row is dead-lettered.
    Dead {
        /// The receiver's status, when it answered.
        status: Option<u16>,
        /// Why.
        error: String,
    },
}

/// Which outbox rows to list (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxFilter {
    /// Only this notification.
    pub notification: Option<String>,
    /// Only this status.
    pub status: Option<OutboxStatus>,
    /// Only this run.
    pub run_id: Option<String>,
    /// Page size (1..=1000).
    pub limit: u32,
}

impl Default for OutboxFilter {
    fn default() -> Self {
        Self { notification: None, status: None, run_id: None, limit: 50 }
    }
}

/// One page of outbox rows.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxPage {
    /// Newest first.
    pub rows: Vec<OutboxRecord>,
    /// Pass it back for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Which database a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A query the store runs often, for `testing::explain`: the query plan shows whether the
/// database answers it from an index or reads a whole table.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HotQuery {
    /// [`crate::Store::events_after`].
    EventsAfter {
        /// Read after this id.
        after_id: i64,
        /// With these filters.
        filter: EventFilter,
    },
    /// [`crate::Store::list_runs`].
    ListRuns {
        /// With these filters.
        filter: RunFilter,
        /// From this page on.
        cursor: Option<String>,
    },
    /// [`crate::Store::claim_dispatch`].
    ClaimDispatch,
    /// [`crate::Store::claim_poll`].
    ClaimPoll,
    /// [`crate::Store::find_token_by_hash`].
    TokenByHash,
    /// [`crate::Store::count_runs_by_state`].
    CountRunsByState,
    /// [`crate::Store::count_unconfirmed_runs`].
    CountUnconfirmed,
    /// [`crate::Store::oldest_due_dispatch`].
    OldestDueDispatch,
    /// [`crate::Store::claim_outbox`].
    ClaimOutbox,
    /// [`crate::Store::count_outbox`] of pending rows.
    CountOutboxPending,
}

/// What a web session lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A signed-in web page: acts as the token it was opened with.
    Ui,
    /// A build button's link to follow the one run it started.
    Watch,
}

impl SessionKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Ui => "ui",
            SessionKind::Watch => "watch",
        }
    }

    /// The kind of a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [SessionKind::Ui, SessionKind::Watch].into_iter().find(|k| k.as_str() == s)
    }
}

/// A web session to store (table `ui_sessions`; only hashes of its secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 (hex) of the session secret.
    pub hash: String,
    /// What it allows.
    pub kind: SessionKind,
    /// `Ui`: the hash of the token it acts as (revoking that token ends the session).
    pub token_hash: Option<String>,
    /// `Watch`: the run it may read.
    pub run_id: Option<String>,
    /// Creation time (also the "now" against which older sessions are found expired).
    pub created_at: DateTime<Utc>,
    /// End of validity.
    pub expires_at: DateTime<Utc>,
}

/// A stored, unexpired session.
pub type SessionRecord = NewSession;

/// A change to API tokens or web sessions that caches of them must follow
/// ([`crate::Store::auth_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChange {
    /// Anything may have changed: listening (re)started, so changes may have been missed. Drop
    /// every cache.
    All,
    /// A token was created or revoked (the allowed origins may have changed with it).
    Token {
        /// The token id.
        id: String,
    },
    /// A web session ended (signed out).
    Session {
        /// SHA-256 (hex) of the session secret, as stored.
        hash: String,
    },
}

impl AuthChange {
    /// The NOTIFY payload: `token:<id>` or `session:<hash>` (`All` is never sent).
    pub fn payload(&self) -> String {
        match self {
            AuthChange::All => "all".into(),
            AuthChange::Token { id } => format!("token:{id}"),
            AuthChange::Session { hash } => format!("session:{hash}"),
        }
    }

    /// The change a payload names; an unknown one (a newer replica's) counts as `All`.
    pub fn from_payload(payload: &str) -> Self {
        match payload.split_once(':') {
            Some(("token", id)) => AuthChange::Token { id: id.to_string() },
            Some(("session", hash)) => AuthChange::Session { hash: hash.to_string() },
            _ => AuthChange::All,
        }
    }
}
