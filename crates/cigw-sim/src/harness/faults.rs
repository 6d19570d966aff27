//! Fault injection: probabilistic knobs for load and the sandbox, scripted one-shot faults for
//! deterministic tests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use rand::Rng;

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer the provider's rate-limit response without processing the request.
    RateLimit {
        /// Seconds for the `Retry-After` header, when sent.
        retry_after: Option<u64>,
    },
    /// Answer a server error without processing the request.
    ServerError {
        /// The status (5xx).
        status: StatusCode,
    },
    /// Process the request, then close the connection before answering: the client cannot
    /// know whether it was processed (an ambiguous trigger).
    DropAfterProcessing,
    /// Close the connection before processing the request.
    ResetBeforeProcessing,
    /// Wait this long before processing.
    Latency(Duration),
    /// Process the request, then answer nothing for this long (past the client's timeout) and
    /// close the connection: the client times out on a request that took effect.
    HangAfterProcessing(Duration),
}

/// Which builds the simulators' list endpoints show (never their single-build endpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listing {
    /// Every build, at once.
    #[default]
    Prompt,
    /// A build only once it has existed this long (simulated time): lists lag behind.
    Late(Duration),
    /// No build created from now on (simulated time) ever appears in a list.
    HiddenSince(chrono::DateTime<chrono::Utc>),
}

impl Listing {
    /// Whether a build created at `created_at` is listed at `now`.
    pub fn shows(&self, created_at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> bool {
        match self {
            Self::Prompt => true,
            Self::Late(delay) => {
                created_at + chrono::Duration::from_std(*delay).unwrap_or(chrono::Duration::MAX) <= now
            }
            Self::HiddenSince(since) => created_at < *since,
        }
    }
}

/// A fault applied to the next matching requests.
#[derive(Debug, Clone)]
pub struct ScriptedFault {
    /// Only requests with this method.
    pub method: Option<Method>,
    /// Only requests whose path contains this.
    pub path_contains: Option<String>,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests it applies to.
    pub times: usize,
}

impl ScriptedFault {
    /// `fault` on the next request, whatever it is.
    pub fn new(fault: Fault) -> Self {
        Self { method: None, path_contains: None, fault, times: 1 }
    }

    /// Only for requests with `method`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only for requests whose path contains `part`.
    pub fn path_contains(mut self, part: impl Into<String>) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// For the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// Probabilistic faults, each checked independently on every request (0.0 = never).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Added to every request.
    pub latency: Duration,
    /// Probability of a rate-limit answer.
    pub rate_limit: f64,
    /// `Retry-After` seconds sent with injected rate limits.
    pub retry_after: Option<u64>,
    /// Probability of a 503 answer.
    pub server_error: f64,
    /// Probability of processing and then dropping the connection.
    pub drop_after_processing: f64,
    /// Probability of dropping the connection before processing.
    pub reset_before_processing: f64,
    /// Only requests with these methods (empty = all).
    pub methods: Vec<Method>,
}

/// The fault knobs of one harness.
#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    scripted: Mutex<Vec<ScriptedFault>>,
    listing: Mutex<Listing>,
}

impl Faults {
    /// Replace the probabilistic configuration.
    pub fn set(&self, config: FaultConfig) {
        *self.config.lock() = config;
    }

    /// The probabilistic configuration.
    pub fn config(&self) -> FaultConfig {
        self.config.lock().clone()
    }

    /// Queue a scripted fault (applied before the probabilistic ones, in queue order).
    pub fn push(&self, fault: ScriptedFault) {
        self.scripted.lock().push(fault);
    }

    /// Remove every fault (lists show every build again).
    pub fn clear(&self) {
        self.scripted.lock().clear();
        *self.config.lock() = FaultConfig::default();
        *self.listing.lock() = Listing::Prompt;
    }

    /// Change which builds list endpoints show.
    pub fn set_listing(&self, listing: Listing) {
        *self.listing.lock() = listing;
    }

    /// Which builds list endpoints show.
    pub fn listing(&self) -> Listing {
        *self.listing.lock()
    }

