//! Persistence for cigw (DESIGN.md §5): the [`Store`] trait and its two sqlx backends, SQLite
//! (the embedded default) and PostgreSQL (several replicas), each with its own migrations.
//!
//! Callers hold an `Arc<dyn Store>`; no SQL or driver type crosses the trait. Run state changes
//! go through the core state machine ([`cigw_core::RunState::apply`]) and are written together
//! with their event, whose ids follow commit order on both backends.

pub mod error;
pub mod model;
pub mod store;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use store::Store;
