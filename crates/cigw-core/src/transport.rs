//! The HTTP transport every adapter sends through (feature `transport`): the eight transport keys
//! of an account table, resolved into one [`TransportConfig`], and one [`Transport`] that waits
//! for the account's rate limiter and a concurrency permit, sends with a sensitive credential,
//! reads `Date` and the reason phrase, maps transport errors (`NotSent` or `MaybeSent`, without
//! the URL) and retries by the [`CallKind`] rule.
//!
//! What stays in each adapter: its credential, its error-body parsing (`parse_error`), its
//! pagination and anything else only its provider does.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use crate::config::{Problems, join};
use crate::rate_limit::{Budget, RateLimit};
use crate::retry::{RetryPolicy, until_budget_end, with_retry};
use crate::shared_budget::{BudgetKey, SharedBudget, SharedPacer};
use crate::{CallKind, Error, Result};

/// Sent as `User-Agent` on every request.
pub const USER_AGENT: &str = concat!("cigw/", env!("CARGO_PKG_VERSION"));

/// The keys of an account table the transport reads; the adapter's own table holds the rest.
pub const KEYS: [&str; 8] = [
    "base_url",
    "timeout",
    "rate_limit",
    "concurrency",
    "max_retries",
    "retry_min_delay",
    "retry_max_delay",
    "retry_deadline",
];

/// Path segments are encoded down to the unreserved characters, so `project/pipeline` is one
/// segment (`project%2Fpipeline`) and no id can change the path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encode one path segment.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The transport keys as written.
#[derive(Debug, Default, Deserialize)]
struct RawTransport {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    rate_limit: Option<String>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    max_retries: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    retry_min_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_max_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_deadline: Option<Duration>,
}

/// A provider's defaults for the transport keys.
#[derive(Debug, Clone)]
pub struct TransportDefaults {
    /// The provider's public API.
    pub base_url: &'static str,
    /// Time limit of one HTTP request.
    pub timeout: Duration,
    /// Request budget of an account, when the provider documents one.
    pub rate_limit: Option<RateLimit>,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Retry policy of every call.
    pub retry: RetryPolicy,
}

/// The resolved transport settings of one account.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The API root; its own path is kept when segments are joined.
    pub base_url: Url,
    /// Time limit of one HTTP request.
    pub timeout: Duration,
    /// Outbound request budget shared by the account's targets.
    pub rate_limit: Option<RateLimit>,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Retry policy of every call.
    pub retry: RetryPolicy,
}

impl TransportConfig {
    /// The defaults (their base URL must parse).
    pub fn new(defaults: &TransportDefaults) -> Self {
        Self {
            base_url: Url::parse(defaults.base_url).expect("a provider's default base URL parses"),
            timeout: defaults.timeout,
            rate_limit: defaults.rate_limit,
            concurrency: defaults.concurrency,
            retry: defaults.retry.clone(),
        }
    }

    /// Read the transport keys of the account table `table` (at key path `path`), recording
    /// every problem at its key. Returns the rest of the table, for the adapter's own keys, and
    /// the settings when the keys are valid.
    ///
    /// The keys are split off rather than `#[serde(flatten)]`ed: unknown-key detection and error
    /// paths (`Problems::parse`) do not see through `flatten`.
    pub fn parse(
        path: &str,
        table: &serde_json::Value,
        defaults: &TransportDefaults,
        problems: &mut Problems,
    ) -> (serde_json::Value, Option<Self>) {
        let Some(object) = table.as_object() else { return (table.clone(), None) };
        let (keys, rest): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
            object.clone().into_iter().partition(|(k, _)| KEYS.contains(&k.as_str()));
        let rest = serde_json::Value::Object(rest);
        let before = problems.errors().count();
        let Some(raw) = problems.parse::<RawTransport>(path, &serde_json::Value::Object(keys)) else {
            return (rest, None);
        };
        let base_url = parse_base_url(raw.base_url.as_deref().unwrap_or(defaults.base_url))
            .map_err(|e| problems.error(join(path, "base_url"), e))
            .ok();
        let timeout = raw.timeout.unwrap_or(defaults.timeout);
        if timeout.is_zero() {
            problems.error(join(path, "timeout"), "expected a duration above zero, e.g. \"30s\"");
        }
        let rate_limit = match raw.rate_limit.as_deref() {
            Some(text) => RateLimit::parse(text).map_err(|e| problems.error(join(path, "rate_limit"), e)).ok(),
            None => defaults.rate_limit,
        };
        let concurrency = raw.concurrency.unwrap_or(defaults.concurrency);
        if concurrency == 0 {
            problems.error(join(path, "concurrency"), "expected at least 1 in-flight request");
        }
        let retry = RetryPolicy {
            min_delay: raw.retry_min_delay.unwrap_or(defaults.retry.min_delay),
            max_delay: raw.retry_max_delay.unwrap_or(defaults.retry.max_delay),
            max_retries: raw.max_retries.unwrap_or(defaults.retry.max_retries),
            deadline: raw.retry_deadline.unwrap_or(defaults.retry.deadline),
        };
        if retry.min_delay > retry.max_delay {
            problems.error(join(path, "retry_min_delay"), "must not be larger than retry_max_delay");
        }
        if problems.errors().count() > before {
            return (rest, None);
        }
        (rest, base_url.map(|base_url| Self { base_url, timeout, rate_limit, concurrency, retry }))
    }
}

