//! The shared harness every simulator runs on.

mod builds;
mod clock;
mod faults;
mod recorder;
mod server;

use std::sync::Arc;

pub use builds::BuildCounter;
pub use clock::SimClock;
pub use faults::{Fault, FaultConfig, FaultResponses, Faults, Listing, ScriptedFault, with_retry_after};
pub use recorder::{RecordedRequest, Recorder};
pub use server::SimServer;

/// Clock, faults, recorder and build counter shared by one or more simulators. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Harness {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    clock: SimClock,
    faults: Faults,
    recorder: Recorder,
    builds: BuildCounter,
}

impl Harness {
    /// A harness whose clock stands still until a test advances it.
    pub fn new() -> Self {
        Self::default()
    }

    /// A harness whose clock runs `speed` times faster than real time (the sandbox).
    pub fn running(speed: f64) -> Self {
        let h = Self::default();
        h.clock().set_speed(speed);
        h
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// Fault-injection knobs.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Every request the simulators received.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    /// Builds really started, per correlation value.
    pub fn builds(&self) -> &BuildCounter {
        &self.inner.builds
    }
}
