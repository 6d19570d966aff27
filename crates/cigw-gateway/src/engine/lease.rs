//! Holding a claimed run's lease while work on it goes on: renewed every third of the lease,
//! and given up — with the work — no later than the moment the lease may have ended, even while a
//! renewal is still waiting for a slow store. From that moment another claimer may take the run
//! and count on nothing more being sent for it.

use std::future::Future;
use std::time::Duration;

use cigw_store::StoreResult;
use tokio::time::Instant;

/// Why a lease was given up: it ran out before a renewal could confirm it.
pub(super) const RAN_OUT: &str = "the lease ran out before it could be renewed";
/// Why a lease was given up: the store says another claimer has the run (or it was released).
pub(super) const LOST: &str = "the lease was lost";

/// Keep a lease of `lease` (of which `left` remains now) by calling `renew` every third of it;
/// `renew` extends the lease by `lease` from the moment it is called and says whether the run
/// was still ours. Returns why the lease was given up, at the latest when it may have ended: a
/// renewal only counts from the moment it was asked for, and one still running at that moment
/// is not waited for.
pub(super) async fn hold<F, R>(left: Duration, lease: Duration, mut renew: F) -> &'static str
where
    F: FnMut() -> R,
    R: Future<Output = StoreResult<bool>>,
{
    let every = (lease / 3).max(Duration::from_millis(10));
    let mut held_until = Instant::now() + left;
    let mut next = Instant::now() + every.min(left / 3);
    loop {
        tokio::time::sleep_until(next.min(held_until)).await;
        let asked = Instant::now();
        if asked >= held_until {
            return RAN_OUT;
        }
        // On a fixed cadence: a slow renewal does not push the next one back.
        next = asked + every;
        match tokio::time::timeout_at(held_until, renew()).await {
            Ok(Ok(true)) => held_until = asked + lease,
            Ok(Ok(false)) => return LOST,
            // Tried again on the cadence until the lease runs out.
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing a lease failed"),
            Err(_) => return RAN_OUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cigw_store::StoreError;

    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn a_lease_renewed_in_time_is_held() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let held = tokio::time::timeout(
            Duration::from_millis(59_500),
            hold(LEASE, LEASE, move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(true) }
            }),
        )
        .await;
        assert!(held.is_err(), "still held after a minute: {held:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 59, "one renewal a second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_gives_the_lease_up_when_it_ends() {
        let started = Instant::now();
        let why = hold(LEASE, LEASE, std::future::pending::<StoreResult<bool>>).await;
        assert_eq!(why, RAN_OUT);
        assert_eq!(started.elapsed(), LEASE, "not a moment after the lease (from the claim) ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_renewal_counts_from_when_it_was_asked_for() {
        // The first renewal, asked for at 1 s, answers yes at 2.4 s: the lease now ends at 4 s
        // (not 5.4 s). The next one, asked for at once, never answers.
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let why = hold(LEASE, LEASE, move || {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if !first {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(1400)).await;
                Ok(true)
            }
        })
        .await;
        assert_eq!((why, started.elapsed()), (RAN_OUT, Duration::from_secs(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_are_retried_until_the_lease_ends_and_a_lost_lease_ends_at_once() {
        let started = Instant::now();
        let why = hold(LEASE, LEASE, || async { Err(StoreError::Unavailable { source: "down".into() }) }).await;
        assert_eq!((why, started.elapsed()), (RAN_OUT, LEASE));
        let started = Instant::now();
        let why = hold(LEASE, LEASE, || async { Ok(false) }).await;
        assert_eq!((why, started.elapsed()), (LOST, Duration::from_secs(1)));
        // A task that starts late renews within what is left of its claim.
        let started = Instant::now();
        let why = hold(Duration::from_millis(300), LEASE, || async { Ok(false) }).await;
        assert_eq!((why, started.elapsed()), (LOST, Duration::from_millis(100)));
    }
}
