//! One provider request budget per credential, shared by every gateway replica (PostgreSQL),
//! instead of one limiter per process.
//!
//! The budget is kept where every replica sees it as the state of a GCRA ("virtual scheduling")
//! limiter: the moment from which the credential's next request slot is free. A replica books
//! slots (each `spacing` after the previous one) for the callers waiting at that moment, in one
//! round trip, and each caller sends at its slot's time; so the requests of all replicas together
//! keep the pace one process with one limiter would keep, and three replicas never triple it.
//!
//! Calls that start builds keep their priority over reads (status, lists, cancels), as in
//! [`crate::rate_limit::Budget`]: reads book only slots due within a short lead (at most a second,
//! so a trigger never queues behind more than that of booked reads) and may not take the last
//! quarter of a burst; triggers book up to a whole period ahead.
//!
//! When the shared budget cannot be reached, calls wait (and end `RateLimited` at the end of
//! their work budget, unsent): never sent over budget.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::BoxError;
use crate::rate_limit::{READ_SHARE, RateLimit};
use crate::retry::{budget_end, fits_budget, until_budget_end};
use crate::{CallKind, Error, ProviderKind, Result};

/// Slots one booking takes at most.
const MAX_SLICE: u32 = 16;
/// The longest lead of reads: how far past now a read may book its slot.
const READ_LEAD: Duration = Duration::from_secs(1);
/// Reads book at most this many spacings ahead (when that is shorter than [`READ_LEAD`]).
const READ_LEAD_SPACINGS: u32 = 4;
/// The wait before asking an unreachable shared budget again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(1);
/// A booking that takes longer counts as unreachable.
const BOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest wait before booking again after nothing was bookable.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Which shared budget an account draws from: its provider kind and a SHA-256 fingerprint of the
/// credential's identity (the Codeship user, the CircleCI or Codefresh token), so every account
/// and replica using one credential shares one budget. Neither the credential nor the account
/// name is in it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey(String);

impl BudgetKey {
    /// The key of the credential `identity` of a `kind` account.
    pub fn new(kind: ProviderKind, identity: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"cigw provider budget\0")
            .chain_update(kind.as_str())
            .chain_update([0u8])
            .chain_update(identity)
            .finalize();
        let fingerprint: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{kind}:{fingerprint}"))
    }

    /// The key of `credential` (what the provider counts requests by: a token, a user) on the
    /// server at `base_url`.
    pub fn of_credential(kind: ProviderKind, base_url: impl fmt::Display, credential: &str) -> Self {
        Self::new(kind, format!("{base_url}\0{credential}").as_bytes())
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BudgetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BudgetKey({})", self.0)
    }
}

/// What a booking got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booked {
    /// Slots booked (0 when the next free one lies too far ahead).
    pub slots: u32,
    /// How far past now the first slot (or, with none booked, the next free one) lies, on the
    /// budget's clock; the others follow one spacing apart.
    pub backlog: Duration,
}

/// Where the replicas keep their shared budgets (the store provides it on PostgreSQL).
#[async_trait]
pub trait SharedBudget: Send + Sync + fmt::Debug + 'static {
    /// Atomically book up to `want` consecutive slots `spacing` apart in the budget `key`
    /// (created on first use): the budget's next free slot moves `spacing` forward per slot
    /// booked, and a slot is booked only while it lies no more than `ahead` past now.
    async fn book(&self, key: &BudgetKey, spacing: Duration, ahead: Duration, want: u32) -> Result<Booked, BoxError>;
}

/// An account's request pacing through a [`SharedBudget`]: what the transport waits for before
/// each request on PostgreSQL.
pub struct SharedPacer {
    budget: Arc<dyn SharedBudget>,
    key: BudgetKey,
    /// The account, for logs.
    account: String,
    spacing: Duration,
    reads: Lane,
    builds: Lane,
    unreachable: AtomicBool,
}

