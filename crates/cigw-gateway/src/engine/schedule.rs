//! When to poll a run next: soon after dispatch, then with gaps growing with the run's age up to
//! a cap, with jitter so runs started together do not poll together. Where the provider calls
//! back when a run ends, the callback tells the end and polls only show progress: the gaps grow
//! faster and further.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// How a run's polls are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// The first gap, and the shortest.
    pub(crate) initial: Duration,
    /// The longest gap.
    pub(crate) max: Duration,
    /// The gap as a multiple of the run's age.
    pub(crate) growth: f64,
}

/// Polling alone: a run of age `a` is read again after about 1.5 `a`, so a 10-minute build costs
/// about 15 reads with the default `poll_initial` (2 s) and `poll_max` (60 s).
const POLL_GROWTH: f64 = 1.5;
/// With callbacks: a run of age `a` is read again after about 8 `a`…
const CALLBACK_GROWTH: f64 = 8.0;
/// …and at least every 5 × `poll_max`, as a safety net for a lost or never-sent callback.
const CALLBACK_STRETCH: u32 = 5;

impl Pace {
    /// The pace for a run: `callbacks` when its account receives the provider's callbacks.
    pub(crate) fn new(initial: Duration, max: Duration, callbacks: bool) -> Self {
        let max = max.max(initial);
        if callbacks {
            Self { initial, max: max * CALLBACK_STRETCH, growth: CALLBACK_GROWTH }
        } else {
            Self { initial, max, growth: POLL_GROWTH }
        }
    }

    /// The gap before the next poll of a run that has existed for `age`.
    pub(crate) fn interval(&self, age: Duration) -> Duration {
        let base = age.mul_f64(self.growth).clamp(self.initial, self.max);
        let jitter = rand::rng().random_range(0.8..=1.2);
        base.mul_f64(jitter).min(self.max)
    }

    /// The next poll time for a run created at `since`.
    pub(crate) fn next_poll(&self, now: DateTime<Utc>, since: DateTime<Utc>) -> DateTime<Utc> {
        let age = (now - since).to_std().unwrap_or_default();
        now + cigw_core::time::span(self.interval(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn young_runs_poll_at_the_initial_interval() {
        let pace = Pace::new(2 * S, 60 * S, false);
        for _ in 0..100 {
            let d = pace.interval(Duration::ZERO);
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400), "{d:?}");
        }
    }

    #[test]
    fn older_runs_back_off_to_the_cap() {
        let pace = Pace::new(2 * S, 60 * S, false);
        for _ in 0..100 {
            let d = pace.interval(20 * S);
            assert!(d >= 24 * S && d <= 36 * S, "{d:?}");
            assert!(pace.interval(3600 * S) <= 60 * S);
        }
    }

    #[test]
    fn a_cap_below_the_initial_interval_is_raised_to_it() {
        assert!(Pace::new(5 * S, S, false).interval(3600 * S) <= 5 * S);
    }

    /// Reads of one run from its start until it ends at `end`, the last one seeing the end (or,
    /// with callbacks, the read the callback asks for).
    fn reads_until(pace: &Pace, end: Duration, callbacks: bool) -> u32 {
        let (mut age, mut reads) = (Duration::ZERO, 0);
        loop {
            let gap = pace.interval(age);
            reads += 1;
            if callbacks && age + gap >= end {
                return reads;
            }
            age += gap;
            if age >= end {
                return reads;
            }
        }
    }

    #[test]
    fn a_ten_minute_build_costs_about_fifteen_reads_polling_and_five_with_callbacks() {
        let (polling, calling) = (Pace::new(2 * S, 60 * S, false), Pace::new(2 * S, 60 * S, true));
        let n = 1000;
        let mean = |pace: &Pace, callbacks| {
            (0..n).map(|_| reads_until(pace, 600 * S, callbacks)).sum::<u32>() as f64 / n as f64
        };
        let (p, c) = (mean(&polling, false), mean(&calling, true));
        assert!((13.0..=15.5).contains(&p), "polling alone: {p} reads");
        assert!((4.0..=5.5).contains(&c), "with callbacks: {c} reads");
        // The safety net: without the callback a run is still read at least every 5 minutes.
        assert!(calling.interval(3600 * S) <= 300 * S);
    }
}