/// Parse a base URL: http or https with a host, no query or fragment, no credentials.
pub fn parse_base_url(text: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("expected an http(s) URL, got `{text}` ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("expected an http or https URL, got scheme `{}`", url.scheme()));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("expected an http(s) URL with a host, got `{text}`"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use the account's credential keys".into());
    }
    Ok(url)
}

/// How the account's rate limiter spends its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Bursts up to the whole budget.
    Bursty,
    /// Evenly spaced: every window stays within the budget whatever its boundaries.
    Smooth,
}

/// A credential header; its value is marked sensitive and never shown by `Debug`.
#[derive(Clone)]
pub struct Credential {
    name: HeaderName,
    value: HeaderValue,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

impl Credential {
    /// `<name>: <secret>`.
    pub fn header(name: HeaderName, secret: &SecretString) -> Result<Self> {
        Self::sensitive(name, secret.expose_secret())
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &SecretString) -> Result<Self> {
        Self::sensitive(AUTHORIZATION, &format!("Bearer {}", token.expose_secret()))
    }

    /// `Authorization: Basic <user:password>`.
    pub fn basic(user: &SecretString, password: &SecretString) -> Result<Self> {
        let pair = format!("{}:{}", user.expose_secret(), password.expose_secret());
        Self::sensitive(AUTHORIZATION, &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
    }

    fn sensitive(name: HeaderName, value: &str) -> Result<Self> {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Error::other(format!("the credential sent as `{name}` contains characters not allowed in a header"))
        })?;
        value.set_sensitive(true);
        Ok(Self { name, value })
    }
}

/// One request: method, path segments below the base URL (each encoded as one segment), query,
/// headers, an optional JSON body and the credential.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    headers: Vec<(HeaderName, String)>,
    body: Option<serde_json::Value>,
    credential: Option<Credential>,
    write_ahead: bool,
}

impl Request {
    /// A request for `method` on `segments`.
    pub fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            credential: None,
            write_ahead: false,
        }
    }

    /// This request may start a build: each attempt runs the gateway's write-ahead mark
    /// ([`crate::send_mark::before_send`]) just before it leaves, after every wait.
    pub fn write_ahead(mut self) -> Self {
        self.write_ahead = true;
        self
    }

    /// A GET of `segments`.
    pub fn get(segments: &[&str]) -> Self {
        Self::new(Method::GET, segments)
    }

    /// A POST to `segments`.
    pub fn post(segments: &[&str]) -> Self {
        Self::new(Method::POST, segments)
    }

    /// Add a query pair.
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// Add a header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Send `body` as JSON.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Put `prefix` before the path segments (an organization every path of an account starts with).
    pub fn under(mut self, prefix: &[&str]) -> Self {
        self.segments.splice(0..0, prefix.iter().map(|s| s.to_string()));
        self
    }

    /// Authenticate with `credential`.
    pub fn credential(mut self, credential: &Credential) -> Self {
        self.credential = Some(credential.clone());
        self
    }

    /// The path segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// An answer as received: the status, headers, the reason phrase when the server sent its own,
/// the body and the server's `Date`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The provider, for messages.
    pub provider: &'static str,
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The reason phrase when it is not the canonical one (`403 Rate Limit Exceeded`).
    pub reason: Option<String>,
    /// The body.
    pub body: Bytes,
    /// The `Date` header (the provider's clock), when present and valid.
    pub date: Option<DateTime<Utc>>,
}

impl Answer {
    /// An answer of `provider` with `status`, `headers` and `body` (error parsers and tests).
    pub fn new(provider: &'static str, status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        Self { provider, status, headers, reason: None, body: body.into(), date: None }
    }

