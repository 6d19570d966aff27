//! Persistence for cigw (DESIGN.md §5): the [`Store`] trait and its two sqlx backends, SQLite
//! (the embedded default) and PostgreSQL (several replicas), each with its own migrations.
//!
//! Callers hold an `Arc<dyn Store>` from [`open`]; no SQL or driver type crosses the trait. Run
//! state changes go through the core state machine ([`cigw_core::RunState::apply`]) and are
//! written together with their event, whose ids follow commit order on both backends.
//!
//! Every query is written once: the `Store` is implemented once (`driver`) over the operations
//! (`ops`) and statements (`statements`, `query`) that run on a backend's `sql::Tx`; a backend
//! (`sqlite`, `postgres`) only opens connections, binds values and runs statements.

use std::sync::Arc;

use cigw_core::config::DatabaseSettings;

mod columns;
mod driver;
pub mod error;
mod migrations;
pub mod model;
mod ops;
pub mod postgres;
mod query;
mod records;
mod sql;
pub mod sqlite;
mod statements;
pub mod store;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use store::Store;

/// Options of [`open_with`] beyond the `[database]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// SQLite: let the writer thread commit concurrent writes together (each caller still gets
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

/// What the behaviour suite needs beyond the [`Store`] trait (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use cigw_core::config::DatabaseSettings;

    use crate::{Backend, HotQuery, StoreResult, backend_of, driver, postgres, sqlite};

    /// The plan the database chooses for one of the store's frequent queries, one line per
    /// step (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`), to check that it uses an index.
    pub async fn explain(settings: &DatabaseSettings, query: &HotQuery) -> StoreResult<Vec<String>> {
        match backend_of(&settings.url)? {
            Backend::Sqlite => driver::explain(&sqlite::SqliteStore::open(settings, false).await?, query).await,
            Backend::Postgres => driver::explain(&postgres::PgStore::open(settings).await?, query).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(backend_of("sqlite://cigw.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite:cigw.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(backend_of("postgresql://u@h/db").unwrap(), Backend::Postgres);
        let err = backend_of("mysql://root:hunter2@h/db").unwrap_err();
        assert!(matches!(err, StoreError::Invalid { field: "database.url", .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_and_never_shows_the_password() {
        let settings = DatabaseSettings {
            url: "postgres://cigw:hunter2@127.0.0.1:1/cigw".into(),
            statement_timeout: std::time::Duration::from_secs(1),
            ..DatabaseSettings::default()
        };
        let err = open(&settings).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_with_the_field_named() {
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
            let settings = DatabaseSettings { url: url.into(), ..DatabaseSettings::default() };
            let err = open(&settings).await.unwrap_err();
            assert!(matches!(err, StoreError::Invalid { field: "database.url", .. }), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn sqlite_describe_says_backend_and_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let settings = DatabaseSettings { url, ..DatabaseSettings::default() };
        let store = open_with(&settings, OpenOptions { group_commit: false }).await.unwrap();
        assert!(store.describe().starts_with("sqlite "), "{}", store.describe());
        assert!(store.describe().ends_with("(group commit off)"), "{}", store.describe());
        assert!(dir.path().join("x.db").exists(), "open creates the SQLite file");
        let short = DatabaseSettings { url: format!("sqlite:{}", dir.path().join("y.db").display()), ..settings };
        open(&short).await.unwrap();
        assert!(dir.path().join("y.db").exists(), "`sqlite:PATH` works too");
    }
}
