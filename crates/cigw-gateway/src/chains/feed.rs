//! The durable consumer of run events that drives chains: an [`EventFeed`] on the cursor
//! `chains` whose pages are handled event by event, the cursor saved past the handled ones. A
//! store failure stops the page at that event, so it is read again; handling is idempotent, so
//! re-reading (after a crash, or on a second replica sharing the cursor) fires nothing twice.

use std::time::Duration;

use cigw_store::{EventRecord, StoreError};
use tokio::sync::watch;

use crate::event_feed::EventFeed;
use crate::state::AppState;

/// The cursor's name in the store.
pub const CURSOR: &str = "chains";
/// Longest wait between two reads without a wake-up (events appended by other replicas), and
/// between two looks for expired joins.
const IDLE: Duration = Duration::from_secs(1);

/// Handle `page`, saving the cursor past every event handled (all of them unless one hit a
/// store failure, which is then returned).
async fn consume(state: &AppState, cursor: &str, page: &[EventRecord]) -> Result<(), StoreError> {
    let mut handled = None;
    let mut failure = None;
    for event in page {
        match super::handle_event(state, event).await {
            Ok(_) => handled = Some(event.id),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(at) = handled {
        state.store.save_cursor(cursor, at).await?;
    }
    failure.map_or(Ok(()), Err)
}

/// Handle the next page of events after `after`; returns the new cursor (saved) and how many
/// events were read.
pub async fn step(state: &AppState, after: i64) -> Result<(i64, usize), StoreError> {
    let mut feed = EventFeed::at(CURSOR, after);
    let read = feed
        .step(state, &mut |name: String, page: Vec<EventRecord>| async move { consume(state, &name, &page).await })
        .await?;
    Ok((feed.position(), read))
}

/// Run the chain consumer, and the expiry of half-complete joins, until `shutdown` turns true
/// (nothing when no chain is configured).
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    if state.settings.chains.is_empty() {
        return;
    }
    // First start: at the end of the log, so enabling chains on a gateway with history does not
    // fire chains for old runs.
    let feed = loop {
        match EventFeed::start(&state, CURSOR).await {
            Ok(feed) => break feed,
            Err(e) => tracing::warn!(error = %e, "chains: reading the cursor failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(IDLE) => {}
            _ = shutdown.changed() => return,
        }
    };
    let follow = {
        let state = state.clone();
        feed.follow(state.clone(), IDLE, shutdown.clone(), move |name: String, page: Vec<EventRecord>| {
            let state = state.clone();
            async move { consume(&state, &name, &page).await }
        })
    };
    let expire = async {
        while !*shutdown.borrow() {
            if let Err(e) = super::expire_due_joins(&state).await {
                tracing::warn!(error = %e, "chains: expiring joins failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => {}
            }
        }
    };
    tokio::join!(follow, expire);
}
