//! Records every request a simulator receives, with secrets redacted.

use bytes::Bytes;
use http::{HeaderMap, Method};
use parking_lot::Mutex;

/// Headers whose values are never recorded.
const SECRET_HEADERS: [&str; 6] =
    ["authorization", "circle-token", "x-access-token", "cookie", "proxy-authorization", "x-csrf-token"];

/// One received request.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers, secret values replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// When it arrived, on the machine's wall clock (not the harness clock), so another process
    /// (the benchmark) can compare it with its own timestamps.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl RecordedRequest {
    /// A header's (redacted) value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The request log.
#[derive(Debug, Default)]
pub struct Recorder {
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn record(&self, method: &Method, uri: &http::Uri, headers: &HeaderMap, body: Bytes) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().to_string();
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    "<redacted>".to_string()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect();
        self.requests.lock().push(RecordedRequest {
            method: method.clone(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            body,
            received_at: chrono::Utc::now(),
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().clone()
    }

    /// Requests with this method whose path contains `path_part`.
    pub fn matching(&self, method: &Method, path_part: &str) -> Vec<RecordedRequest> {
        self.requests.lock().iter().filter(|r| r.method == method && r.path.contains(path_part)).cloned().collect()
    }

    /// How many requests with this method have a path containing `path_part`.
    pub fn count(&self, method: &Method, path_part: &str) -> usize {
        self.requests.lock().iter().filter(|r| r.method == method && r.path.contains(path_part)).count()
    }

    /// Forget everything recorded.
    pub fn clear(&self) {
        self.requests.lock().clear();
    }
}