/// The slots of one kind of call and how many callers wait for one.
struct Lane {
    /// How long before its slot time a slot may be used (the budget's burst, as in GCRA).
    tolerance: Duration,
    /// How far past now this lane books slots.
    lead: Duration,
    state: tokio::sync::Mutex<LaneState>,
    waiting: AtomicU32,
}

/// What a lane's callers share; its lock makes one of them book for all.
#[derive(Default)]
struct LaneState {
    /// Booked slots not yet taken, in time order.
    booked: VecDeque<Instant>,
    /// No booking before this: the last one found nothing within reach (or no budget).
    not_before: Option<Instant>,
}

impl Lane {
    fn new(spacing: Duration, burst: u32, lead: Duration) -> Self {
        Self {
            tolerance: spacing * burst.saturating_sub(1),
            lead,
            state: tokio::sync::Mutex::new(LaneState::default()),
            waiting: AtomicU32::new(0),
        }
    }
}

/// Counts a caller waiting in a lane for as long as it waits.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for SharedPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPacer")
            .field("key", &self.key)
            .field("account", &self.account)
            .field("spacing", &self.spacing)
            .finish_non_exhaustive()
    }
}

impl SharedPacer {
    /// Pace the calls of `account` (named in logs) by `limit` through `budget` at `key`, in
    /// bursts of up to `burst` requests (1: evenly spaced).
    pub fn new(budget: Arc<dyn SharedBudget>, key: BudgetKey, account: &str, limit: &RateLimit, burst: u32) -> Self {
        let spacing = limit.per_request();
        let burst = burst.clamp(1, limit.requests.get());
        let read_burst = ((f64::from(burst) * READ_SHARE).floor() as u32).max(1);
        let read_lead = READ_LEAD.min(spacing * READ_LEAD_SPACINGS);
        Self {
            budget,
            key,
            account: account.to_string(),
            spacing,
            reads: Lane::new(spacing, read_burst, read_lead),
            builds: Lane::new(spacing, burst, limit.per),
            unreachable: AtomicBool::new(false),
        }
    }

    /// Wait until a call of `kind` may be sent, bounded by the current work budget
    /// ([`crate::retry::until_budget_end`]): `RateLimited`, unsent, when its slot comes too late.
    pub async fn admit(&self, kind: CallKind) -> Result<()> {
        let lane = match kind {
            CallKind::Idempotent => &self.reads,
            CallKind::StartsBuild => &self.builds,
        };
        let at = self.slot(lane).await?;
        until_budget_end(tokio::time::sleep_until(at)).await
    }

    /// A slot of `lane`: one booked earlier and not taken, or one from a new booking made for
    /// every caller waiting now. Only one caller of a lane books at a time, and after a booking
    /// that found nothing within reach the others wait for the same moment without asking.
    async fn slot(&self, lane: &Lane) -> Result<Instant> {
        let _waiting = Waiting::enter(&lane.waiting);
        loop {
            let mut state = until_budget_end(lane.state.lock()).await?;
            let now = Instant::now();
            // A slot its caller gave up on and nobody took in time is lost: sending on it now
            // could bunch with the replicas' next slots.
            while state.booked.front().is_some_and(|at| *at + self.spacing < now) {
                state.booked.pop_front();
            }
            if let Some(at) = state.booked.pop_front() {
                return Ok(at);
            }
            let wait = match state.not_before.filter(|at| *at > now) {
                Some(at) => at - now,
                None => {
                    // Bounded by the work budget too: a booking abandoned at its end only
                    // wastes the slots it may have taken.
                    let wait = until_budget_end(self.book(lane, &mut state.booked)).await?;
                    if let Some(at) = state.booked.pop_front() {
                        return Ok(at);
                    }
                    state.not_before = Some(Instant::now() + wait);
                    wait
                }
            };
            drop(state);
            if !fits_budget(wait) {
                return Err(Error::RateLimited { retry_after: None });
            }
            until_budget_end(tokio::time::sleep(wait)).await?;
        }
    }

