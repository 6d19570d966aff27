//! CircleCI outbound webhooks: `circleci-signature` verification over the raw body and the typed
//! `workflow-completed` / `job-completed` payloads.

use chrono::{DateTime, Utc};
use cigw_core::provider::CallbackEvent;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use crate::slug::normalize_slug;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "circleci-signature";
/// The event-type header.
pub const EVENT_TYPE_HEADER: &str = "circleci-event-type";

/// Why a webhook was refused. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No secret is configured, so nothing can be verified.
    #[error("no webhook secret is configured for this account (set `webhook_secrets`)")]
    NoSecret,
    /// The signature header is missing.
    #[error("missing `circleci-signature` header")]
    MissingSignature,
    /// The header has no `v1=` signature.
    #[error("`circleci-signature` has no v1 signature")]
    NoV1,
    /// No `v1` signature matches any configured secret.
    #[error("`circleci-signature` does not match")]
    Mismatch,
    /// The body is not a CircleCI event.
    #[error("malformed webhook payload: {0}")]
    Payload(String),
}

/// `v1=<hex>` of `body` under `secret` (for simulators and tests).
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verify `header` (`v1=<hex>[,v1=<hex>…]`, other versions ignored) against every secret, in
/// constant time per comparison.
pub fn verify_signature(secrets: &[SecretString], header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let v1: Vec<Vec<u8>> = header
        .split(',')
        .filter_map(|part| part.trim().split_once('='))
        .filter(|(version, _)| version.trim() == "v1")
        .filter_map(|(_, sig)| hex::decode(sig.trim()).ok())
        .collect();
    if v1.is_empty() {
        return Err(WebhookError::NoV1);
    }
    for secret in secrets {
        for sig in &v1 {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
            mac.update(body);
            if mac.verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(WebhookError::Mismatch)
}

/// The event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    /// A workflow finished.
    WorkflowCompleted,
    /// A job finished.
    JobCompleted,
    /// Something else (the test ping, future events).
    Unknown(String),
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "workflow-completed" => Self::WorkflowCompleted,
            "job-completed" => Self::JobCompleted,
            other => Self::Unknown(other.to_string()),
        })
    }
}

impl EventType {
    /// CircleCI's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::WorkflowCompleted => "workflow-completed",
            Self::JobCompleted => "job-completed",
            Self::Unknown(s) => s,
        }
    }
}

/// `project` of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventProject {
    /// Project UUID.
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Slug as the webhook spells it (`github/…`).
    pub slug: Option<String>,
}

/// `pipeline` of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPipeline {
    /// Pipeline UUID: the cigw provider run id.
    pub id: String,
    /// Number.
    pub number: Option<u64>,
    /// Creation time.
    pub created_at: Option<DateTime<Utc>>,
}

/// `workflow` of an event (`status` only on `workflow-completed`).
#[derive(Debug, Clone, Deserialize)]
pub struct EventWorkflow {
    /// Workflow UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Final status.
    pub status: Option<String>,
    /// Link.
    pub url: Option<String>,
}

/// `job` of a `job-completed` event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventJob {
    /// Job UUID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Final status.
    pub status: Option<String>,
    /// Number.
    pub number: Option<u64>,
}

/// A webhook payload (open map: unknown fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    /// Event id: deliveries can repeat, dedupe on it.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened.
    pub happened_at: Option<DateTime<Utc>>,
    /// The project.
    pub project: Option<EventProject>,
    /// The pipeline.
    pub pipeline: Option<EventPipeline>,
    /// The workflow.
    pub workflow: Option<EventWorkflow>,
    /// The job (job events).
    pub job: Option<EventJob>,
}

impl WebhookEvent {
    /// Parse a (verified) body.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        serde_json::from_slice(body).map_err(|e| WebhookError::Payload(e.to_string()))
    }

    /// The project slug in the API's spelling (`gh/…`, `bb/…`).
    pub fn project_slug(&self) -> Option<String> {
        self.project.as_ref()?.slug.as_deref().map(normalize_slug)
    }

    /// What the gateway routes on; `None` for events about no pipeline (the test ping).
    pub fn callback(&self) -> Option<CallbackEvent> {
        let pipeline = self.pipeline.as_ref()?;
        Some(CallbackEvent {
            event_id: self.id.clone(),
            provider_run_id: pipeline.id.clone(),
            event_type: self.event_type.as_str().to_string(),
        })
    }
}

