//! A durable consumer of run events: reads the event log after a named cursor, hands each page
//! to a handler that stores what it derives together with the cursor's new position (one
//! transaction), and follows new events as they are committed.
//!
//! Nothing is lost across restarts or crashes: the cursor only moves in the transaction that
//! stored the page's results, so a page is consumed again (idempotently, by the handler's unique
//! keys) when that transaction did not commit. Replicas may consume the same pages; the cursor
//! never moves back (`Store::enqueue_outbox`). `Store::events_after` never returns an event past
//! one still being committed (SQLite's single writer; PostgreSQL's visibility horizon), so a
//! page never skips an event that commits later with a smaller id.

use std::future::Future;
use std::time::Duration;

use cigw_store::{EventFilter, EventRecord, StoreResult};
use tokio::sync::watch;

use crate::state::AppState;

/// Events read at once.
pub const PAGE: u32 = 200;
/// Wait after a store error before reading again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// A named position in the run event log.
#[derive(Debug, Clone)]
pub struct EventFeed {
    name: String,
    position: i64,
}

impl EventFeed {
    /// The feed `name` at its stored position; the first time, at the newest event (events
    /// before the consumer existed are not consumed).
    pub async fn start(state: &AppState, name: &str) -> StoreResult<EventFeed> {
        let position = state.store.start_cursor(name).await?;
        Ok(EventFeed { name: name.to_string(), position })
    }

    /// The feed `name` at `position`, without touching the store (tests, and one-off reads
    /// from a known point).
    pub fn at(name: &str, position: i64) -> EventFeed {
        EventFeed { name: name.to_string(), position }
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the last event consumed.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The next page of events after the position (empty when there are none yet).
    pub async fn read(&self, state: &AppState) -> StoreResult<Vec<EventRecord>> {
        state.store.events_after(self.position, &EventFilter::default(), PAGE).await
    }

    /// Read one page and give it to `consume`, which must store its results and move the cursor
    /// to the page's last id in one transaction; then move the in-memory position. Returns how
    /// many events the page had.
    pub async fn step<F, Fut>(&mut self, state: &AppState, consume: &mut F) -> StoreResult<usize>
    where
        F: FnMut(String, Vec<EventRecord>) -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let page = self.read(state).await?;
        let Some(last) = page.last().map(|e| e.id) else { return Ok(0) };
        let n = page.len();
        consume(self.name.clone(), page).await?;
        self.position = last;
        Ok(n)
    }

    /// Consume pages until `shutdown` turns true: at once while pages are full, then after each
    /// event appended in this process or after `poll` (events of other replicas).
    pub async fn follow<F, Fut>(
        mut self,
        state: AppState,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
        mut consume: F,
    ) where
        F: FnMut(String, Vec<EventRecord>) -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let mut appended = state.events_appended.subscribe();
        while !*shutdown.borrow() {
            // Another replica may have consumed further: start from the stored cursor then.
            if let Ok(Some(stored)) = state.store.load_cursor(&self.name).await {
                self.position = self.position.max(stored);
            }
            match self.step(&state, &mut consume).await {
                Ok(n) if n as u32 >= PAGE => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = appended.changed() => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(feed = %self.name, error = %e, "reading run events failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }
}
