//! Watch links: how a build button follows the run it started although its token may only
//! trigger.
//!
//! Right after its `202`, the button asks `POST /ui/watch {"run_id"}` with the same token: the
//! gateway gives a link only for a run that token itself requested in the last few minutes. The
//! link (`/ui/watch/{run}?key=…`) is a random secret stored hashed with the run it opens; it
//! streams that one run's state as Server-Sent Events until the run ends or the link expires,
//! and reads nothing else. It carries no cigw token, so putting it in a URL (which an
//! `EventSource` needs) exposes nothing beyond that run's state.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cigw_store::{NewSession, RunRecord, SessionKind};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::api::ApiJson;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::{AppState, StreamSlot};
use crate::ui::{new_secret, secret_hash};

/// How long a watch link works.
pub const WATCH_TTL: Duration = Duration::from_secs(3600);
/// A link is given only for a run requested this recently.
pub const ISSUE_WINDOW: Duration = Duration::from_secs(600);

/// The body of `POST /ui/watch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// A run the token requested.
    pub run_id: String,
}

/// A watch link.
#[derive(Serialize)]
pub struct WatchLink {
    /// Relative URL of the run's state stream (open it with `EventSource`).
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for WatchLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.url.split_once('?').map_or(self.url.as_str(), |(path, _)| path);
        f.debug_struct("WatchLink")
            .field("url", &format!("{path}?key=[REDACTED]"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One message of a watch stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WatchedRun {
    /// Run id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub provider: String,
    /// Run state.
    pub state: String,
    /// Last message.
    pub message: Option<String>,
    /// The run at the provider, once known.
    pub provider_url: Option<String>,
    /// The run has ended; the stream ends after this message.
    pub finished: bool,
}

impl From<&RunRecord> for WatchedRun {
    fn from(run: &RunRecord) -> Self {
        Self {
            id: run.id.clone(),
            target: run.target.clone(),
            provider: run.provider.to_string(),
            state: run.state.to_string(),
            message: run.message.clone(),
            provider_url: run.provider_ref.as_ref().and_then(|r| r.url.clone()),
            finished: run.state.is_terminal(),
        }
    }
}

/// `POST /ui/watch`: a link to follow a run the calling token requested just now.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<WatchRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let ApiJson(WatchRequest { run_id }) = body?;
    let now = state.now();
    let not_yours = || ApiError::NotFound { message: format!("no run {run_id} requested by this token just now") };
    let run = match state.store.get_run(&run_id).await {
        Ok(run) => run,
        Err(cigw_store::StoreError::NotFound { .. }) => return Err(not_yours()),
        Err(e) => return Err(e.into()),
    };
    let recent = run.created_at > now - cigw_core::time::span(ISSUE_WINDOW);
    if run.requested_by != principal.name || !principal.may_trigger(&run.target) || !recent {
        return Err(not_yours());
    }
    let key = new_secret();
    let session = state
        .store
        .create_session(NewSession {
            hash: secret_hash(&key),
            kind: SessionKind::Watch,
            token_hash: None,
            run_id: Some(run.id.clone()),
            created_at: now,
            expires_at: now + cigw_core::time::span(WATCH_TTL),
        })
        .await?;
    let link = WatchLink { url: format!("/ui/watch/{}?key={key}", run.id), expires_at: session.expires_at };
    Ok((StatusCode::CREATED, axum::Json(link)).into_response())
}

/// The query of `GET /ui/watch/{run}`.
#[derive(Deserialize)]
pub struct WatchQuery {
    /// The link's secret.
    pub key: String,
}

impl std::fmt::Debug for WatchQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchQuery").field("key", &"[REDACTED]").finish()
    }
}

/// `GET /ui/watch/{run}?key=…`: the run's state as Server-Sent Events, one message per change,
/// ending after its final state.
pub async fn stream(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let refused = || ApiError::NotFound { message: "unknown or expired watch link".into() };
    let Query(WatchQuery { key }) = query.map_err(|_| refused())?;
    let session = state.store.find_session(&secret_hash(&key), state.now()).await?.ok_or_else(refused)?;
    if session.kind != SessionKind::Watch || session.run_id.as_deref() != Some(run_id.as_str()) {
        return Err(refused());
    }
    state.store.get_run(&run_id).await?;
    // Like /v1/events: a leaked link cannot open streams without bound.
    let slot = crate::api::events::stream_slot(&state, &format!("watch:{}", session.hash), "this watch link")?;
    let keep_alive = KeepAlive::new().interval(state.streams.keep_alive);
    Ok(Sse::new(follow(state, run_id, session.expires_at, slot)).keep_alive(keep_alive).into_response())
}

struct Follow {
    state: AppState,
    run_id: String,
    expires_at: DateTime<Utc>,
    last: Option<WatchedRun>,
    appended: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// Held while the stream is open.
    _slot: StreamSlot,
}

fn follow(
    state: AppState,
    run_id: String,
    expires_at: DateTime<Utc>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let appended = state.events_appended.subscribe();
    let closing = state.closing.subscribe();
    let start = Follow { state, run_id, expires_at, last: None, appended, closing, _slot: slot };
    futures::stream::unfold(Some(start), |follow| async move {
        let mut f = follow?;
        loop {
            if *f.closing.borrow() || f.state.now() >= f.expires_at {
                return None;
            }
            let run = f.state.store.get_run(&f.run_id).await.ok()?;
            let seen = WatchedRun::from(&run);
            if f.last.as_ref() != Some(&seen) {
                let event = Event::default().json_data(&seen).ok()?;
                let finished = seen.finished;
                f.last = Some(seen);
                return Some((Ok(event), (!finished).then_some(f)));
            }
            let poll = f.state.streams.poll_interval;
            tokio::select! {
                _ = f.appended.changed() => {}
                _ = f.closing.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    })
}
