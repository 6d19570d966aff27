//! Simulators of the three provider APIs on one harness (controllable clock, fault injection,
//! request recording, build counting), the behaviour suite every adapter passes, and an
//! in-memory fake `CiTarget`. Used by tests, benchmarks and `cigw sandbox`.

#[cfg(feature = "proptest")]
pub mod arbitrary;
pub mod behaviour;
pub mod circleci;
pub mod codefresh;
pub mod codeship;
pub mod fake;
pub mod harness;
pub mod ledger;
pub mod receiver;
pub mod sandbox;

pub use harness::{
    BuildCounter, Fault, FaultConfig, FaultResponses, Faults, Harness, Listing, RecordedRequest, Recorder,
    ScriptedFault, SimClock, SimServer,
};
