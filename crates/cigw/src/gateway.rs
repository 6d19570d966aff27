//! Turning a loaded configuration into a running gateway (shared by `serve` and `sandbox`).

use anyhow::{Context, bail};
use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings, redact_url};
use cigw_gateway::state::AppState;

use crate::providers::factories;

/// Build the catalog, open and migrate the store, and assemble the gateway state.
/// Configuration errors are reported all at once.
pub(crate) async fn prepare(raw: serde_json::Value, quiet_warnings: bool) -> anyhow::Result<AppState> {
    let mut problems = Problems::default();
    let settings = Settings::from_raw(&raw, &mut problems);
    let catalog = Catalog::build(&settings, &factories(), &mut problems);
    if !quiet_warnings {
        for w in problems.warnings() {
            tracing::warn!("configuration: {w}");
        }
    }
    if problems.has_errors() {
        let list: Vec<String> = problems.errors().map(|e| format!("  {e}")).collect();
        bail!(
            "the configuration has {} problem(s):\n{}\n(run `cigw check-config` for details)",
            list.len(),
            list.join("\n")
        );
    }
    cigw_gateway::auth::resolve_admin_token(&settings).context("auth.admin_token")?;
    let store = open_store(&settings).await?;
    tracing::info!(
        database = %redact_url(&settings.database.url),
        accounts = catalog.accounts.len(),
        targets = catalog.targets.len(),
        "gateway ready"
    );
    Ok(AppState::new(store, catalog, settings))
}

/// Open the configured store and apply its migrations.
pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<std::sync::Arc<dyn cigw_store::Store>> {
    let url = redact_url(&settings.database.url);
    let store = cigw_store::open(&settings.database).await.with_context(|| format!("opening {url}"))?;
    store.migrate().await.with_context(|| format!("migrating {url}"))?;
    Ok(store)
}