    /// The faults for one request, in the order to apply them.
    pub(crate) fn pick(&self, method: &Method, path: &str) -> Vec<Fault> {
        let mut out = Vec::new();
        {
            let mut scripted = self.scripted.lock();
            if let Some(i) = scripted.iter().position(|s| s.matches(method, path)) {
                out.push(scripted[i].fault.clone());
                scripted[i].times -= 1;
                if scripted[i].times == 0 {
                    scripted.remove(i);
                }
            }
        }
        let c = self.config.lock().clone();
        if !c.methods.is_empty() && !c.methods.contains(method) {
            return out;
        }
        if !c.latency.is_zero() {
            out.insert(0, Fault::Latency(c.latency));
        }
        let mut rng = rand::rng();
        let mut roll = |p: f64| p > 0.0 && rng.random_bool(p.min(1.0));
        if roll(c.rate_limit) {
            out.push(Fault::RateLimit { retry_after: c.retry_after });
        } else if roll(c.server_error) {
            out.push(Fault::ServerError { status: StatusCode::SERVICE_UNAVAILABLE });
        } else if roll(c.reset_before_processing) {
            out.push(Fault::ResetBeforeProcessing);
        } else if roll(c.drop_after_processing) {
            out.push(Fault::DropAfterProcessing);
        }
        out
    }
}

type RateLimitedFn = dyn Fn(Option<u64>) -> Response + Send + Sync;
type ServerErrorFn = dyn Fn(StatusCode) -> Response + Send + Sync;

/// How a provider shapes the answers the harness injects.
#[derive(Clone)]
pub struct FaultResponses {
    /// The rate-limit answer, given the `Retry-After` seconds to send.
    pub rate_limited: Arc<RateLimitedFn>,
    /// A server error answer.
    pub server_error: Arc<ServerErrorFn>,
}

impl fmt::Debug for FaultResponses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultResponses")
    }
}

impl Default for FaultResponses {
    /// `429 {"message": "Rate limit exceeded."}` and `5xx {"message": "..."}`.
    fn default() -> Self {
        Self {
            rate_limited: Arc::new(|retry_after| {
                let r =
                    (StatusCode::TOO_MANY_REQUESTS, axum::Json(serde_json::json!({"message": "Rate limit exceeded."})));
                with_retry_after(r.into_response(), retry_after)
            }),
            server_error: Arc::new(|status| {
                (status, axum::Json(serde_json::json!({"message": "Service unavailable."}))).into_response()
            }),
        }
    }
}

/// `response` with a `Retry-After: <seconds>` header when `retry_after` is given.
pub fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(s) = retry_after {
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_faults_apply_in_order_to_matching_requests_only() {
        let f = Faults::default();
        f.push(ScriptedFault::new(Fault::DropAfterProcessing).method(Method::POST).path_contains("/pipeline").times(2));
        f.push(ScriptedFault::new(Fault::RateLimit { retry_after: Some(1) }));
        assert_eq!(f.pick(&Method::GET, "/pipeline/1"), vec![Fault::RateLimit { retry_after: Some(1) }]);
        assert_eq!(f.pick(&Method::POST, "/project/gh/a/b/pipeline"), vec![Fault::DropAfterProcessing]);
        assert_eq!(f.pick(&Method::POST, "/project/gh/a/b/pipeline"), vec![Fault::DropAfterProcessing]);
        assert!(f.pick(&Method::POST, "/project/gh/a/b/pipeline").is_empty());
    }

    #[test]
    fn listings_can_lag_or_hide_builds() {
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let later = |s| t0 + chrono::Duration::seconds(s);
        assert!(Listing::Prompt.shows(t0, t0));
        let late = Listing::Late(Duration::from_secs(5));
        assert!(!late.shows(t0, later(4)) && late.shows(t0, later(5)));
        let hidden = Listing::HiddenSince(later(10));
        assert!(hidden.shows(t0, later(1000)) && !hidden.shows(later(10), later(1000)));
        let f = Faults::default();
        f.set_listing(late);
        assert_eq!(f.listing(), late);
        f.clear();
        assert_eq!(f.listing(), Listing::Prompt);
    }

    #[test]
    fn certain_probabilities_always_fire_and_respect_methods() {
        let f = Faults::default();
        f.set(FaultConfig { server_error: 1.0, methods: vec![Method::POST], ..Default::default() });
        assert_eq!(f.pick(&Method::POST, "/x"), vec![Fault::ServerError { status: StatusCode::SERVICE_UNAVAILABLE }]);
        assert!(f.pick(&Method::GET, "/x").is_empty());
        f.clear();
        assert!(f.pick(&Method::POST, "/x").is_empty());
    }
}
