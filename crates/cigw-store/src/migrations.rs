//! Applying a backend's embedded migrations so that a rolling upgrade works: a replica still
//! running the previous version must keep starting after a newer replica migrated the database.
//!
//! sqlx refuses by default to run when the database holds a migration the binary does not know
//! (`VersionMissing`). Here those are accepted, because cigw's migrations stay additive for one
//! release (docs/deployment.md), and logged at each start. A known migration whose text changed is still
//! refused (`VersionMismatch`): that database was not made by these migrations.

use sqlx::migrate::{AppliedMigration, Migrate, Migrator};

use crate::error::{StoreError, StoreResult};

/// `migrator` (from `sqlx::migrate!`), set to accept migrations applied by a newer cigw.
pub(crate) fn tolerant(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// Run `migrator` through `acquire` (a pool), mapping its error.
pub(crate) async fn run<'a, A>(migrator: &Migrator, acquire: A) -> StoreResult<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: Migrate,
{
    migrator.run(acquire).await.map_err(|e| StoreError::Migration { source: Box::new(e) })
}

/// Log the migrations applied to the database (read on `conn`) that `migrator` does not know.
pub(crate) async fn report_unknown<C: Migrate>(migrator: &Migrator, conn: &mut C, describe: &str) -> StoreResult<()> {
    let applied = conn.list_applied_migrations().await.map_err(|e| StoreError::Migration { source: Box::new(e) })?;
    let unknown = unknown_versions(migrator, &applied);
    if let (Some(first), Some(latest)) = (unknown.first(), migrator.iter().map(|m| m.version).max()) {
        tracing::warn!(
            database = describe,
            unknown = ?unknown,
            known_up_to = latest,
            "the database schema is ahead of this cigw: migration {first} and later were applied by a newer \
             version; running on them, as migrations stay additive for one release (docs/deployment.md)"
        );
    }
    Ok(())
}

/// Versions applied to the database that `migrator` does not hold, oldest first.
fn unknown_versions(migrator: &Migrator, applied: &[AppliedMigration]) -> Vec<i64> {
    let mut unknown: Vec<i64> =
        applied.iter().map(|m| m.version).filter(|v| !migrator.iter().any(|m| m.version == *v)).collect();
    unknown.sort_unstable();
    unknown
}
