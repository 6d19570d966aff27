//! The `?wait=` long-poll of `GET /v1/runs/{id}`: answer once the run has finished, the wait is
//! over or the server shuts down, woken by this process's appends and otherwise every
//! `poll_interval` (appends of other replicas).

use std::time::Duration;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

/// Longest `?wait=` of `GET /v1/runs/{id}`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A long-poll answers this long before the server's request timeout would cut it.
const WAIT_MARGIN: Duration = Duration::from_secs(1);

/// The long-poll query of `GET /v1/runs/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds (0 to 60, fractions allowed) to wait for the run to finish before answering with
    /// its current state; the server answers a second before its own request timeout at the latest.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 60)]
    pub wait: Option<String>,
}

/// How long a `?wait=` value asks for, capped by the server's request timeout.
pub(crate) fn parse_wait(value: &str, state: &AppState) -> Result<Duration, ApiError> {
    let secs = value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(s));
    let Some(secs) = secs else {
        return Err(ApiError::bad_field(
            "wait",
            format!("expected a number of seconds from 0 to {}, got `{value}`", MAX_WAIT.as_secs()),
        ));
    };
    let limit = state.settings.server.request_timeout.saturating_sub(WAIT_MARGIN);
    Ok(Duration::from_secs_f64(secs).min(limit))
}

/// Wait until run `run_id` is terminal, `wait` has passed, or the server shuts down.
pub(crate) async fn wait_until_finished(state: &AppState, run_id: &str, wait: Duration) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut appended = state.events_appended.subscribe();
    let mut closing = state.closing.subscribe();
    loop {
        appended.borrow_and_update();
        if state.store.get_run(run_id).await?.state.is_terminal() || *closing.borrow() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let nap = state.streams.poll_interval.min(deadline - now);
        tokio::select! {
            _ = appended.changed() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    }
}
