//! The HTTP client the CLI commands share: base URL and token from flags or the environment,
//! JSON in and out, and API errors (`{code, message, details}`) kept whole for the user.

pub(crate) mod sse;

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// Exit code of a usage or authentication problem (DESIGN §4).
pub(crate) const EXIT_USAGE: u8 = 4;

/// How to reach the gateway; flattened into every client subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Gateway base URL.
    #[arg(long, env = "CIGW_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub(crate) url: String,
    /// API token (`cigw_…`); prefer the environment variable, which other users cannot see in `ps`.
    #[arg(long, env = "CIGW_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
}

/// One problem with one field, as the API reports it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    /// The field (`targets[1]`, `parameters.env`, …).
    pub(crate) field: String,
    /// What was wrong.
    pub(crate) message: String,
}

/// Everything that can go wrong talking to the gateway.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// Bad flags or configuration on our side, found before any request.
    Usage(String),
    /// The gateway answered with an error body.
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The API's machine-readable code.
        code: String,
        /// The API's explanation.
        message: String,
        /// Field-level problems.
        details: Vec<FieldProblem>,
    },
    /// No usable answer: connection refused, a timeout, a body that is not JSON.
    Transport(String),
}

impl ClientError {
    /// The API error code, if the gateway answered with one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// 4 for our mistakes and the gateway's 4xx answers (auth, validation, not found, conflicts),
    /// 1 for everything else (the gateway unreachable or failing).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Api { status, .. } if status.is_client_error() => EXIT_USAGE,
            _ => 1,
        }
    }

    /// Print the error for a person on stderr and return its exit code.
    pub(crate) fn report(&self) -> ExitCode {
        eprint!("{self}");
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for ClientError {
    /// Multi-line: the message, then one indented line per field problem, then a hint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) => writeln!(f, "error: {m}"),
            Self::Transport(m) => writeln!(f, "error: {m}"),
            Self::Api { status, code, message, details } => {
                // A message that strings every detail together reads better as its headline
                // ("4 problems") followed by one line per detail.
                let headline = match message.split_once(": ") {
                    Some((head, _)) if details.len() > 1 && message.contains(&details[0].message) => head,
                    _ => message.as_str(),
                };
                writeln!(f, "error: {headline} ({code}, HTTP {})", status.as_u16())?;
                for d in details {
                    // The message already names a single field; repeating it adds nothing.
                    if details.len() > 1 || !message.contains(&d.message) {
                        writeln!(f, "  {}: {}", d.field, d.message)?;
                    }
                }
                match status.as_u16() {
                    401 => writeln!(f, "hint: check --token / CIGW_TOKEN (missing, unknown, revoked or expired)"),
                    403 if code == "missing_scope" => {
                        writeln!(f, "hint: ask an admin for a token with that scope (`cigw token create`)")
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A gateway client: one base URL, one token.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// For the event stream: no overall request timeout, only a read timeout.
    stream_http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"***").finish()
    }
}

/// How long one ordinary request may take (the gateway's own limit is 30 s by default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

impl Client {
    /// A client from the connection flags; a missing token or a bad URL is a usage error.
    pub(crate) fn new(args: &ConnectArgs) -> Result<Self, ClientError> {
        let token = match args.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => SecretString::from(t.to_string()),
            _ => return Err(ClientError::Usage("no API token: pass --token or set CIGW_TOKEN".into())),
        };
        let parsed = url::Url::parse(&args.url)
            .map_err(|e| ClientError::Usage(format!("--url / CIGW_URL `{}`: {e}", args.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!("--url / CIGW_URL `{}`: expected an http(s) URL", args.url)));
        }
        let base = args.url.trim_end_matches('/').to_string();
        let agent = concat!("cigw-cli/", env!("CARGO_PKG_VERSION"));
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder().user_agent(agent).connect_timeout(Duration::from_secs(10));
            b = match timeout {
                Some(t) => b.timeout(t),
                None => b.read_timeout(Duration::from_secs(90)),
            };
            b.build().map_err(|e| ClientError::Transport(format!("cannot build the HTTP client: {e}")))
        };
        Ok(Self { http: build(Some(REQUEST_TIMEOUT))?, stream_http: build(None)?, base, token })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.expose_secret())
    }

    /// A request on the streaming client (no overall timeout).
    pub(crate) fn stream_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.stream_http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "text/event-stream")
    }

    /// `GET path` with query pairs.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(Method::GET, path).query(query)).await
    }

    /// `POST path` with a JSON body and extra headers.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let mut req = self.request(Method::POST, path).json(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        self.send(req).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(Method::DELETE, path)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = req.send().await.map_err(|e| self.transport(e))?;
        read_response(response).await
    }

    /// Describe a transport failure with the URL but without the token.
    pub(crate) fn transport(&self, e: reqwest::Error) -> ClientError {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        ClientError::Transport(format!("{what}: {} ({})", self.base, root_cause(&e)))
    }
}

