//! `GET /v1/events`: every run event as Server-Sent Events, with `Last-Event-ID` replay.
//!
//! Each stream has a follower task that reads the append-only event log in pages after its
//! cursor, woken when this process appends events ([`AppState::notify_events`]) and otherwise
//! every `poll_interval` (events of other replicas). It feeds a bounded per-client buffer; a
//! client that leaves the buffer full for `slow_client_grace` is disconnected, so memory never
//! grows with a slow reader, and its reconnect with `Last-Event-ID` misses nothing because the
//! log, not the buffer, is the source of truth.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_store::{EventFilter, EventRecord};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::api::{LAST_EVENT_ID, X_ACCEL_BUFFERING, state_param};
use crate::auth::{AuthState, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::metrics::names;
use crate::state::{AppState, StreamSlot, StreamsFull};

/// `Retry-After` of a stream refused because the caps are reached.
const STREAMS_FULL_RETRY: Duration = Duration::from_secs(5);

/// One message of the stream: the event as `GET /v1/runs/{id}` lists it, plus its run, trigger
/// and target.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamEvent {
    /// Event id, increasing in commit order; also the SSE `id:`.
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// Its trigger.
    pub trigger_id: String,
    /// Its target.
    pub target: String,
    /// What happened (`created`, `dispatched`, `state_changed`, `cancel_requested`, …).
    pub kind: String,
    /// The run's state after it happened.
    pub state: String,
    /// Details; secret values masked.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<EventRecord> for StreamEvent {
    fn from(e: EventRecord) -> Self {
        Self {
            id: e.id,
            run_id: e.run_id,
            trigger_id: e.trigger_id,
            target: e.target,
            kind: e.kind.to_string(),
            state: e.state.to_string(),
            data: e.data,
            created_at: e.created_at,
        }
    }
}

/// Filters and start of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query for OpenAPI; the handler parses the pairs itself for precise errors
pub(crate) struct EventsQuery {
    /// Only events of this target.
    target: Option<String>,
    /// Only events of this trigger.
    trigger_id: Option<String>,
    /// Only events of this run.
    run_id: Option<String>,
    /// Only events leaving their run in this state.
    #[param(value_type = Option<cigw_core::RunState>)]
    state: Option<String>,
    /// Replay the events after this id (as the `Last-Event-ID` header, which wins when both are given).
    #[param(minimum = 0)]
    last_event_id: Option<i64>,
    /// Start after this event id; `0` replays the whole log. Without it (and without a last event
    /// id) the stream starts at the current end.
    #[param(minimum = 0)]
    from: Option<i64>,
}

/// Where a stream starts and what it carries.
#[derive(Debug)]
struct StreamRequest {
    filter: EventFilter,
    after: Option<i64>,
}

fn event_id(field: &str, value: &str) -> Result<i64, ApiError> {
    value.trim().parse::<i64>().ok().filter(|id| *id >= 0).ok_or_else(|| {
        ApiError::bad_field(field, format!("expected an event id (a non-negative integer), got `{value}`"))
    })
}

fn parse_stream_request(pairs: Vec<(String, String)>, headers: &HeaderMap) -> Result<StreamRequest, ApiError> {
    let mut filter = EventFilter::default();
    let (mut last_event_id, mut from) = (None, None);
    for (key, value) in pairs {
        match key.as_str() {
            "target" => filter.target = Some(value),
            "trigger_id" => filter.trigger_id = Some(value),
            "run_id" => filter.run_id = Some(value),
            "state" => filter.state = Some(state_param(&value)?),
            "last_event_id" => last_event_id = Some(event_id("last_event_id", &value)?),
            "from" => from = Some(event_id("from", &value)?),
            other => {
                return Err(ApiError::bad_field(
                    other,
                    "unknown query parameter (expected target, trigger_id, run_id, state, last_event_id or from)",
                ));
            }
        }
    }
    // A reconnecting EventSource sends the header; it is newer than the URL's parameters.
    let header = match headers.get(LAST_EVENT_ID) {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_field("Last-Event-ID", "expected an event id (a non-negative integer)"))?;
            Some(event_id("Last-Event-ID", text)?)
        }
        None => None,
    };
    Ok(StreamRequest { filter, after: header.or(last_event_id).or(from) })
}

