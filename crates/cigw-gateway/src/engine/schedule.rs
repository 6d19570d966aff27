//! When to poll a run next: soon after dispatch, backing off with the run's age to a cap, with
//! jitter so runs started together do not poll together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// The gap before the next poll of a run that has existed for `age`.
pub(crate) fn poll_interval(age: Duration, initial: Duration, max: Duration) -> Duration {
    let base = (age / 4).clamp(initial, max.max(initial));
    let jitter = rand::rng().random_range(0.8..=1.2);
    base.mul_f64(jitter).min(max.max(initial))
}

/// The next poll time for a run created at `since`.
pub(crate) fn next_poll(now: DateTime<Utc>, since: DateTime<Utc>, initial: Duration, max: Duration) -> DateTime<Utc> {
    let age = (now - since).to_std().unwrap_or_default();
    now + cigw_core::time::span(poll_interval(age, initial, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn young_runs_poll_at_the_initial_interval() {
        for _ in 0..100 {
            let d = poll_interval(Duration::ZERO, 2 * S, 60 * S);
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400), "{d:?}");
        }
    }

    #[test]
    fn older_runs_back_off_to_the_cap() {
        for _ in 0..100 {
            let d = poll_interval(80 * S, 2 * S, 60 * S);
            assert!(d >= 16 * S && d <= 24 * S, "{d:?}");
            assert!(poll_interval(3600 * S, 2 * S, 60 * S) <= 60 * S);
        }
    }

    #[test]
    fn a_cap_below_the_initial_interval_is_raised_to_it() {
        assert!(poll_interval(3600 * S, 5 * S, S) <= 5 * S);
    }
}
