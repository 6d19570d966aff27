//! A notification receiver for the sandbox and tests: accepts the gateway's signed CDEvents
//! (`POST /events`), checks their Standard Webhooks signature, logs one line per event and keeps
//! the latest ones for `GET /events`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Utc};
use cigw_core::signature::standard_webhooks as sw;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

/// The signing secret of the sandbox's notification (a sandbox value, like the simulators' own
/// credentials).
pub const SANDBOX_NOTIFICATION_SECRET: &str = "whsec_c2FuZGJveC1ub3RpZmljYXRpb24tc2VjcmV0";
/// How many events the receiver keeps.
pub const KEPT: usize = 100;

/// One event the receiver accepted.
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedEvent {
    /// Its `webhook-id`.
    pub id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The CDEvent.
    pub event: Value,
}

#[derive(Debug)]
struct Inner {
    keys: Vec<Vec<u8>>,
    events: Mutex<VecDeque<ReceivedEvent>>,
    refused: Mutex<u64>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct NotificationReceiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl NotificationReceiver {
    /// Listen on an ephemeral port of 127.0.0.1, accepting events signed by any of `secrets`
    /// (`whsec_…`).
    pub async fn start(secrets: &[&str]) -> std::io::Result<Self> {
        let keys = secrets
            .iter()
            .map(|s| sw::key(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let inner = Arc::new(Inner { keys, events: Mutex::new(VecDeque::new()), refused: Mutex::new(0) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route("/events", post(receive).get(list)).with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the notification receiver stopped");
            }
        });
        Ok(Self { addr, inner, task })
    }

    /// Where it listens (`http://127.0.0.1:PORT`); events go to `<url>/events`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kept events, oldest first.
    pub fn received(&self) -> Vec<ReceivedEvent> {
        self.inner.events.lock().iter().cloned().collect()
    }

    /// How many requests were refused (bad or missing signature).
    pub fn refused(&self) -> u64 {
        *self.inner.refused.lock()
    }
}

impl Drop for NotificationReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> (StatusCode, Json<Value>) {
    let checked = sw::verify(
        &inner.keys,
        header(&headers, sw::ID_HEADER),
        header(&headers, sw::TIMESTAMP_HEADER),
        header(&headers, sw::SIGNATURE_HEADER),
        &body,
        Utc::now().timestamp(),
        sw::DEFAULT_TOLERANCE_SECS,
    );
    if let Err(e) = checked {
        *inner.refused.lock() += 1;
        tracing::warn!(error = %e, "notification receiver: refused an event");
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": e.to_string()})));
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "the body is not JSON"})));
    };
    let text = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or("-").to_string();
    tracing::info!(
        r#type = %text("/context/type"),
        target = %text("/subject/content/pipelineName"),
        state = %text("/customData/cigw/state"),
        run_id = %text("/subject/id"),
        "notification receiver: signed CDEvent received"
    );
    let id = header(&headers, sw::ID_HEADER).unwrap_or_default().to_string();
    let mut events = inner.events.lock();
    if events.len() >= KEPT {
        events.pop_front();
    }
    events.push_back(ReceivedEvent { id, received_at: Utc::now(), event });
    (StatusCode::OK, Json(json!({"received": true})))
}

async fn list(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let events: Vec<ReceivedEvent> = inner.events.lock().iter().rev().cloned().collect();
    Json(json!({"events": events, "refused": *inner.refused.lock()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_signed_events_and_refuses_the_rest() {
        let rx = NotificationReceiver::start(&[SANDBOX_NOTIFICATION_SECRET]).await.unwrap();
        let http = reqwest::Client::new();
        let body = br#"{"context":{"type":"dev.cdevents.pipelinerun.queued.0.3.0"},"subject":{"id":"r1"}}"#;
        let now = Utc::now().timestamp();
        let key = sw::key(SANDBOX_NOTIFICATION_SECRET).unwrap();
        let send = |sig: String, ts: i64| {
            http.post(format!("{}/events", rx.url()))
                .header("webhook-id", "m1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body.to_vec())
                .send()
        };
        assert_eq!(send(sw::sign(&key, "m1", now, body), now).await.unwrap().status(), 200);
        assert_eq!(send("v1,AAAA".into(), now).await.unwrap().status(), 401);
        assert_eq!(send(sw::sign(&key, "m1", now - 3600, body), now - 3600).await.unwrap().status(), 401, "stale");
        let listed: Value = http.get(format!("{}/events", rx.url())).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["events"].as_array().unwrap().len(), 1);
        assert_eq!(listed["events"][0]["id"], "m1");
        assert_eq!(listed["refused"], 2);
        assert_eq!(rx.received().len(), 1);
    }
}