/// Verify then parse one delivery.
pub fn verify(
    secrets: &[SecretString],
    headers: &[(String, String)],
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    let header = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(SIGNATURE_HEADER)).map(|(_, v)| v.as_str());
    verify_signature(secrets, header, body)?;
    WebhookEvent::parse(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(s.to_string())).collect()
    }

    /// The vectors of CircleCI's webhook documentation.
    const VECTORS: [(&str, &str, &str); 4] = [
        ("hello world", "secret", "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a"),
        ("lalala", "another-secret", "daa220016c8f29a8b214fbfc3671aeec2145cfb1e6790184ffb38b6d0425fa00"),
        (
            "an-important-request-payload",
            "hunter123",
            "9be2242094a9a8c00c64306f382a7f9d691de910b4a266f67bd314ef18ac49fa",
        ),
        ("foo", "secret", "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"),
    ];

    #[test]
    fn documented_vectors_sign_and_verify() {
        for (body, secret, hex) in VECTORS {
            assert_eq!(sign_v1(secret, body.as_bytes()), format!("v1={hex}"));
            let header = format!("v1={hex}");
            assert_eq!(verify_signature(&secrets(&[secret]), Some(&header), body.as_bytes()), Ok(()));
            assert_eq!(
                verify_signature(&secrets(&["wrong"]), Some(&header), body.as_bytes()),
                Err(WebhookError::Mismatch)
            );
        }
    }

    #[test]
    fn any_configured_secret_and_any_v1_value_may_match() {
        let (body, secret, hex) = VECTORS[0];
        let header = format!("v1=00ff,v2=abcd, v1={hex}");
        assert_eq!(verify_signature(&secrets(&["old", secret]), Some(&header), body.as_bytes()), Ok(()));
    }

    #[test]
    fn each_bad_header_is_refused_on_its_own() {
        let s = secrets(&["secret"]);
        assert_eq!(verify_signature(&[], Some("v1=00"), b"x"), Err(WebhookError::NoSecret));
        assert_eq!(verify_signature(&s, None, b"x"), Err(WebhookError::MissingSignature));
        assert_eq!(verify_signature(&s, Some("v2=abcd"), b"x"), Err(WebhookError::NoV1));
        assert_eq!(verify_signature(&s, Some("v1=not-hex"), b"x"), Err(WebhookError::NoV1));
        assert_eq!(verify_signature(&s, Some(""), b"x"), Err(WebhookError::NoV1));
        let tampered = sign_v1("secret", b"hello world");
        assert_eq!(verify_signature(&s, Some(&tampered), b"hello world!"), Err(WebhookError::Mismatch));
    }

    #[test]
    fn documented_workflow_completed_payload() {
        let body = include_bytes!("../tests/resources/workflow-completed.json");
        let e = WebhookEvent::parse(body).unwrap();
        assert_eq!(e.event_type, EventType::WorkflowCompleted);
        assert_eq!(e.project_slug().as_deref(), Some("gh/circleci/webhook-service"));
        assert_eq!(e.workflow.as_ref().unwrap().status.as_deref(), Some("success"));
        let cb = e.callback().unwrap();
        assert_eq!(cb.event_id, "3888f21b-eaa7-38e3-8f3d-75a63bba8895");
        assert_eq!(cb.provider_run_id, "1285fe1d-d3a6-44fc-8886-8979558254c4");
        assert_eq!(cb.event_type, "workflow-completed");
    }

    #[test]
    fn a_ping_without_pipeline_routes_nowhere() {
        let e = WebhookEvent::parse(br#"{"id":"p1","type":"ping","happened_at":"2024-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(e.event_type, EventType::Unknown("ping".into()));
        assert!(e.callback().is_none());
        assert!(matches!(WebhookEvent::parse(b"{\"type\":1}"), Err(WebhookError::Payload(_))));
    }
}
