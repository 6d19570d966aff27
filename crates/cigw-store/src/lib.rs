//! Persistence for cigw (DESIGN.md §5): the [`Store`] trait and its two sqlx backends, SQLite
//! (the embedded default) and PostgreSQL (several replicas), each with its own migrations.
//!
//! Callers hold an `Arc<dyn Store>` from [`open`]; no SQL or driver type crosses the trait. Run
//! state changes go through the core state machine ([`cigw_core::RunState::apply`]) and are
//! written together with their event, whose ids follow commit order on both backends.

use std::sync::Arc;

use cigw_core::config::DatabaseSettings;

mod columns;
pub mod error;
pub mod model;
mod ops;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use store::Store;

/// Options of [`open_with`] beyond the `[database]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// SQLite: let the writer task commit concurrent writes together (each caller still gets
    /// its answer only after its commit). Ignored by PostgreSQL.
    pub group_commit: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { group_commit: true }
    }
}

/// The backend a database URL selects, or an `Invalid` error naming `database.url`.
pub fn backend_of(url: &str) -> StoreResult<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Invalid {
            field: "database.url",
            message: format!("`{}` is not a `sqlite:` or `postgres://` URL", cigw_core::config::redact_url(url)),
        })
    }
}

/// Open the store the URL names, with group commit on. Creates a missing SQLite file but runs
/// no migration: call [`Store::migrate`].
pub async fn open(settings: &DatabaseSettings) -> StoreResult<Arc<dyn Store>> {
    open_with(settings, OpenOptions::default()).await
}

/// [`open`] with explicit options.
pub async fn open_with(settings: &DatabaseSettings, options: OpenOptions) -> StoreResult<Arc<dyn Store>> {
    Ok(match backend_of(&settings.url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(settings, options.group_commit).await?),
        Backend::Postgres => Arc::new(postgres::PgStore::open(settings).await?),
    })
}
