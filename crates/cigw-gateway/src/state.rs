//! What every request handler and background task shares.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::Settings;
use cigw_store::Store;
use tokio::sync::{Notify, watch};

use crate::metrics::{InstrumentedTarget, Metrics};

/// Shared state of one gateway process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Configured accounts and targets (every target wrapped in [`InstrumentedTarget`]).
    pub catalog: Arc<Catalog>,
    /// The loaded configuration.
    pub settings: Arc<Settings>,
    /// Wakes the dispatcher and tracker in this process right after a commit that gives them
    /// work (other replicas learn through the store's wake-ups and the periodic sweep).
    pub wake: Arc<Notify>,
    /// Bumped after this process appended run events, so event streams and long-polls read the
    /// store at once instead of at their next poll.
    pub events_appended: Arc<watch::Sender<u64>>,
    /// Turns true when the server starts shutting down: event streams and long-polls end.
    pub closing: Arc<watch::Sender<bool>>,
    /// Tuning of `GET /v1/events` and the `?wait=` long-poll.
    pub streams: StreamSettings,
    /// The Prometheus registry this process records into.
    pub metrics: Metrics,
}

/// Tuning of the live event stream and the long-poll. The defaults suit production; tests
/// shorten them.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Interval of the `: keep-alive` comments on an idle stream.
    pub keep_alive: Duration,
    /// How often a stream or long-poll reads the store without a wake-up (events appended by
    /// other replicas reach it this late at most).
    pub poll_interval: Duration,
    /// Events buffered per client; a client whose buffer stays full is disconnected.
    pub buffer: usize,
    /// How long a full buffer may stay full before its client is disconnected.
    pub slow_client_grace: Duration,
    /// Events read from the store at once.
    pub page: u32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            buffer: 256,
            slow_client_grace: Duration::from_secs(5),
            page: 500,
        }
    }
}

impl AppState {
    /// State over a store, a catalog and settings. Installs the process-wide metrics recorder
    /// on first use and wraps every target so provider calls are measured and traced.
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, settings: Settings) -> Self {
        Self {
            store,
            catalog: Arc::new(InstrumentedTarget::wrap_catalog(catalog)),
            settings: Arc::new(settings),
            wake: Arc::new(Notify::new()),
            events_appended: Arc::new(watch::channel(0).0),
            closing: Arc::new(watch::channel(false).0),
            streams: StreamSettings::default(),
            metrics: Metrics::global(),
        }
    }

    /// The gateway's clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// A configured target by name.
    pub fn target(&self, name: &str) -> Option<&ConfiguredTarget> {
        self.catalog.targets.get(name)
    }

    /// Wake the dispatcher and tracker. Callers do this right after a commit, which in the API
    /// always appended events too, so event streams are woken as well.
    pub fn wake_engine(&self) {
        self.wake.notify_one();
        self.notify_events();
    }

    /// Tell event streams and long-polls of this process that events were appended.
    pub fn notify_events(&self) {
        self.events_appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Start shutting down: event streams and long-polls finish.
    pub fn begin_closing(&self) {
        self.closing.send_replace(true);
    }
}
