//! Intake yields to dispatch under sustained overload. The engine measures how long the oldest
//! run due for dispatch (and held by no dispatcher of any replica) has waited; while that wait
//! is over `timings.backlog_age_limit`, each new trigger is answered later by a tenth of the
//! excess, at most [`MAX_WAIT`]. Callers that send as fast as they are answered then slow down
//! to the rate runs are sent at, so the backlog of unsent runs, and with it the time from a 202
//! to the provider, stays bounded instead of growing for as long as the overload lasts. Nothing
//! is refused: a trigger that waited is stored and answered 202 like any other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;

/// The longest a trigger is held back, however far dispatch is behind: when the dispatchers
/// are stuck (a store that stopped answering, every slot held by a hung provider), intake goes
/// on at this cost per request rather than stopping.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// How often the engine reads the backlog's age.
const MEASURE_EVERY: Duration = Duration::from_millis(100);

/// The last measured age of the dispatch backlog, shared by the engine and intake.
#[derive(Debug, Default)]
pub struct BacklogAge {
    micros: AtomicU64,
}

impl BacklogAge {
    /// The age last measured.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Record a measured age.
    pub fn set(&self, age: Duration) {
        self.micros.store(u64::try_from(age.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// How long a new trigger waits when the oldest due run has waited `age`: a tenth of what is
/// over `limit`, at most [`MAX_WAIT`]. Growing with the excess, so the wait settles where the
/// callers' rate meets the dispatchers' (a little above the limit) instead of swinging between
/// none and the most.
pub fn wait_for(age: Duration, limit: Duration) -> Duration {
    (age.saturating_sub(limit) / 10).min(MAX_WAIT)
}

/// Hold a new trigger back as the backlog's age asks (intake calls this after checking the
/// request and before storing it, so a caller that gives up meanwhile has stored nothing).
pub async fn yield_to_dispatch(state: &AppState) {
    let wait = wait_for(state.backlog_age.get(), state.settings.timings.backlog_age_limit);
    if !wait.is_zero() {
        crate::metrics::record_intake_paced();
        tokio::time::sleep(wait).await;
    }
}

/// Measure the backlog's age every [`MEASURE_EVERY`] until `shutdown` turns true or its sender
/// is gone (the engine runs this). A failed read keeps the last age: intake is neither stopped
/// nor let loose by a store that hiccups.
pub async fn measure(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(MEASURE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = every.tick() => {}
            changed = shutdown.changed() => match changed {
                Ok(()) => continue,
                // No one can ask for a stop any more: one turn of this loop per wake-up would spin.
                Err(_) => return,
            },
        }
        let now = state.now();
        match state.store.oldest_due_dispatch(now).await {
            Ok(oldest) => {
                let age = oldest.map_or(Duration::ZERO, |due| (now - due).to_std().unwrap_or_default());
                state.backlog_age.set(age);
                crate::metrics::record_backlog_age(age);
            }
            Err(e) => tracing::warn!(error = %e, "measuring the dispatch backlog failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    #[test]
    fn triggers_wait_a_tenth_of_the_excess_up_to_the_most() {
        let ms = Duration::from_millis;
        assert_eq!(wait_for(Duration::ZERO, LIMIT), Duration::ZERO);
        assert_eq!(wait_for(LIMIT, LIMIT), Duration::ZERO, "at the limit nothing waits");
        assert_eq!(wait_for(ms(1_050), LIMIT), ms(5));
        assert_eq!(wait_for(ms(3_000), LIMIT), ms(200));
        assert_eq!(wait_for(ms(11_000), LIMIT), MAX_WAIT);
        assert_eq!(wait_for(Duration::from_secs(3_600), LIMIT), MAX_WAIT, "stuck dispatchers cost a second");
        assert_eq!(wait_for(ms(40), Duration::ZERO), ms(4), "a zero limit paces any wait");
    }

    #[test]
    fn the_age_is_kept_to_the_microsecond() {
        let age = BacklogAge::default();
        assert_eq!(age.get(), Duration::ZERO);
        age.set(Duration::from_micros(1_234_567));
        assert_eq!(age.get(), Duration::from_micros(1_234_567));
        age.set(Duration::MAX);
        assert!(age.get() >= Duration::from_secs(u64::MAX / 1_000_000 - 1), "saturates instead of wrapping");
    }
}