    /// Decode the body as `T`, naming the operation when it does not fit.
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&self.body).chars().take(200).collect();
            Error::other(format!("{} answered {operation} with an unexpected body ({e}; body: {shown})", self.provider))
        })
    }

    /// The wait the `Retry-After` header asks for, relative to `now`.
    pub fn retry_after(&self, now: std::time::SystemTime) -> Option<Duration> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, now))
    }
}

/// The transport of one account, shared by all its targets: HTTP client, base URL, rate limiter,
/// concurrency permits and retry policy.
pub struct Transport {
    provider: &'static str,
    http: reqwest::Client,
    /// This process's limiter, unless the budget is shared ([`Transport::share_budget`]).
    limiter: Option<Budget>,
    pacing: Pacing,
    /// The budget shared with every replica, once the gateway gave one.
    shared: OnceLock<SharedPacer>,
    permits: Semaphore,
    config: TransportConfig,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("provider", &self.provider)
            .field("base_url", &self.config.base_url.as_str())
            .field("rate_limit", &self.config.rate_limit)
            .field("shared_budget", &self.shared.get().is_some())
            .field("concurrency", &self.config.concurrency)
            .field("retry", &self.config.retry)
            .finish()
    }
}

/// The HTTP client every account's transport uses: one root certificate store and one
/// connection pool for the process, instead of one of each per account (a gateway with a hundred
/// accounts read the system's certificates a hundred times at start). Timeouts are the
/// account's, set on each request.
fn shared_http() -> Result<reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(MAX_CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// The longest a connection attempt may take; an account's shorter `timeout` (set on each
/// request, and covering the connection too) ends it sooner.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport {
    /// The transport of `provider` (named in messages) for `config`. Redirects are not
    /// followed: a credential must not travel to another host, and a redirect means a wrong
    /// `base_url`.
    pub fn new(provider: &'static str, config: &TransportConfig, pacing: Pacing) -> Result<Self> {
        let http = shared_http()?;
        let limiter = config.rate_limit.map(|l| match pacing {
            Pacing::Bursty => Budget::bursty(&l),
            Pacing::Smooth => Budget::smooth(&l),
        });
        Ok(Self {
            provider,
            http,
            limiter,
            pacing,
            shared: OnceLock::new(),
            permits: Semaphore::new(config.concurrency.max(1)),
            config: config.clone(),
        })
    }

    /// Draw the account's rate limit from `budget` at `key`, shared with every replica using the
    /// same credential, instead of from this process's limiter (`account` names it in logs). An
    /// account without a rate limit has nothing to share; the first call wins.
    pub fn share_budget(&self, budget: Arc<dyn SharedBudget>, key: BudgetKey, account: &str) {
        let Some(limit) = self.config.rate_limit else { return };
        let burst = match self.pacing {
            Pacing::Bursty => limit.requests.get(),
            Pacing::Smooth => 1,
        };
        if self.shared.set(SharedPacer::new(budget, key, account, &limit, burst)).is_ok() {
            tracing::debug!(provider = self.provider, account, "the request budget is shared with the other replicas");
        }
    }

    /// The URL of `segments` under the base URL, each segment encoded on its own and the base
    /// URL's own path (`/api/v2`) kept.
    pub fn url<S: AsRef<str>>(&self, segments: &[S]) -> Url {
        let mut url = self.config.base_url.clone();
        let mut path = url.path().trim_end_matches('/').to_string();
        for s in segments {
            path.push('/');
            path.push_str(&encode_segment(s.as_ref()));
        }
        url.set_path(&path);
        url
    }

    /// `request`, retried by the account's policy and the rule for `kind`; error answers become
    /// errors through `parse_error`.
    pub async fn send(
        &self,
        kind: CallKind,
        operation: &str,
        request: &Request,
        parse_error: impl Fn(&Answer, CallKind) -> Error,
    ) -> Result<Answer> {
        self.retry(kind, operation, || self.send_once(kind, operation, request, &parse_error)).await
    }

    /// Run `attempt` with the account's retry policy (for adapters whose attempt is more than one
    /// request, such as a token exchange before it).
    pub async fn retry<T, F, Fut>(&self, kind: CallKind, operation: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        with_retry(&self.config.retry, kind, operation, attempt).await
    }

    /// One attempt: wait for the rate limiter (the shared budget, when there is one) and a
    /// concurrency permit (both bounded by the work budget), send, and return the 2xx answer or
    /// the error `parse_error` makes of the answer.
    pub async fn send_once(
        &self,
        kind: CallKind,
        operation: &str,
        request: &Request,
        parse_error: impl Fn(&Answer, CallKind) -> Error,
    ) -> Result<Answer> {
        if let Some(shared) = self.shared.get() {
            shared.admit(kind).await?;
        } else if let Some(limiter) = &self.limiter {
            limiter.admit(kind).await?;
        }
        let _permit = until_budget_end(self.permits.acquire())
            .await?
            .map_err(|_| Error::not_sent("the account's transport was shut down"))?;
        if request.write_ahead {
            crate::send_mark::before_send().await?;
        }
        let mut builder = self
            .http
            .request(request.method.clone(), self.url(&request.segments))
            .timeout(self.config.timeout)
            .header(ACCEPT, "application/json");
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(credential) = &request.credential {
            builder = builder.header(&credential.name, credential.value.clone());
        }
        if let Some(body) = &request.body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body.to_string());
        } else if request.method == Method::POST {
            // An explicit empty body (Content-Length: 0): some providers refuse a bodiless POST.
            builder = builder.body("");
        }
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        log_rate_limit_headers(self.provider, operation, &headers);
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
            .map(str::to_string);
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(DateTime::<Utc>::from);
        let body = response.bytes().await.map_err(|e| Error::maybe_sent(e.without_url()))?;
        let answer = Answer { provider: self.provider, status, headers, reason, body, date };
        if status.is_success() {
            return Ok(answer);
        }
        if status.is_redirection() {
            return Err(Error::other(format!("{} answered {status} (a redirect); check the base_url", self.provider)));
        }
        let error = parse_error(&answer, kind);
        match &error {
            Error::RateLimited { retry_after } => tracing::info!(
                provider = self.provider,
                operation,
                retry_after_s = retry_after.map(|d| d.as_secs()),
                "rate limited by the provider"
            ),
            _ => {
                tracing::debug!(provider = self.provider, operation, status = status.as_u16(), error = %error, "the provider refused the call")
            }
        }
        Err(error)
    }
}

