//! The HTTP client of one Codefresh account: base URL, API key, timeout, and the account-wide
//! rate limiter and concurrency limit shared by all its targets.

use std::fmt;
use std::sync::Arc;

use cigw_core::rate_limit::Budget;
use cigw_core::retry::{RetryPolicy, with_retry};
use cigw_core::{CallKind, Error, Result};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use crate::config::AccountSettings;
use crate::error::parse_error;

/// Sent as `User-Agent` on every request.
pub const USER_AGENT_VALUE: &str = concat!("cigw/", env!("CARGO_PKG_VERSION"));

/// A request body: JSON or none.
#[derive(Debug, Clone)]
enum Body {
    None,
    Json(serde_json::Value),
}

/// One request: method, path segments below the base URL (each percent-encoded as one
/// segment, so `project/pipeline` becomes `project%2Fpipeline`), query and body.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Call {
    pub(crate) fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Body::None,
        }
    }

    pub(crate) fn get(segments: &[&str]) -> Self {
        Self::new(Method::GET, segments)
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Body::Json(body);
        self
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// Decode the body as `T`; a body that does not parse is an unexpected answer.
    pub(crate) fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&self.body).chars().take(200).collect();
            Error::other(format!("unexpected Codefresh answer to {what}: {e} (body: {shown})"))
        })
    }

    /// A build id answered as a JSON string (`"65f0…"`), as `pipelines.run` and
    /// `workflows.restart` do; a bare id without quotes is accepted too.
    pub(crate) fn build_id(&self, what: &str) -> Result<String> {
        let id = match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Object(o)) => {
                o.get("id").or_else(|| o.get("workflowId")).and_then(|v| v.as_str()).unwrap_or_default().to_string()
            }
            _ => String::from_utf8_lossy(&self.body).trim().trim_matches('"').to_string(),
        };
        if id.is_empty() || id.chars().any(|c| !c.is_ascii_alphanumeric()) {
            let shown: String = String::from_utf8_lossy(&self.body).chars().take(200).collect();
            return Err(Error::other(format!("Codefresh answered {what} without a build id (body: {shown})")));
        }
        Ok(id)
    }
}

/// The HTTP client of one Codefresh account. `Debug` never shows the API key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    auth: SecretString,
    retry: RetryPolicy,
    limiter: Option<Arc<Budget>>,
    in_flight: Arc<Semaphore>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("auth", &"<redacted>")
            .field("retry", &self.retry)
            .field("rate_limited", &self.limiter.is_some())
            .field("in_flight_limit", &self.in_flight.available_permits())
            .finish()
    }
}

impl Client {
    /// A client for `settings`.
    pub fn new(settings: &AccountSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT_VALUE)
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: settings.base_url.clone(),
            auth: settings.api_key.clone(),
            retry: settings.retry.clone(),
            limiter: settings.rate_limit.map(|l| Arc::new(Budget::bursty(&l))),
            in_flight: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        })
    }

    /// The same client talking to `base_url` (tests point it at a mock server).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.base_url = base_url;
        self
    }

    /// The API base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The URL of `segments` below the base URL, keeping the base URL's own path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// The web app link of a build: the base URL without its `/api` suffix, then `/build/<id>`.
    pub fn build_link(&self, build_id: &str) -> String {
        let mut url = self.base_url.clone();
        let path = url.path().trim_end_matches('/');
        let app_path = path.strip_suffix("/api").unwrap_or(path).to_string();
        url.set_path(&app_path);
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            p.extend(["build", build_id]);
        }
        url.to_string()
    }

    /// Make `call`, retried by the rule for `kind`.
    pub(crate) async fn call(&self, kind: CallKind, operation: &'static str, call: Call) -> Result<Answer> {
        with_retry(&self.retry, kind, operation, || self.request(kind, operation, &call)).await
    }

    /// One attempt: wait for the account's budget, send, check the status.
    async fn request(&self, kind: CallKind, operation: &'static str, call: &Call) -> Result<Answer> {
        let _permit = cigw_core::retry::until_budget_end(self.in_flight.acquire())
            .await?
            .map_err(|_| Error::other("the account's client was shut down"))?;
        if let Some(limiter) = &self.limiter {
            limiter.admit(kind).await?;
        }
        let segments: Vec<&str> = call.segments.iter().map(String::as_str).collect();
        let url = self.url(&segments);
        let mut auth = HeaderValue::from_str(self.auth.expose_secret())
            .map_err(|_| Error::other("the Codefresh API key contains characters not allowed in a header"))?;
        auth.set_sensitive(true);
        let mut builder = self
            .http
            .request(call.method.clone(), url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .query(&call.query);
        for (name, value) in &call.headers {
            builder = builder.header(*name, value);
        }
        if let Body::Json(body) = &call.body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        log_rate_limit_headers(operation, &headers);
        let body = response.bytes().await.map_err(Error::maybe_sent)?.to_vec();
        if status.is_success() {
            return Ok(Answer { body });
        }
        if status.is_redirection() {
            return Err(Error::other(format!("Codefresh answered {status} (a redirect); check the base_url")));
        }
        let error = parse_error(status, &headers, &body, kind);
        tracing::debug!(operation, status = status.as_u16(), error = %error, "Codefresh refused the call");
        Err(error)
    }
}

/// Connect and DNS failures happen before anything is sent; anything later is ambiguous.
fn transport_error(e: reqwest::Error) -> Error {
    if e.is_connect() || e.is_builder() { Error::not_sent(e) } else { Error::maybe_sent(e) }
}

fn log_rate_limit_headers(operation: &str, headers: &HeaderMap) {
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("x-ratelimit") || n.starts_with("ratelimit") || n == "retry-after" {
            tracing::debug!(operation, header = n, value = value.to_str().unwrap_or("<binary>"), "rate-limit header");
        }
    }
}
