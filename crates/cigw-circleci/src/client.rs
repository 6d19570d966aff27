//! The HTTP client of one CircleCI account: base URL, auth, rate limiter and concurrency cap,
//! shared by every target of the account.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cigw_core::rate_limit::Budget;
use cigw_core::retry::{RetryPolicy, with_retry};
use cigw_core::{CallKind, Error, Result};
use http::{HeaderMap, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use crate::config::{AccountConfig, AuthScheme};
use crate::error::parse_error;
use crate::models::Page;
use crate::slug::encode_segment;

const USER_AGENT: &str = concat!("cigw/", env!("CARGO_PKG_VERSION"));
const RATE_LIMIT_HEADERS: [&str; 6] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// How requests authenticate.
#[derive(Clone)]
pub enum CircleciAuth {
    /// `Circle-Token: <token>`.
    CircleToken(SecretString),
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
}

impl fmt::Debug for CircleciAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CircleToken(_) => "CircleToken(<redacted>)",
            Self::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

/// A successful answer: status (200 and 201 differ for `/pipeline/run`), body and the server's
/// `Date` (the provider's clock, used to compare with its own timestamps).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// The `Date` header, when present and valid.
    pub date: Option<DateTime<Utc>>,
}

impl Answer {
    /// Decode the body as `T`, naming the operation when it does not fit.
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::other(format!("CircleCI answered {operation} with an unexpected body ({e})")))
    }
}

/// One account's HTTP client.
#[derive(Clone)]
pub struct CircleciClient {
    http: reqwest::Client,
    base_url: Url,
    auth: CircleciAuth,
    limiter: Option<Arc<Budget>>,
    permits: Arc<Semaphore>,
    retry: RetryPolicy,
    max_pages: usize,
}

impl fmt::Debug for CircleciClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircleciClient")
            .field("base_url", &self.base_url.as_str())
            .field("auth", &self.auth)
            .field("rate_limited", &self.limiter.is_some())
            .field("concurrency", &self.permits.available_permits())
            .field("retry", &self.retry)
            .finish()
    }
}

impl CircleciClient {
    /// A client for `cfg`.
    pub fn new(cfg: &AccountConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::other(format!("cannot build the HTTP client: {e}")))?;
        let auth = match cfg.auth {
            AuthScheme::CircleToken => CircleciAuth::CircleToken(cfg.token.clone()),
            AuthScheme::Bearer => CircleciAuth::Bearer(cfg.token.clone()),
        };
        Ok(Self {
            http,
            base_url: cfg.base_url.clone(),
            auth,
            limiter: cfg.rate_limit.map(|l| Arc::new(Budget::bursty(&l))),
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            retry: cfg.retry.clone(),
            max_pages: cfg.max_pages.max(1),
        })
    }

    /// The same client against another base URL (tests).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.base_url = base_url;
        self
    }

    /// The retry policy of this account.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The URL of `segments` under the base URL; each segment is percent-encoded on its own and
    /// the base URL's own path (`/api/v2`) is kept.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        let mut path = url.path().trim_end_matches('/').to_string();
        for s in segments {
            path.push('/');
            path.push_str(&encode_segment(s));
        }
        url.set_path(&path);
        url
    }

    /// One attempt: wait for the rate limiter and a concurrency permit, send, and map errors.
    async fn send_once(
        &self,
        kind: CallKind,
        method: Method,
        url: &Url,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        if let Some(l) = &self.limiter {
            l.admit(kind).await?;
        }
        let _permit = cigw_core::retry::until_budget_end(self.permits.acquire())
            .await?
            .map_err(|e| Error::not_sent(e.to_string()))?;
        let mut req = self.http.request(method.clone(), url.clone()).header(http::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        req = match &self.auth {
            CircleciAuth::CircleToken(t) => req.header("Circle-Token", t.expose_secret()),
            CircleciAuth::Bearer(t) => req.bearer_auth(t.expose_secret()),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        log_rate_limit(&headers, status, url);
        let date = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(DateTime::<Utc>::from);
        let body = resp.bytes().await.map_err(Error::maybe_sent)?;
        if status.is_success() {
            Ok(Answer { status, body, date })
        } else {
            Err(parse_error(status, &headers, &body, kind))
        }
    }

    /// A call with the account's retry policy.
    pub async fn call(
        &self,
        kind: CallKind,
        operation: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let url = self.url(segments);
        with_retry(&self.retry, kind, operation, || self.send_once(kind, method.clone(), &url, query, body)).await
    }

    /// A GET decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        operation: &str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(T, Answer)> {
        let answer = self.call(CallKind::Idempotent, operation, Method::GET, segments, query, None).await?;
        Ok((answer.json(operation)?, answer))
    }

    /// Every item of a paginated list, following `next_page_token` through `page-token`, up to
    /// the account's page cap. `keep_going` sees each page and can stop early. Returns the items
    /// and the `Date` of the last page.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        operation: &str,
        segments: &[&str],
        query: &[(&str, &str)],
        mut keep_going: impl FnMut(&[T]) -> bool,
    ) -> Result<(Vec<T>, Option<DateTime<Utc>>)> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut date = None;
        for _ in 0..self.max_pages {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(t) = &token {
                q.push(("page-token", t));
            }
            let (page, answer): (Page<T>, Answer) = self.get(operation, segments, &q).await?;
            date = answer.date;
            let go_on = keep_going(&page.items);
            items.extend(page.items);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if go_on => token = Some(t),
                _ => return Ok((items, date)),
            }
        }
        tracing::warn!(operation, pages = self.max_pages, "stopped following pages at the page cap");
        Ok((items, date))
    }
}

/// Connect and DNS failures (and requests that could not be built) never left; anything later
/// (timeouts, resets, broken bodies) may have been processed.
fn transport_error(e: reqwest::Error) -> Error {
    if e.is_connect() || e.is_builder() { Error::not_sent(e) } else { Error::maybe_sent(e) }
}

fn log_rate_limit(headers: &HeaderMap, status: StatusCode, url: &Url) {
    let seen: Vec<String> = RATE_LIMIT_HEADERS
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(|v| format!("{h}={v}")))
        .collect();
    if !seen.is_empty() {
        tracing::debug!(status = status.as_u16(), path = url.path(), limits = %seen.join(" "), "CircleCI rate limit");
    }
}