/// Connect and DNS failures (and requests that could not be built) never left; anything later
/// (timeouts, resets, broken bodies) may have been processed. The URL is dropped: it may carry
/// ids or secrets, and errors end up in logs and API answers.
fn transport_error(e: reqwest::Error) -> Error {
    let e = e.without_url();
    if e.is_connect() || e.is_builder() { Error::not_sent(e) } else { Error::maybe_sent(e) }
}

fn log_rate_limit_headers(provider: &str, operation: &str, headers: &HeaderMap) {
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("x-ratelimit") || n.starts_with("ratelimit") || n == "retry-after" {
            tracing::debug!(
                provider,
                operation,
                header = n,
                value = value.to_str().unwrap_or("<binary>"),
                "rate-limit header"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defaults() -> TransportDefaults {
        TransportDefaults {
            base_url: "https://ci.example.com/api",
            timeout: Duration::from_secs(30),
            rate_limit: None,
            concurrency: 8,
            retry: RetryPolicy::default(),
        }
    }

    fn shown(p: &Problems) -> Vec<String> {
        p.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn splits_the_transport_keys_from_the_rest() {
        let mut p = Problems::default();
        let (rest, t) = TransportConfig::parse(
            "a",
            &json!({"token": "t", "timeout": "5s", "rate_limit": "60/min", "concurrency": 2, "max_retries": 1,
                    "retry_min_delay": "1ms", "retry_max_delay": "2ms", "retry_deadline": "1s",
                    "base_url": "http://localhost:1/x"}),
            &defaults(),
            &mut p,
        );
        assert!(!p.has_errors(), "{p:?}");
        assert_eq!(rest, json!({"token": "t"}));
        let t = t.unwrap();
        assert_eq!(t.base_url.as_str(), "http://localhost:1/x");
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.rate_limit, Some(RateLimit::parse("60/min").unwrap()));
        assert_eq!((t.concurrency, t.retry.max_retries), (2, 1));
        assert_eq!(t.retry.deadline, Duration::from_secs(1));
    }

    #[test]
    fn every_problem_is_reported_at_its_key() {
        let mut p = Problems::default();
        let (_, t) = TransportConfig::parse(
            "a",
            &json!({"base_url": "ftp://x", "timeout": "0s", "rate_limit": "5/week", "concurrency": 0,
                    "retry_min_delay": "2s", "retry_max_delay": "1s"}),
            &defaults(),
            &mut p,
        );
        assert!(t.is_none());
        let s = shown(&p);
        for key in ["base_url", "timeout", "rate_limit", "concurrency", "retry_min_delay"] {
            assert!(s.iter().any(|e| e.starts_with(&format!("a.{key}: "))), "{key}: {s:?}");
        }
        let mut p = Problems::default();
        TransportConfig::parse("a", &json!({"timeout": "soon"}), &defaults(), &mut p);
        assert!(shown(&p)[0].starts_with("a.timeout: "), "{p:?}");
    }

    #[test]
    fn base_urls_are_http_with_a_host_and_no_credentials() {
        assert!(parse_base_url("https://api.example.com/v2").is_ok());
        assert!(parse_base_url("ftp://x").unwrap_err().starts_with("expected an http"));
        assert!(parse_base_url("not a url").is_err());
        assert!(parse_base_url("https://x/?q=1").is_err());
        assert!(parse_base_url("https://user:pw@x/").unwrap_err().starts_with("credentials"));
    }

    #[test]
    fn segments_are_encoded_and_the_base_path_kept() {
        let t = Transport::new("Test", &TransportConfig::new(&defaults()), Pacing::Bursty).unwrap();
        assert_eq!(
            t.url(&["pipelines", "run", "demo/api build"]).as_str(),
            "https://ci.example.com/api/pipelines/run/demo%2Fapi%20build"
        );
        let r = Request::get(&["builds"]).under(&["organizations", "o"]);
        assert_eq!(t.url(r.segments()).path(), "/api/organizations/o/builds");
    }

    #[test]
    fn credentials_are_sensitive_and_hidden() {
        let c = Credential::bearer(&SecretString::from("hunter2")).unwrap();
        assert!(c.value.is_sensitive());
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = Credential::basic(&SecretString::from("a@b"), &SecretString::from("pw")).unwrap();
        assert_eq!(c.value.to_str().unwrap(), "Basic YUBiOnB3");
        assert!(Credential::header(HeaderName::from_static("x-key"), &SecretString::from("bad\nkey")).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_and_does_not_show_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut config = TransportConfig::new(&defaults());
        config.base_url = Url::parse(&format!("http://127.0.0.1:{port}/api")).unwrap();
        let t = Transport::new("Test", &config, Pacing::Bursty).unwrap();
        let request = Request::get(&["builds", "secret-build-id"]).query("token", "secret-query");
        let e = t.send_once(CallKind::StartsBuild, "get build", &request, |_, _| Error::other("no answer")).await;
        let e = e.unwrap_err();
        assert!(matches!(e, Error::NotSent { .. }), "{e:?}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("secret-build-id") && !shown.contains("secret-query"), "{shown}");
    }
    /// An HTTP/1.1 server on 127.0.0.1 answering `{}` to every request, keeping connections
    /// open; counts the connections it accepted.
    async fn counting_server() -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/api", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer =
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                            if socket.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn accounts_share_one_connection_pool_and_keep_their_own_timeouts() {
        let (url, accepted) = counting_server().await;
        let mut quick = TransportConfig::new(&defaults());
        quick.base_url = url.clone();
        quick.timeout = Duration::from_millis(900);
        let mut slow = quick.clone();
        slow.timeout = Duration::from_secs(7);
        let (a, b) = (
            Transport::new("Test", &quick, Pacing::Bursty).unwrap(),
            Transport::new("Test", &slow, Pacing::Smooth).unwrap(),
        );
        let request = Request::get(&["x"]);
        for t in [&a, &b, &a] {
            let answer = t.send_once(CallKind::Idempotent, "get", &request, |_, _| Error::other("refused")).await;
            assert_eq!(answer.unwrap().status, StatusCode::OK);
        }
        // Three requests of two accounts, one after the other: one kept-alive connection.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A server that accepts and never answers: each account's own timeout ends the wait.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut hanging = quick.clone();
        hanging.base_url = Url::parse(&format!("http://{}/api", silent.local_addr().unwrap())).unwrap();
        hanging.timeout = Duration::from_millis(200);
        let t = Transport::new("Test", &hanging, Pacing::Bursty).unwrap();
        let wait = t.send_once(CallKind::Idempotent, "get", &request, |_, _| Error::other("refused"));
        let outcome = tokio::time::timeout(Duration::from_secs(5), wait).await;
        assert!(outcome.expect("the account's 200 ms timeout ended the call").is_err());
        drop(silent);
    }
}
