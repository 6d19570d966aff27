//! The provider stand-in: the three simulators in their own process (so what the benchmark
//! measures of cigw is cigw's own cost), plus a small control API the benchmark reads:
//! where the simulators listen, when each build request arrived, and how many calls were made.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use cigw_sim::sandbox::SandboxProviders;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One build request as the provider saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Arrival {
    /// The cigw run id the request carried (the `cigw_run_id` pipeline parameter).
    pub(crate) run_id: String,
    /// Wall-clock arrival, Unix microseconds.
    pub(crate) at_us: i64,
}

/// Request counts so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Every request to any simulator.
    pub(crate) total: u64,
    /// Requests that start a build.
    pub(crate) triggers: u64,
    /// Requests by method and path, ids written `{id}` (`GET /api/v2/pipeline/{id}/workflow`).
    pub(crate) by_kind: std::collections::BTreeMap<String, u64>,
}

/// `GET /api/v2/pipeline/5b0c…/workflow` → `GET /api/v2/pipeline/{id}/workflow`.
fn kind(r: &cigw_sim::harness::RecordedRequest) -> String {
    let shape: Vec<&str> = r
        .path
        .split('/')
        .map(|seg| if seg.len() >= 16 && seg.chars().any(|c| c.is_ascii_digit()) { "{id}" } else { seg })
        .collect();
    format!("{} {}", r.method, shape.join("/"))
}

/// Run the simulators at `speed` with builds lasting `run_for` (simulated), and the control API
/// on 127.0.0.1:`control_port`, until killed.
pub(crate) async fn serve(speed: f64, run_for: Duration, control_port: u16) -> anyhow::Result<()> {
    let providers = Arc::new(SandboxProviders::start(speed, run_for).await?);
    let app = Router::new()
        .route("/overrides", get(overrides))
        .route("/arrivals", get(arrivals))
        .route("/counts", get(counts))
        .route("/webhook", post(webhook))
        .with_state(providers);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", control_port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn overrides(State(p): State<Arc<SandboxProviders>>) -> Json<Value> {
    Json(json!(p.base_url_overrides().into_iter().collect::<std::collections::BTreeMap<_, _>>()))
}

fn is_trigger(r: &cigw_sim::harness::RecordedRequest) -> bool {
    r.method == axum::http::Method::POST && (r.path.ends_with("/pipeline") || r.path.ends_with("/pipeline/run"))
}

async fn arrivals(State(p): State<Arc<SandboxProviders>>) -> Json<Vec<Arrival>> {
    let list = p
        .harness
        .recorder()
        .requests()
        .into_iter()
        .filter(is_trigger)
        .filter_map(|r| {
            let run_id = r.json()?.pointer("/parameters/cigw_run_id")?.as_str()?.to_string();
            Some(Arrival { run_id, at_us: r.received_at.timestamp_micros() })
        })
        .collect();
    Json(list)
}

async fn counts(State(p): State<Arc<SandboxProviders>>) -> Json<Counts> {
    let all = p.harness.recorder().requests();
    let triggers = all.iter().filter(|r| is_trigger(r)).count() as u64;
    let mut by_kind = std::collections::BTreeMap::new();
    for r in &all {
        *by_kind.entry(kind(r)).or_insert(0) += 1;
    }
    Json(Counts { total: all.len() as u64, triggers, by_kind })
}

#[derive(Deserialize)]
struct WebhookTarget {
    url: String,
}

async fn webhook(State(p): State<Arc<SandboxProviders>>, Json(target): Json<WebhookTarget>) -> Json<Value> {
    p.send_circleci_webhooks_to(target.url);
    Json(json!({"ok": true}))
}
