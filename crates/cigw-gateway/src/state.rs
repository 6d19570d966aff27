//! What every request handler and background task shares.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::Settings;
use cigw_store::Store;
use tokio::sync::Notify;

/// Shared state of one gateway process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Configured accounts and targets.
    pub catalog: Arc<Catalog>,
    /// The loaded configuration.
    pub settings: Arc<Settings>,
    /// Wakes the dispatcher and tracker in this process right after a commit that gives them
    /// work (other replicas learn through the store's wake-ups and the periodic sweep).
    pub wake: Arc<Notify>,
}

impl AppState {
    /// State over a store, a catalog and settings.
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, settings: Settings) -> Self {
        Self { store, catalog: Arc::new(catalog), settings: Arc::new(settings), wake: Arc::new(Notify::new()) }
    }

    /// The gateway's clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// A configured target by name.
    pub fn target(&self, name: &str) -> Option<&ConfiguredTarget> {
        self.catalog.targets.get(name)
    }

    /// Wake the dispatcher and tracker.
    pub fn wake_engine(&self) {
        self.wake.notify_one();
    }
}
