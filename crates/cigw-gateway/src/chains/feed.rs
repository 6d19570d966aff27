//! The durable consumer of run events that drives chains: read the events after the cursor
//! `chains`, handle each, then save the cursor past the handled ones. A store failure stops the
//! page at that event, so it is read again; nothing is skipped, and handling is idempotent, so
//! re-reading (after a crash, or on a second replica sharing the cursor) fires nothing twice.

use std::time::Duration;

use cigw_store::{EventFilter, StoreError};
use tokio::sync::watch;

use crate::state::AppState;

/// The cursor's name in the store.
pub const CURSOR: &str = "chains";
/// Events read per page.
const PAGE: u32 = 200;
/// Longest wait between two reads without a wake-up (events appended by other replicas).
const IDLE: Duration = Duration::from_secs(1);

/// Where a consumer starts: the saved cursor, else (first start) the end of the log, so
/// enabling chains on a gateway with history does not fire chains for old runs.
pub async fn start_cursor(state: &AppState) -> Result<i64, StoreError> {
    if let Some(at) = state.store.load_cursor(CURSOR).await? {
        return Ok(at);
    }
    let at = state.store.last_event_id().await?;
    state.store.save_cursor(CURSOR, at).await?;
    Ok(at)
}

/// Handle the next page of events after `after`; returns the new cursor (saved) and how many
/// events were read. Stops before an event whose handling hit a store failure.
pub async fn step(state: &AppState, after: i64) -> Result<(i64, usize), StoreError> {
    let events = state.store.events_after(after, &EventFilter::default(), PAGE).await?;
    let mut cursor = after;
    let mut failure = None;
    for event in &events {
        match super::handle_event(state, event).await {
            Ok(_) => cursor = event.id,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if cursor > after {
        state.store.save_cursor(CURSOR, cursor).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((cursor, events.len())),
    }
}

/// Run the chain consumer until `shutdown` turns true (nothing when no chain is configured).
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    if state.settings.chains.is_empty() {
        return;
    }
    let mut appended = state.events_appended.subscribe();
    let mut cursor = None;
    while !*shutdown.borrow() {
        let mut busy = false;
        let result = async {
            // Re-read the stored cursor each round: another replica may have moved it on.
            let after = match cursor {
                None => start_cursor(&state).await?,
                Some(mine) => state.store.load_cursor(CURSOR).await?.unwrap_or(mine).max(mine),
            };
            let (next, read) = step(&state, after).await?;
            cursor = Some(next);
            busy = read as u32 == PAGE;
            super::expire_due_joins(&state).await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "chains: reading run events failed; retrying");
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(IDLE) => {}
            _ = appended.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}
