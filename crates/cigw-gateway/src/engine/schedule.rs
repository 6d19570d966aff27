//! When to poll a run next: soon after dispatch, then with gaps growing with the run's age up to
//! a cap, with jitter below the cap so runs started together do not poll together. Where the
//! provider calls back when a run ends, the callback tells the end and polls only show progress:
//! the first waits until the provider has normally set the run up, and the gaps grow faster and
//! further.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// How a run's polls are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// The gap between dispatch and the first poll.
    pub(crate) first: Duration,
    /// The shortest gap.
    pub(crate) initial: Duration,
    /// The longest gap.
    pub(crate) max: Duration,
    /// The gap as a multiple of the run's age.
    pub(crate) growth: f64,
}

/// Polling alone: a run of age `a` is read again after about 2 `a`, so a build that ends 10
/// minutes after its trigger costs about 13 reads with the default `poll_initial` (2 s) and
/// `poll_max` (60 s), and one that queues for 100 s first about 14.
const POLL_GROWTH: f64 = 2.0;
/// Polling alone, the first read comes 3 × `poll_initial` (6 s by default) after dispatch: a
/// provider has normally set the build up by then (a CircleCI pipeline lists its workflows once
/// its config is processed, seconds after the trigger), so that read shows where the build is,
/// where an earlier one would only show it being set up and, on CircleCI, cost a pipeline read too.
const POLL_FIRST: u32 = 3;
/// With callbacks: a run of age `a` is read again after about 8 `a`…
const CALLBACK_GROWTH: f64 = 8.0;
/// …and at least every 5 × `poll_max`, as a safety net for a lost or never-sent callback.
const CALLBACK_STRETCH: u32 = 5;
/// With callbacks, the first poll comes 8 × `poll_initial` (16 s by default) after dispatch:
/// by then a CircleCI pipeline has normally processed its config (clients wait 2–5 s before
/// listing workflows), so that one read finds the config error or the workflows, which an
/// earlier read would only show as still being set up. A config error is the one end no
/// callback announces.
const CALLBACK_FIRST: u32 = 8;

impl Pace {
    /// The pace for a run: `callbacks` when its account receives the provider's callbacks.
    pub(crate) fn new(initial: Duration, max: Duration, callbacks: bool) -> Self {
        let max = max.max(initial);
        if callbacks {
            let max = max * CALLBACK_STRETCH;
            Self { first: (initial * CALLBACK_FIRST).min(max), initial, max, growth: CALLBACK_GROWTH }
        } else {
            Self { first: (initial * POLL_FIRST).min(max), initial, max, growth: POLL_GROWTH }
        }
    }

    /// The gap before the next poll of a run that has existed for `age`. Below the cap the gap
    /// varies by ±20 %, which spreads the reads of runs started together; at the cap it is the
    /// cap itself, as spread as the reads before it were (jittered there, it would average 5 %
    /// under the cap: that many more reads of every long build).
    pub(crate) fn interval(&self, age: Duration) -> Duration {
        let base = age.mul_f64(self.growth).clamp(self.initial, self.max);
        if base >= self.max {
            return self.max;
        }
        let jitter = rand::rng().random_range(0.8..=1.2);
        base.mul_f64(jitter).min(self.max)
    }

    /// The first poll time of a run dispatched at `now`.
    pub(crate) fn first_poll(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + cigw_core::time::span(self.first)
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
            let d = pace.interval(10 * S);
            assert!(d >= 16 * S && d <= 24 * S, "{d:?}");
            assert_eq!(pace.interval(3600 * S), 60 * S);
        }
    }

    #[test]
    fn runs_started_together_read_apart_before_the_cap() {
        let pace = Pace::new(2 * S, 60 * S, false);
        let gaps: std::collections::BTreeSet<Duration> = (0..50).map(|_| pace.interval(10 * S)).collect();
        assert!(gaps.len() > 10, "the gaps of runs of one age should differ: {gaps:?}");
    }

    #[test]
    fn a_cap_below_the_initial_interval_is_raised_to_it() {
        assert!(Pace::new(5 * S, S, false).interval(3600 * S) <= 5 * S);
    }

    #[test]
    fn with_callbacks_the_first_poll_waits_for_the_config_to_be_processed() {
        assert_eq!(Pace::new(2 * S, 60 * S, false).first, 6 * S);
        assert_eq!(Pace::new(30 * S, 60 * S, false).first, 60 * S);
        assert_eq!(Pace::new(2 * S, 60 * S, true).first, 16 * S);
        // Never later than the safety net allows.
        assert_eq!(Pace::new(40 * S, 60 * S, true).first, 300 * S);
    }

    /// Reads of one run from its dispatch until it ends at `end`: the last one sees the end, or,
    /// with callbacks, is the read the callback asks for.
    fn reads_until(pace: &Pace, end: Duration, callbacks: bool) -> u32 {
        let (mut age, mut reads) = (pace.first, 0);
        loop {
            if callbacks && age >= end {
                return reads + 1;
            }
            reads += 1;
            if age >= end {
                return reads;
            }
            age += pace.interval(age);
        }
    }

    #[test]
    fn a_ten_minute_build_costs_about_thirteen_reads_polling_and_four_with_callbacks() {
        let (polling, calling) = (Pace::new(2 * S, 60 * S, false), Pace::new(2 * S, 60 * S, true));
        let n = 1000;
        let runs = |pace: &Pace, end: Duration, callbacks| -> Vec<u32> {
            (0..n).map(|_| reads_until(pace, end, callbacks)).collect()
        };
        let mean = |reads: &[u32]| reads.iter().sum::<u32>() as f64 / reads.len() as f64;
        let p = runs(&polling, 600 * S, false);
        assert!((12.0..=14.0).contains(&mean(&p)), "polling alone: {} reads", mean(&p));
        // The benchmark's build: queued for 100 s, then ten minutes of jobs.
        let p = runs(&polling, 705 * S, false);
        assert!((13.0..=14.5).contains(&mean(&p)), "polling alone, queued first: {} reads", mean(&p));
        let c = runs(&calling, 600 * S, true);
        assert!((3.5..=4.5).contains(&mean(&c)), "with callbacks: {} reads", mean(&c));
        assert!(c.iter().all(|r| *r <= 5), "with callbacks: {c:?}");
        // Ten minutes of jobs after as much queueing as the benchmark's stand-in does.
        let c = runs(&calling, 705 * S, true);
        assert!(c.iter().all(|r| *r <= 5), "with callbacks, queued first: {c:?}");
    }

    #[test]
    fn with_callbacks_a_run_is_still_read_at_least_every_five_poll_max() {
        // The safety net for a lost callback: whatever the run's age, the next read comes within
        // 5 × `poll_max`, so the end of a run whose callback never comes is seen that late at most.
        let calling = Pace::new(2 * S, 60 * S, true);
        for age in [0, 1, 16, 100, 600, 3600, 86_400] {
            for _ in 0..100 {
                assert!(calling.interval(age * S) <= 300 * S, "age {age} s");
            }
        }
        assert!(calling.first <= 300 * S);
    }
}