/// A place for one more open stream of `owner` (a token id, or a watch link), or 429 when the
/// server or that owner (`who`, for the message) has its maximum open.
pub(crate) fn stream_slot(state: &AppState, owner: &str, who: &str) -> Result<StreamSlot, ApiError> {
    let server = &state.settings.server;
    state.event_streams.acquire(owner, server.max_event_streams, server.max_event_streams_per_token).map_err(|full| {
        let message = match full {
            StreamsFull::Total(n) => format!("the server has its maximum of {n} event streams open"),
            StreamsFull::PerToken(n) => format!("{who} has its maximum of {n} event streams open"),
        };
        ApiError::RateLimited { code: "too_many_streams", message, retry_after: Some(STREAMS_FULL_RETRY) }
    })
}

/// Follow run events as Server-Sent Events.
///
/// Each message has `id: <event id>` and `data: <StreamEvent JSON>` (no `event:` field, so a
/// browser's `onmessage` receives it). Idle streams get a `: keep-alive` comment every 15 s.
#[utoipa::path(get, path = "/v1/events", tag = "runs", security(("bearer" = [])), params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Replay the events after this id, then follow")),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "A stream of `id:` + `data:` messages, each data a StreamEvent"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody,
            description = "Too many open streams, for this token or in total (`code`: `too_many_streams`)")))]
pub async fn stream_events(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<AuthState>>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let Query(pairs) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let request = parse_stream_request(pairs, &headers)?;
    let slot = stream_slot(&state, &principal.token_id, &format!("token `{}`", principal.name))?;
    let start = match request.after {
        Some(id) => id,
        None => state.store.last_event_id().await?,
    };
    tracing::debug!(start, client = %principal.name, "event stream opened");
    let keep_alive = KeepAlive::new().interval(state.streams.keep_alive);
    let token = TokenWatch { principal, revocations: auth.revocations() };
    let stream = follow(state, request.filter, start, token, slot);
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    // Reverse proxies (nginx) must pass events through as they come.
    response.headers_mut().insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

/// Counts a connected client for as long as its stream exists.
struct ClientGauge;

impl ClientGauge {
    fn connect() -> Self {
        metrics::gauge!(names::SSE_CLIENTS).increment(1.0);
        Self
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!(names::SSE_CLIENTS).decrement(1.0);
    }
}

/// The stream of one client: its bounded buffer, fed by a follower task. The stream ends at
/// once (dropping what is buffered) when the follower stops: slow client, shutdown, store error,
/// or its token revoked or expired. It holds its `slot` for as long as it exists.
fn follow(
    state: AppState,
    filter: EventFilter,
    start: i64,
    token: TokenWatch,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel(state.streams.buffer.max(1));
    let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
    let gauge = ClientGauge::connect();
    tokio::spawn(async move {
        let reason = tokio::select! {
            reason = feed(&state, &filter, start, &tx) => reason,
            reason = token.invalidated(&state) => {
                tracing::info!(client = %token.principal.name, reason, "ending an event stream: its token is no longer valid");
                Some(reason)
            }
        };
        if let Some(reason) = reason {
            metrics::counter!(names::SSE_DISCONNECTS, "reason" => reason).increment(1);
        }
        drop(stopped_tx);
    });
    ReceiverStream::new(rx).take_until(stopped_rx).map(move |event| {
        let _held = (&gauge, &slot);
        Ok(event)
    })
}

/// The token a stream was opened with, watched so the stream ends when the token does.
struct TokenWatch {
    principal: Principal,
    revocations: watch::Receiver<u64>,
}

impl TokenWatch {
    /// Resolves when the token expires (`token_expired`) or is found revoked (`token_revoked`):
    /// checked at once when any replica revokes a token or ends a session (on PostgreSQL; on
    /// SQLite, this process), and every `server.stream_token_check` as a backstop.
    async fn invalidated(&self, state: &AppState) -> &'static str {
        let mut revocations = self.revocations.clone();
        let mut signal_alive = true;
        let expiry = self.principal.expires_at().map(|at| {
            let left = (at - state.now()).to_std().unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            tokio::select! {
                _ = tokio::time::sleep(state.settings.server.stream_token_check) => {}
                changed = revocations.changed(), if signal_alive => signal_alive = changed.is_ok(),
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    return "token_expired";
                }
            }
            match self.principal.still_valid(state).await {
                Ok(true) => {}
                Ok(false) if self.principal.expires_at().is_some_and(|at| at <= state.now()) => return "token_expired",
                Ok(false) => return "token_revoked",
                // The follower reads the same store and closes the stream itself if it stays down.
                Err(e) => tracing::warn!(error = %e, "checking an event stream's token failed"),
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Copy events after `cursor` into `tx` until the client goes away (`None`) or the server ends
/// the stream (`Some(reason)`).
async fn feed(
    state: &AppState,
    filter: &EventFilter,
    mut cursor: i64,
    tx: &mpsc::Sender<Event>,
) -> Option<&'static str> {
    let settings = &state.streams;
    let mut appended = state.events_appended.subscribe();
    let mut closing = state.closing.subscribe();
    loop {
        if *closing.borrow() {
            return Some("shutdown");
        }
        // Mark the wake-up seen before reading, so an append during the read wakes the next wait.
        appended.borrow_and_update();
        loop {
            let page = match state.store.events_after(cursor, filter, settings.page).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, cursor, "reading events for a stream failed; closing it");
                    return Some("store_error");
                }
            };
            let more = page.len() >= settings.page as usize;
            for record in page {
                cursor = record.id;
                let message = sse_message(record);
                match tx.try_send(message) {
                    Ok(()) => {}
                    Err(TrySendError::Closed(_)) => return None,
                    Err(TrySendError::Full(message)) => {
                        match tokio::time::timeout(settings.slow_client_grace, tx.send(message)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return None,
                            Err(_) => {
                                tracing::info!(
                                    cursor,
                                    buffer = settings.buffer,
                                    "event stream client too slow; disconnecting it (it resumes with Last-Event-ID)"
                                );
                                return Some("slow_client");
                            }
                        }
                    }
                }
            }
            if !more {
                break;
            }
        }
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    return Some("shutdown");
                }
            }
            _ = tokio::time::sleep(settings.poll_interval) => {}
            _ = closing.wait_for(|closing| *closing) => return Some("shutdown"),
            _ = tx.closed() => return None,
        }
    }
}

