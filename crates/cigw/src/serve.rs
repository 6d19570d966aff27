//! `cigw serve` and `cigw migrate`.

use std::path::Path;

use anyhow::Context;
use cigw_core::config::{Problems, Settings, load_raw, redact_url};
use tokio::net::TcpListener;

use crate::gateway::{open_store, prepare};

/// Run the gateway until SIGTERM or SIGINT.
pub(crate) async fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let raw = load_raw(config).context("loading the configuration")?;
    let state = prepare(raw, false).await?;
    let listen = state.settings.server.listen.clone();
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "cigw listening");
    cigw_gateway::serve::serve(listener, state, cigw_gateway::serve::shutdown_signal()).await?;
    tracing::info!("cigw stopped");
    Ok(())
}

/// Apply the database migrations and exit.
pub(crate) async fn migrate(config: Option<&Path>) -> anyhow::Result<()> {
    let mut problems = Problems::default();
    let settings = Settings::load(config, &mut problems).context("loading the configuration")?;
    if let Some(e) = problems.errors().find(|p| p.path.starts_with("database")) {
        anyhow::bail!("{e}");
    }
    open_store(&settings).await?;
    println!("migrations applied to {}", redact_url(&settings.database.url));
    Ok(())
}
