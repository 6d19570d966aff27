//! A clock simulators read instead of the system clock, so tests can move time by hand and the
//! sandbox can run it faster.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// Simulated time: `anchor_sim + (real time since anchor_real) × speed`, plus manual advances.
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Clone, Copy)]
struct ClockState {
    anchor_real: Instant,
    anchor_sim: DateTime<Utc>,
    speed: f64,
}

impl ClockState {
    fn now(&self) -> DateTime<Utc> {
        let real = self.anchor_real.elapsed().as_secs_f64() * self.speed;
        self.anchor_sim + chrono::Duration::microseconds((real * 1e6) as i64)
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::starting_at(Utc::now())
    }
}

impl SimClock {
    /// A stopped clock showing `at`.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self { state: Mutex::new(ClockState { anchor_real: Instant::now(), anchor_sim: at, speed: 0.0 }) }
    }

    /// The simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.lock().now()
    }

    /// Move simulated time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock();
        let now = s.now();
        s.anchor_sim = now + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        s.anchor_real = Instant::now();
    }

    /// Run at `speed` × real time from now on (0 stops the clock).
    pub fn set_speed(&self, speed: f64) {
        let mut s = self.state.lock();
        let now = s.now();
        *s = ClockState { anchor_real: Instant::now(), anchor_sim: now, speed: speed.max(0.0) };
    }

    /// The current speed.
    pub fn speed(&self) -> f64 {
        self.state.lock().speed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_clock_moves_only_when_advanced() {
        let c = SimClock::default();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now() - t0, chrono::Duration::seconds(90));
    }

    #[test]
    fn a_fast_clock_runs_ahead_of_real_time() {
        let c = SimClock::default();
        let t0 = c.now();
        c.set_speed(1000.0);
        std::thread::sleep(Duration::from_millis(20));
        let moved = c.now() - t0;
        assert!(moved >= chrono::Duration::seconds(19), "{moved}");
        c.set_speed(0.0);
        let t1 = c.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t1);
    }
}