    /// Book slots for the callers waiting in `lane` into `booked`; with none booked, how long to
    /// wait before asking again.
    async fn book(&self, lane: &Lane, booked: &mut VecDeque<Instant>) -> Duration {
        // Book no slot this call could not use before its work budget ends.
        let lead = match budget_end() {
            Some(end) => lane.lead.min(end.saturating_duration_since(std::time::Instant::now())),
            None => lane.lead,
        };
        let want = lane.waiting.load(Ordering::SeqCst).clamp(1, MAX_SLICE);
        let answer =
            tokio::time::timeout(BOOK_TIMEOUT, self.budget.book(&self.key, self.spacing, lane.tolerance + lead, want))
                .await;
        let received = Instant::now();
        match answer {
            Ok(Ok(b)) => {
                self.reached();
                // Times count from the answer's arrival, after the budget's now: later, never earlier.
                booked.extend(
                    (0..b.slots).map(|j| received + (b.backlog + self.spacing * j).saturating_sub(lane.tolerance)),
                );
                // With none booked, come back when a slice for the waiting callers is within
                // reach (one round trip for several slots), not as soon as one slot is.
                let fits = u32::try_from(lead.as_nanos() / self.spacing.as_nanos().max(1)).unwrap_or(u32::MAX);
                let slice = want.min(fits.saturating_add(1)).max(1);
                (b.backlog + self.spacing * (slice - 1)).saturating_sub(lane.tolerance + lead).max(MIN_WAIT)
            }
            Ok(Err(e)) => {
                self.unreachable(&e.to_string());
                RETRY_UNREACHABLE
            }
            Err(_) => {
                self.unreachable("no answer in time");
                RETRY_UNREACHABLE
            }
        }
    }

