//! The one error of every store operation.

/// A boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// What went wrong in a store operation. Messages never contain parameter values or other
/// stored payloads, only ids and field names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `run 0192…`.
        what: String,
    },
    /// The operation conflicts with the stored state: a lost lease, a provider build already
    /// owned by another run, a terminal run, a duplicate name.
    #[error("conflict: {what}")]
    Conflict {
        /// What conflicts, in words.
        what: String,
    },
    /// The caller passed something the store cannot accept.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// The database cannot be reached or timed out; retrying later may succeed.
    #[error("database unavailable: {source}")]
    Unavailable {
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A stored value cannot be read back (a bad migration or a hand-edited row).
    #[error("stored data is malformed: {message}")]
    Corrupt {
        /// Which column of which row, and why.
        message: String,
    },
    /// Applying the migrations failed.
    #[error("migration failed: {source}")]
    Migration {
        /// The migrator's error.
        #[source]
        source: BoxError,
    },
    /// Any other database error.
    #[error("database error: {source}")]
    Database {
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// A `NotFound` for a run id.
    pub fn run_not_found(id: &str) -> Self {
        Self::NotFound { what: format!("run {id}") }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound { what: "row".into() },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable { source: Box::new(e) },
            sqlx::Error::Database(ref db) if is_transient(db.code().as_deref()) => {
                Self::Unavailable { source: Box::new(e) }
            }
            sqlx::Error::Migrate(m) => Self::Migration { source: m },
            other => Self::Database { source: Box::new(other) },
        }
    }
}

/// SQLite busy/locked and PostgreSQL serialization, deadlock, cancel (statement timeout),
/// shutdown and connection codes.
fn is_transient(code: Option<&str>) -> bool {
    matches!(code, Some("5" | "6" | "517" | "261" | "40001" | "40P01" | "57014" | "57P01" | "57P03" | "53300"))
        || code.is_some_and(|c| c.starts_with("08"))
}