/// The innermost cause of an error, which is where reqwest keeps the useful text.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turn a response into JSON, or into [`ClientError::Api`] for error statuses.
pub(crate) async fn read_response(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(format!("reading the answer: {}", root_cause(&e))))?;
    if status.is_success() {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Transport(format!("the gateway answered HTTP {status} with a body that is not JSON: {e}"))
        });
    }
    Err(api_error(status, &bytes))
}

/// An error status with its body; bodies that are not the API's shape still give a message.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(Deserialize)]
    struct Body {
        code: String,
        message: String,
        #[serde(default)]
        details: Vec<FieldProblem>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => ClientError::Api { status, code: b.code, message: b.message, details: b.details },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() { format!("HTTP {status}") } else { text.chars().take(300).collect() };
            ClientError::Api { status, code: "http_error".into(), message, details: Vec::new() }
        }
    }
}

/// Percent-encode one path segment (run ids and token ids are URL-safe, but a user may type anything).
pub(crate) fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, token: Option<&str>) -> ConnectArgs {
        ConnectArgs { url: url.into(), token: token.map(String::from) }
    }

    #[test]
    fn a_missing_token_or_bad_url_is_a_usage_error() {
        let e = Client::new(&args("http://127.0.0.1:1", None)).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("CIGW_TOKEN"), "{e}");
        let e = Client::new(&args("127.0.0.1:8080", Some("cigw_x"))).unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        let e = Client::new(&args("ftp://h", Some("cigw_x"))).unwrap_err();
        assert!(e.to_string().contains("http(s)"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Client::new(&args("http://127.0.0.1:1/", Some("cigw_supersecret"))).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert_eq!(c.base, "http://127.0.0.1:1");
    }

    #[test]
    fn api_errors_keep_code_message_and_details() {
        let body = br#"{"code":"validation_failed","message":"2 problems: `targets[0]`: unknown target `x` (known targets: a, b); `parameters.env`: not declared (declared: region)","details":[
            {"field":"targets[0]","message":"unknown target `x` (known targets: a, b)"},
            {"field":"parameters.env","message":"not declared (declared: region)"}]}"#;
        let e = api_error(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(e.code(), Some("validation_failed"));
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let text = e.to_string();
        assert!(text.starts_with("error: 2 problems (validation_failed, HTTP 422)\n"), "{text}");
        assert!(text.contains("targets[0]: unknown target `x` (known targets: a, b)"), "{text}");
        assert!(text.contains("parameters.env: not declared (declared: region)"), "{text}");
    }

    #[test]
    fn server_errors_and_odd_bodies() {
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream sad");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("upstream sad"), "{e}");
        let e = api_error(StatusCode::UNAUTHORIZED, br#"{"code":"unauthenticated","message":"no token"}"#);
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("hint: check --token"), "{e}");
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("0192-ab_c"), "0192-ab_c");
    }
}
