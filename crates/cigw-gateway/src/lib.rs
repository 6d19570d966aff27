//! The cigw service as a library (DESIGN.md §3–§4): the HTTP API, the dispatcher and tracker
//! that drive runs at the providers, provider callbacks, the live event stream, Prometheus
//! metrics and the OpenAPI document.
//!
//! `main` stays thin: it loads the configuration, opens the store and calls [`serve::serve`].

pub mod api;
pub mod auth;
pub mod callbacks;
pub mod chains;
pub mod engine;
pub mod error;
pub mod event_feed;
pub mod hooks;
pub mod instrumented;
pub mod intake;
mod links;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod pacing;
pub mod router;
pub mod schedules;
pub mod serve;
pub mod state;
pub mod ui;

pub use router::build_router;
