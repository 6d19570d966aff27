//! Signed `workflow-completed` webhooks, sent when a workflow reaches a final status.

use std::sync::Weak;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Shared;
use super::model::ts;

/// Deliveries to a workflow's receiver stop after this many failed attempts.
const MAX_ATTEMPTS: u32 = 5;
/// Statuses `workflow-completed` reports (`not_run` is never announced).
const ANNOUNCED: [&str; 5] = ["success", "failed", "error", "canceled", "unauthorized"];

/// `v1=<hex HMAC-SHA256 of body under secret>`, CircleCI's `circleci-signature`.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivery bookkeeping of one workflow's event.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The event id: the same on every redelivery (the receiver's dedupe key).
    pub(crate) event_id: String,
    /// Attempts so far.
    pub(crate) attempts: u32,
    /// Whether the receiver accepted one.
    pub(crate) delivered: bool,
}

/// The events due now: finished workflows not yet delivered (nor given up on).
fn due(shared: &Shared) -> Vec<(String, Value)> {
    let now = shared.harness.clock().now();
    let cfg = shared.config.lock().clone();
    let mut guard = shared.state.lock();
    let state = &mut *guard;
    let mut out = Vec::new();
    for &at in &state.unannounced {
        let w = &state.workflows[at];
        let phase = w.phase(now, &cfg);
        let Some(stopped_at) = phase.stopped_at.filter(|_| ANNOUNCED.contains(&phase.status)) else { continue };
        let Some(p) = state.pipelines.by_id(&w.pipeline_id) else { continue };
        let Some(project) = state.projects.iter().find(|pr| pr.slug == p.project_slug) else { continue };
        let pipeline_url = p.app_url(project);
        let mut vcs = json!({
            "provider_name": "github",
            "origin_repository_url": format!("https://github.com/{}", project.slug.split_once('/').map_or("", |x| x.1)),
            "revision": p.revision,
            "commit": {"subject": "Simulated change", "body": ""},
        });
        vcs["target_repository_url"] = vcs["origin_repository_url"].clone();
        if let Some(b) = &p.branch {
            vcs["branch"] = json!(b);
        }
        if let Some(t) = &p.tag {
            vcs["tag"] = json!(t);
        }
        let event_id = state
            .deliveries
            .entry(w.id.clone())
            .or_insert_with(|| Delivery { event_id: uuid::Uuid::new_v4().to_string(), attempts: 0, delivered: false })
            .event_id
            .clone();
        let body = json!({
            "id": event_id,
            "type": "workflow-completed",
            "happened_at": ts(stopped_at),
            "webhook": {"id": "6f3c7f5e-2d0a-4c59-8d8e-0d6f1b9a7c11", "name": "cigw simulator"},
            "project": {"id": project.id, "name": project.name(), "slug": project.webhook_slug()},
            "organization": {"id": project.organization_id, "name": project.slug.split('/').nth(1)},
            "workflow": {"id": w.id, "name": w.name, "created_at": ts(w.created_at), "stopped_at": ts(stopped_at),
                         "url": format!("{pipeline_url}/workflows/{}", w.id), "status": phase.status},
            "pipeline": {"id": p.id, "number": p.number, "created_at": ts(p.created_at),
                         "trigger": {"type": "api"}, "trigger_parameters": p.parameters, "vcs": vcs},
        });
        out.push((w.id.clone(), body));
    }
    out
}

/// A minimal `workflow-completed` event (one workflow `workflow_id` of pipeline `pipeline_id`
/// ended `status`), as a test hands it to a gateway directly; the simulator's own carry the
/// pipeline's whole record.
pub fn workflow_completed(event_id: &str, pipeline_id: &str, workflow_id: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event_id,
        "type": "workflow-completed",
        "happened_at": "2026-01-01T00:00:00Z",
        "webhook": {"id": "6f3c7f5e-2d0a-4c59-8d8e-0d6f1b9a7c11", "name": "test"},
        "project": {"id": "p", "name": "api", "slug": "github/acme/api"},
        "organization": {"id": "o", "name": "acme"},
        "workflow": {"id": workflow_id, "name": "build", "created_at": "2026-01-01T00:00:00Z",
                     "stopped_at": "2026-01-01T00:00:00Z", "url": "https://example.com", "status": status},
        "pipeline": {"id": pipeline_id, "number": 1, "created_at": "2026-01-01T00:00:00Z",
                     "trigger": {"type": "api"}, "trigger_parameters": {}, "vcs": {}},
    }))
    .expect("JSON")
}

/// Deliver every due event once; returns how many the receiver accepted (2xx).
pub(crate) async fn deliver_due(shared: &Shared) -> usize {
    let Some(target) = shared.config.lock().webhook.clone() else { return 0 };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a plain HTTP client");
    let mut accepted = 0;
    for (workflow_id, body) in due(shared) {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let result = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("user-agent", "CircleCI-Webhook/1.0")
            .header("circleci-event-type", "workflow-completed")
            .header("circleci-signature", sign_v1(&target.secret, &bytes))
            .body(bytes)
            .send()
            .await;
        let ok = matches!(&result, Ok(r) if r.status().is_success());
        if !ok {
            tracing::debug!(workflow = %workflow_id, result = ?result.map(|r| r.status()), "webhook not accepted");
        }
        let mut state = shared.state.lock();
        if let Some(d) = state.deliveries.get_mut(&workflow_id) {
            d.attempts += 1;
            d.delivered = ok;
            if (d.delivered || d.attempts >= MAX_ATTEMPTS)
                && let Some(at) = state.workflows.position_of(&workflow_id)
            {
                state.unannounced.remove(&at);
            }
        }
        accepted += usize::from(ok);
    }
    accepted
}

/// Look for finished workflows every `webhook_poll` (real time) while the simulator lives.
pub(crate) fn spawn_task(shared: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            let Some(s) = shared.upgrade() else { return };
            let poll = s.config.lock().webhook_poll;
            if s.config.lock().webhook.is_some() {
                deliver_due(&s).await;
            }
            drop(s);
            tokio::time::sleep(poll.max(Duration::from_millis(5))).await;
        }
    });
}
