//! What every request handler and background task shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::Settings;
use cigw_store::Store;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::instrumented::InstrumentedTarget;
use crate::metrics::Metrics;
use crate::pacing::BacklogAge;

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
    /// The open `/v1/events` streams of this process, per token (capped by `[server]`).
    pub event_streams: Arc<StreamSlots>,
    /// How long the oldest run due for dispatch has waited, as the engine last measured it;
    /// intake slows down while it is over the limit (`pacing.rs`).
    pub backlog_age: Arc<BacklogAge>,
    /// A time the clock is pinned to (tests and simulations of signed timestamps), else none.
    pinned_clock: Arc<Mutex<Option<DateTime<Utc>>>>,
}

/// Counts open event streams in total and per token, so their number stays under
/// `server.max_event_streams` and `server.max_event_streams_per_token`.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsFull {
    /// The process has `max_event_streams` open.
    Total(usize),
    /// The token has `max_event_streams_per_token` open.
    PerToken(usize),
}

impl StreamSlots {
    /// Take a slot for one stream of `token_id`, unless a cap is reached.
    pub fn acquire(
        self: &Arc<Self>,
        token_id: &str,
        total: usize,
        per_token: usize,
    ) -> Result<StreamSlot, StreamsFull> {
        let mut open = self.open.lock();
        let (count, tokens) = &mut *open;
        if *count >= total {
            return Err(StreamsFull::Total(total));
        }
        let mine = tokens.entry(token_id.to_string()).or_default();
        if *mine >= per_token {
            return Err(StreamsFull::PerToken(per_token));
        }
        *mine += 1;
        *count += 1;
        Ok(StreamSlot { slots: self.clone(), token_id: token_id.to_string() })
    }

    /// Streams open now, in total.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    token_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        let (count, tokens) = &mut *open;
        *count = count.saturating_sub(1);
        if let Some(mine) = tokens.get_mut(&self.token_id) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                tokens.remove(&self.token_id);
            }
        }
    }
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
    /// on first use and wraps every target so provider calls are measured and traced. On a store
    /// shared by replicas (PostgreSQL) every account draws its rate limit from the budget they
    /// share.
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, settings: Settings) -> Self {
        if let Some(budget) = store.shared_budget() {
            for account in catalog.accounts.values() {
                account.share_budget(budget.clone());
            }
        }
        Self {
            store,
            catalog: Arc::new(InstrumentedTarget::wrap_catalog(catalog)),
            settings: Arc::new(settings),
            wake: Arc::new(Notify::new()),
            events_appended: Arc::new(watch::channel(0).0),
            closing: Arc::new(watch::channel(false).0),
            streams: StreamSettings::default(),
            metrics: Metrics::global(),
            event_streams: Arc::default(),
            backlog_age: Arc::default(),
            pinned_clock: Arc::default(),
        }
    }

    /// Pin the gateway's clock to `at` (`None` lets it follow the system clock again), for
    /// every clone of this state. For tests that replay signed deliveries with fixed timestamps.
    pub fn pin_clock(&self, at: Option<DateTime<Utc>>) {
        *self.pinned_clock.lock() = at;
    }

    /// The gateway's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.pinned_clock.lock().unwrap_or_else(Utc::now)
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
