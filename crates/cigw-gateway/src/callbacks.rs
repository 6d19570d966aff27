//! Provider callbacks (`POST /callbacks/{provider}/{account}`, e.g. CircleCI's signed
//! `workflow-completed` webhooks): verified by the account's adapter, deduplicated on the
//! provider's event id, and routed to the runs owning the provider build, which the tracker then
//! reads: at once, or, during a burst (each workflow of a pipeline calls back, often together),
//! `poll_initial` after its last read, so a burst costs one read per `poll_initial`. A callback
//! arriving while the run is being read makes it read again after that read.
//!
//! The callback itself never changes a run's state, even signed: it tells of one workflow, and
//! only a read tells whether the others (and any created since the last read: a rerun, the
//! continuation of a setup workflow) have ended too. Terminal states are final, so the one read
//! an ending costs is worth it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use cigw_core::{Error, ProviderKind};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Most attempts (reruns of one provider build) a callback is routed to.
const MAX_ATTEMPTS: u32 = 100;

/// Receive one callback.
pub async fn receive(
    State(state): State<AppState>,
    Path((provider, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let kind: ProviderKind = provider.parse().map_err(ApiError::not_found)?;
    let Some(acct) = state.catalog.accounts.get(&(kind, account.clone())) else {
        return Err(ApiError::not_found(format!("no {kind} account `{account}` is configured")));
    };
    let headers: Vec<(String, String)> =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))).collect();
    let event = match acct.verify_callback(&headers, &body) {
        Ok(Some(event)) => event,
        Ok(None) => return Ok((StatusCode::ACCEPTED, Json(json!({"status": "ignored"})))),
        Err(Error::Unsupported { .. }) => {
            return Err(ApiError::not_found(format!("{kind} sends no callbacks")));
        }
        Err(Error::Unauthenticated { message }) => return Err(ApiError::Unauthenticated { message }),
        Err(e) => return Err(ApiError::bad_request("invalid_callback", e.to_string())),
    };
    let now = state.now();
    let keep = cigw_core::time::span(state.settings.retention.deliveries);
    let source = format!("callback:{kind}:{account}");
    if !state.store.record_delivery(&source, &event.event_id, now, now + keep).await? {
        return Ok((StatusCode::OK, Json(json!({"status": "duplicate", "event_id": event.event_id}))));
    }
    let mut routed = Vec::new();
    let targets = state.catalog.targets.values().filter(|t| t.spec.provider == kind && t.spec.account == account);
    for target in targets {
        // Attempts of one provider build are numbered from 1 without gaps (reruns count up).
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(run_id) =
                state.store.provider_ref_owner(&target.spec.name, &event.provider_run_id, attempt).await?
            else {
                break;
            };
            // `None`: the run has ended (or is not tracked), nothing to read.
            if state.store.poll_soon(&run_id, now, state.settings.timings.poll_initial).await?.is_some() {
                routed.push(run_id);
            }
        }
    }
    if !routed.is_empty() {
        state.wake_engine();
    }
    tracing::info!(provider = %kind, account, event_id = event.event_id, event_type = event.event_type, runs = routed.len(), "callback received");
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted", "event_id": event.event_id, "runs": routed}))))
}