    fn unreachable(&self, error: &str) {
        if !self.unreachable.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                account = %self.account,
                error,
                "the shared provider rate budget (database) cannot be reached; provider calls wait until it can, none is sent over budget"
            );
        }
    }

    fn reached(&self) {
        if self.unreachable.swap(false, Ordering::SeqCst) {
            tracing::info!(account = %self.account, "the shared provider rate budget can be reached again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A shared budget in memory on the tokio clock (paused in these tests), with the same rule
    /// as the PostgreSQL function and a round trip of a millisecond.
    #[derive(Debug, Default)]
    struct MemoryBudget {
        next_free: Mutex<Option<Instant>>,
        bookings: AtomicUsize,
        down: AtomicBool,
    }

    #[async_trait]
    impl SharedBudget for MemoryBudget {
        async fn book(&self, _: &BudgetKey, spacing: Duration, ahead: Duration, want: u32) -> Result<Booked, BoxError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused".into());
            }
            let now = Instant::now();
            let mut next_free = self.next_free.lock().unwrap();
            let free = next_free.map_or(now, |at| at.max(now));
            let backlog = free - now;
            let mut slots = 0;
            while slots < want && backlog + spacing * slots <= ahead {
                slots += 1;
            }
            *next_free = Some(free + spacing * slots);
            if slots > 0 {
                self.bookings.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Booked { slots, backlog })
        }
    }

    fn pacer(budget: &Arc<MemoryBudget>, requests: u32, per: Duration, burst: u32) -> Arc<SharedPacer> {
        let limit = RateLimit::new(NonZeroU32::new(requests).unwrap(), per);
        let key = BudgetKey::new(ProviderKind::Circleci, b"qa@example.com");
        Arc::new(SharedPacer::new(budget.clone(), key, "circleci.main", &limit, burst))
    }

    #[test]
    fn keys_name_the_kind_and_hide_the_identity() {
        let key = BudgetKey::new(ProviderKind::Circleci, b"qa@example.com");
        assert!(key.as_str().starts_with("circleci:"), "{key:?}");
        assert!(!key.as_str().contains("qa@") && !format!("{key:?}").contains("example"));
        assert_eq!(key, BudgetKey::new(ProviderKind::Circleci, b"qa@example.com"));
        assert_ne!(key, BudgetKey::new(ProviderKind::Codefresh, b"qa@example.com"));
        assert_ne!(key, BudgetKey::new(ProviderKind::Circleci, b"ops@example.com"));
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_on_one_budget_keep_one_pace_and_book_in_slices() {
        // Three replicas, 100 requests per 10 s, evenly spaced: 30 calls take about 3 s in all.
        let budget = Arc::new(MemoryBudget::default());
        let replicas: Vec<_> = (0..3).map(|_| pacer(&budget, 100, Duration::from_secs(10), 1)).collect();
        let start = Instant::now();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        for replica in &replicas {
            for _ in 0..10 {
                let (replica, sent) = (replica.clone(), sent.clone());
                calls.push(tokio::spawn(async move {
                    replica.admit(CallKind::Idempotent).await.unwrap();
                    sent.lock().unwrap().push(Instant::now() - start);
                }));
            }
        }
        for call in calls {
            call.await.unwrap();
        }
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent.len(), 30);
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(99), "requests one spacing apart: {sent:?}");
        }
        let bookings = budget.bookings.load(Ordering::SeqCst);
        assert!(bookings <= 15, "slots were booked several at a time ({bookings} bookings)");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_start_builds_pass_reads_that_saturate_the_budget() {
        let budget = Arc::new(MemoryBudget::default());
        let replicas: Vec<_> = (0..3).map(|_| pacer(&budget, 10, Duration::from_secs(10), 1)).collect();
        let read_forever = |replica: Arc<SharedPacer>| async move {
            loop {
                replica.admit(CallKind::Idempotent).await.unwrap();
            }
        };
        for replica in &replicas {
            for _ in 0..20 {
                tokio::spawn(read_forever(replica.clone()));
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        for replica in &replicas {
            let asked = Instant::now();
            let trigger = tokio::spawn({
                let replica = replica.clone();
                async move { replica.admit(CallKind::StartsBuild).await }
            });
            tokio::task::yield_now().await;
            // A fresh burst of reads right behind it.
            for _ in 0..20 {
                tokio::spawn(read_forever(replica.clone()));
            }
            trigger.await.unwrap().unwrap();
            // Behind at most a second of booked reads and one spacing; behind the 40 reads waiting
            // on this replica it would wait over a minute.
            assert!(asked.elapsed() <= Duration::from_secs(3), "a trigger waited {:?}", asked.elapsed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_leave_a_quarter_of_a_burst_to_triggers() {
        // 4 per 10 minutes in bursts: reads get 3 at once, the 4th is kept for a trigger.
        let budget = Arc::new(MemoryBudget::default());
        let pacer = pacer(&budget, 4, Duration::from_secs(600), 4);
        let soon = Duration::from_millis(200);
        for _ in 0..3 {
            assert!(tokio::time::timeout(soon, pacer.admit(CallKind::Idempotent)).await.is_ok());
        }
        assert!(tokio::time::timeout(soon, pacer.admit(CallKind::Idempotent)).await.is_err());
        assert!(tokio::time::timeout(soon, pacer.admit(CallKind::StartsBuild)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_budget_holds_calls_back_until_it_answers_again() {
        let budget = Arc::new(MemoryBudget::default());
        budget.down.store(true, Ordering::SeqCst);
        let pacer = pacer(&budget, 10, Duration::from_secs(1), 1);
        let end = std::time::Instant::now() + Duration::from_secs(3);
        let result = crate::retry::within_budget(end, pacer.admit(CallKind::StartsBuild)).await;
        assert!(matches!(result, Err(Error::RateLimited { .. })), "{result:?}");
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.admit(CallKind::Idempotent).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiting.is_finished(), "no call passes while the budget cannot be reached");
        budget.down.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(3), waiting).await.unwrap().unwrap().unwrap();
    }
}