fn sse_message(record: EventRecord) -> Event {
    let id = record.id.to_string();
    let data = serde_json::to_string(&StreamEvent::from(record)).unwrap_or_else(|e| {
        // Serializing a JSON value with string keys cannot fail; keep the id so the stream goes on.
        tracing::error!(error = %e, "serializing a stream event failed");
        "{}".to_string()
    });
    Event::default().id(id).data(data)
}

#[cfg(test)]
mod tests {
    use cigw_core::RunState;

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_header_wins_over_the_query_and_the_query_over_from() {
        let mut headers = HeaderMap::new();
        let query = pairs(&[("last_event_id", "7"), ("from", "0")]);
        assert_eq!(parse_stream_request(query.clone(), &headers).unwrap().after, Some(7));
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static("12"));
        assert_eq!(parse_stream_request(query, &headers).unwrap().after, Some(12));
        assert_eq!(parse_stream_request(pairs(&[("from", "0")]), &HeaderMap::new()).unwrap().after, Some(0));
        assert_eq!(parse_stream_request(vec![], &HeaderMap::new()).unwrap().after, None);
    }

    #[test]
    fn filters_are_parsed_and_bad_values_name_their_field() {
        let query = pairs(&[("target", "web"), ("trigger_id", "t1"), ("run_id", "r1"), ("state", "failed")]);
        let request = parse_stream_request(query, &HeaderMap::new()).unwrap();
        assert_eq!(request.filter.target.as_deref(), Some("web"));
        assert_eq!(request.filter.trigger_id.as_deref(), Some("t1"));
        assert_eq!(request.filter.run_id.as_deref(), Some("r1"));
        assert_eq!(request.filter.state, Some(RunState::Failed));
        for (query, field) in [
            (pairs(&[("state", "green")]), "state"),
            (pairs(&[("from", "-1")]), "from"),
            (pairs(&[("last_event_id", "abc")]), "last_event_id"),
            (pairs(&[("color", "red")]), "color"),
        ] {
            let err = parse_stream_request(query, &HeaderMap::new()).unwrap_err();
            assert!(format!("{:?}", err.body()).contains(field), "{field}: {:?}", err.body());
        }
        let mut headers = HeaderMap::new();
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static("x"));
        let err = parse_stream_request(vec![], &headers).unwrap_err();
        assert!(format!("{:?}", err.body()).contains("Last-Event-ID"));
    }
}
