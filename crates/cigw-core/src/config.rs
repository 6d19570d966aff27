//! Layered configuration (DESIGN.md §6): the embedded `config/default.toml`, then a file
//! (`--config` / `CIGW_CONFIG`), then `CIGW__SECTION__KEY` environment variables.
//!
//! Sections are parsed one at a time so that one mistake never hides another: every unknown key
//! (collected with `serde_ignored`) and every type error (located with `serde_path_to_error`) is
//! reported with its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::params::{ParamType, ParamValue, ParameterSpec};
use crate::provider::ProviderKind;
use crate::secret::SecretSetting;
use crate::target::{ConcurrencyPolicy, TargetSpec};

/// The defaults every configuration starts from.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Usable, but worth changing.
    Warning,
}

/// One problem, at a key path such as `targets.web.account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted key path.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Problems collected while loading and checking a configuration.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    items: Vec<Problem>,
}

impl Problems {
    /// Record an error.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem { severity: Severity::Error, path: path.into(), message: message.into() });
    }

    /// Record a warning.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem { severity: Severity::Warning, path: path.into(), message: message.into() });
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter().filter(|p| p.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter().filter(|p| p.severity == Severity::Warning)
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Every problem, in the order found.
    pub fn all(&self) -> &[Problem] {
        &self.items
    }

    /// Parse `value` (at `path`) as `T`, recording unknown keys and the first type error.
    pub fn parse<T: DeserializeOwned>(&mut self, path: &str, value: &serde_json::Value) -> Option<T> {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(value.clone(), &mut track);
        let result: Result<T, _> = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()));
        for key in unknown {
            self.error(join(path, &key), "unknown key");
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let at = track.path().to_string();
                let at = if at == "." { String::new() } else { at };
                self.error(join(path, &at), e.to_string());
                None
            }
        }
    }
}

/// Join two dotted key paths.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_string(),
        (true, false) => b.to_string(),
        _ => format!("{a}.{b}"),
    }
}

/// Errors that stop loading before any section can be checked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or is not valid TOML, or an environment override is malformed.
    #[error("{0}")]
    Source(#[from] config::ConfigError),
}

/// Merge the layers into one JSON tree.
pub fn load_raw(file: Option<&Path>) -> Result<serde_json::Value, LoadError> {
    let mut builder =
        config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
    }
    Ok(builder.add_source(environment()).build()?.try_deserialize::<serde_json::Value>()?)
}

/// Merge the defaults, a configuration given as TOML text, the environment, and then
/// `overrides` (dotted key → value) into one JSON tree. The sandbox uses it to point the
/// accounts at simulators started on ephemeral ports.
pub fn load_raw_from_str(toml_text: &str, overrides: &[(&str, &str)]) -> Result<serde_json::Value, LoadError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
        .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
        .add_source(environment());
    for (key, value) in overrides {
        builder = builder.set_override(*key, *value)?;
    }
    Ok(builder.build()?.try_deserialize::<serde_json::Value>()?)
}

fn environment() -> config::Environment {
    config::Environment::with_prefix("CIGW").prefix_separator("__").separator("__").try_parsing(true)
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Address the API listens on.
    pub listen: String,
    /// Separate address for `/metrics`, when set.
    pub metrics_listen: Option<String>,
    /// The URL users reach the gateway at (links in events and notifications).
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Time limit of one API request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight provider calls.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time a client has to send a request's headers once it started sending them; a connection
    /// that takes longer is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in progress (a silent new one, or a keep-alive one between
    /// requests) is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most open client connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Most open `/v1/events` streams in this process; more are refused with 429.
    pub max_event_streams: usize,
    /// Most open `/v1/events` streams of one token; more are refused with 429.
    pub max_event_streams_per_token: usize,
    /// How often an open event stream checks that its token is still valid (revocation by
    /// another replica; this replica's own revocations end streams at once).
    #[serde(with = "humantime_serde")]
    pub stream_token_check: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: None,
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
            max_event_streams: 512,
            max_event_streams_per_token: 32,
            stream_token_check: Duration::from_secs(5),
        }
    }
}

/// How hard SQLite flushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives process crashes.
    #[default]
    Normal,
    /// `synchronous=FULL`: survives power loss.
    Fsync,
}

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://…`.
    pub url: String,
    /// SQLite flush policy.
    pub durability: Durability,
    /// Connection pool size.
    pub max_connections: u32,
    /// Statement timeout (PostgreSQL) and busy timeout (SQLite).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://cigw.db".into(),
            durability: Durability::Normal,
            max_connections: 10,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("durability", &self.durability)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// A URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// A bootstrap admin token (`cigw_…`), accepted in addition to stored tokens.
    pub admin_token: Option<SecretSetting>,
    /// Lifetime of a web UI session cookie.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { admin_token: None, session_ttl: Duration::from_secs(12 * 3600) }
    }
}

/// `[retention]`: how long finished things are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    /// Terminal runs (and their events).
    #[serde(with = "humantime_serde")]
    pub runs: Duration,
    /// Idempotency keys.
    #[serde(with = "humantime_serde")]
    pub idempotency_keys: Duration,
    /// Hook and callback delivery ids (replay protection).
    #[serde(with = "humantime_serde")]
    pub deliveries: Duration,
    /// Delivered or abandoned notification outbox rows.
    #[serde(with = "humantime_serde")]
    pub outbox: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let day = Duration::from_secs(86_400);
        Self { runs: day * 90, idempotency_keys: day, deliveries: day * 7, outbox: day * 7 }
    }
}

/// `[timings]`: every gateway timing, so tests can run fast.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// First poll after dispatch.
    #[serde(with = "humantime_serde")]
    pub poll_initial: Duration,
    /// Largest gap between polls of one run.
    #[serde(with = "humantime_serde")]
    pub poll_max: Duration,
    /// Lease on a run being dispatched or polled.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long reconciliation looks for an ambiguous trigger's build before triggering again.
    #[serde(with = "humantime_serde")]
    pub reconcile_grace: Duration,
    /// A run accepted without an id that no build matched by then ends in `error`.
    #[serde(with = "humantime_serde")]
    pub unconfirmed_deadline: Duration,
    /// Periodic sweep for work missed by wake-ups (other replicas, restarts).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Largest backoff between dispatch attempts that never reached the provider.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// How long a new run waits before it is sent, so a cancel (or a `cancel-previous` run)
    /// arriving meanwhile sends nothing at all.
    #[serde(with = "humantime_serde")]
    pub dispatch_delay: Duration,
    /// How often the gateway removes what `[retention]` no longer keeps.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Most trigger sends of one run that may have reached the provider without the gateway
    /// identifying the build (ambiguous answers, crashes mid-call); after that many the run ends
    /// in `error` saying builds may exist, instead of sending again.
    pub max_unconfirmed_sends: u32,
    /// How long a run may keep failing to reach its provider (connection refused, rate limited:
    /// attempts that provably sent nothing) before it ends in `error`; counted from its creation.
    #[serde(with = "humantime_serde")]
    pub dispatch_deadline: Duration,
    /// How long the oldest run due for dispatch may wait before intake slows down to let the
    /// dispatchers catch up (each new trigger is answered a little later; none is refused).
    #[serde(with = "humantime_serde")]
    pub backlog_age_limit: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            reconcile_grace: Duration::from_secs(30),
            unconfirmed_deadline: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(5),
            retry_max_delay: Duration::from_secs(30),
            dispatch_delay: Duration::ZERO,
            prune_interval: Duration::from_secs(3600),
            max_unconfirmed_sends: 2,
            dispatch_deadline: Duration::from_secs(3600),
            backlog_age_limit: Duration::from_secs(1),
        }
    }
}

impl Timings {
    /// Report timings that contradict each other, with their key paths under `path`.
    pub fn check(&self, path: &str, problems: &mut Problems) {
        let key = |k: &str| join(path, k);
        if self.max_unconfirmed_sends == 0 {
            problems.error(key("max_unconfirmed_sends"), "expected at least 1 (the first send)");
        }
        if self.lease < Duration::from_millis(100) {
            problems.error(key("lease"), "expected at least 100ms: a lease is renewed every third of it");
        }
        if self.dispatch_deadline.is_zero() {
            problems.error(key("dispatch_deadline"), "expected more than 0s");
        }
    }
}

/// One declared parameter as written under `[targets.<name>.parameters.<param>]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ParameterSettings {
    /// `string`, `boolean` or `integer`.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Default value.
    #[serde(default)]
    pub default: Option<ParamValue>,
    /// Allowed values.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<ParamValue>>,
    /// Must be given.
    #[serde(default)]
    pub required: bool,
    /// Masked wherever shown.
    #[serde(default)]
    pub secret: bool,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// The provider-independent keys of `[targets.<name>]`; the rest belong to the adapter.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetSettings {
    /// Provider kind.
    pub provider: ProviderKind,
    /// Account name under `[providers.<kind>]`.
    pub account: String,
    /// Default branch.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Declared parameters, keyed by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterSettings>,
    /// Maximum run duration.
    #[serde(default, with = "humantime_serde")]
    pub max_duration: Option<Duration>,
    /// Concurrency policy.
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
    /// Wait this long before sending a new run; a newer run of the same branch supersedes it.
    #[serde(default, with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Its status badge (`/badge/<name>.svg`) may be read without a token.
    #[serde(default)]
    pub public_badge: bool,
    /// Provider-specific keys (project slug, pipeline, project uuid, …).
    #[serde(flatten)]
    pub provider_fields: serde_json::Map<String, serde_json::Value>,
}

fn default_branch() -> String {
    "main".into()
}

impl TargetSettings {
    /// The provider-independent spec, recording declaration problems at `path`.
    pub fn to_spec(&self, name: &str, path: &str, problems: &mut Problems) -> TargetSpec {
        let parameters = self
            .parameters
            .iter()
            .map(|(pname, p)| {
                let spec = ParameterSpec {
                    name: pname.clone(),
                    kind: p.kind,
                    default: p.default.clone(),
                    allowed: p.allowed.clone(),
                    required: p.required,
                    secret: p.secret,
                    description: p.description.clone(),
                };
                for message in spec.problems() {
                    problems.error(format!("{path}.parameters.{pname}"), message);
                }
                spec
            })
            .collect();
        if let Err(why) = crate::git_ref::check_ref_name(&self.default_branch) {
            problems.error(format!("{path}.default_branch"), why);
        }
        if self.debounce.is_some_and(|d| d.is_zero()) {
            problems.error(format!("{path}.debounce"), "must be longer than 0s (leave it out for no debounce)");
        }
        TargetSpec {
            name: name.to_string(),
            provider: self.provider,
            account: self.account.clone(),
            default_branch: self.default_branch.clone(),
            parameters,
            max_duration: self.max_duration,
            concurrency: self.concurrency,
            debounce: self.debounce,
            description: self.description.clone(),
        }
    }
}

/// The whole configuration, section by section.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[retention]`.
    pub retention: RetentionSettings,
    /// `[timings]`.
    pub timings: Timings,
    /// `[providers.<kind>.<account>]`, parsed by the adapters.
    pub providers: BTreeMap<ProviderKind, BTreeMap<String, serde_json::Value>>,
    /// `[targets.<name>]`.
    pub targets: BTreeMap<String, TargetSettings>,
    /// `[hooks.<name>]` (targets are checked against the catalog by [`Catalog::build`]).
    ///
    /// [`Catalog::build`]: crate::catalog::Catalog::build
    pub hooks: BTreeMap<String, crate::hook::Hook>,
    /// `[chains.<name>]` (targets and cycles are checked against the catalog by [`Catalog::build`]).
    ///
    /// [`Catalog::build`]: crate::catalog::Catalog::build
    pub chains: BTreeMap<String, crate::chain::Chain>,
    /// `[notifications.<name>]` (targets are checked against the catalog by [`Catalog::build`]).
    ///
    /// [`Catalog::build`]: crate::catalog::Catalog::build
    pub notifications: BTreeMap<String, crate::notification::Notification>,
    /// `[schedules.<name>]` (targets are checked against the catalog by [`Catalog::build`]).
    ///
    /// [`Catalog::build`]: crate::catalog::Catalog::build
    pub schedules: BTreeMap<String, crate::schedule::Schedule>,
}

const SECTIONS: [&str; 11] = [
    "server",
    "database",
    "auth",
    "retention",
    "timings",
    "providers",
    "targets",
    "hooks",
    "chains",
    "notifications",
    "schedules",
];

fn section<T: DeserializeOwned + Default>(raw: &serde_json::Value, key: &str, problems: &mut Problems) -> T {
    match raw.get(key) {
        Some(v) => problems.parse(key, v).unwrap_or_default(),
        None => T::default(),
    }
}

fn named_tables(raw: &serde_json::Value, key: &str, problems: &mut Problems) -> BTreeMap<String, serde_json::Value> {
    match raw.get(key) {
        None => BTreeMap::new(),
        Some(serde_json::Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (name, v) in map {
                if v.is_object() {
                    out.insert(name.clone(), v.clone());
                } else {
                    problems.error(format!("{key}.{name}"), "expected a table");
                }
            }
            out
        }
        Some(_) => {
            problems.error(key, "expected a table of named tables");
            BTreeMap::new()
        }
    }
}

/// A listen address must be `host:port`.
fn check_listen(path: &str, value: Option<&str>, problems: &mut Problems) {
    let Some(value) = value else { return };
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.trim_matches(['[', ']']).is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        problems.error(path, format!("`{value}` is not `host:port` (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"));
    }
}

fn check_server_limits(server: &ServerSettings, problems: &mut Problems) {
    let counts = [
        ("server.max_connections", server.max_connections),
        ("server.max_event_streams", server.max_event_streams),
        ("server.max_event_streams_per_token", server.max_event_streams_per_token),
    ];
    for (path, value) in counts.into_iter().filter(|(_, v)| *v == 0) {
        problems.error(path, format!("must be at least 1, got {value}"));
    }
    let durations = [
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.idle_timeout", server.idle_timeout),
        ("server.stream_token_check", server.stream_token_check),
    ];
    for (path, _) in durations.into_iter().filter(|(_, d)| d.is_zero()) {
        problems.error(path, "must be longer than 0s");
    }
}

impl Settings {
    /// Parse a merged tree, recording every problem found.
    pub fn from_raw(raw: &serde_json::Value, problems: &mut Problems) -> Settings {
        if let Some(map) = raw.as_object() {
            for key in map.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
                problems.error(key.clone(), "unknown key");
            }
        }
        let mut providers = BTreeMap::new();
        for (kind, accounts) in named_tables(raw, "providers", problems) {
            match kind.parse::<ProviderKind>() {
                Ok(k) => {
                    let Some(map) = accounts.as_object() else { continue };
                    let mut tables = BTreeMap::new();
                    for (name, v) in map {
                        if v.is_object() {
                            tables.insert(name.clone(), v.clone());
                        } else {
                            problems.error(format!("providers.{kind}.{name}"), "expected a table");
                        }
                    }
                    providers.insert(k, tables);
                }
                Err(e) => problems.error(format!("providers.{kind}"), e),
            }
        }
        let mut targets = BTreeMap::new();
        for (name, v) in named_tables(raw, "targets", problems) {
            if let Some(t) = problems.parse::<TargetSettings>(&format!("targets.{name}"), &v) {
                targets.insert(name, t);
            }
        }
        let server: ServerSettings = section(raw, "server", problems);
        check_listen("server.listen", Some(&server.listen), problems);
        check_listen("server.metrics_listen", server.metrics_listen.as_deref(), problems);
        check_server_limits(&server, problems);
        let database: DatabaseSettings = section(raw, "database", problems);
        if !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| database.url.starts_with(p)) {
            problems.error(
                "database.url",
                format!("`{}` is not a `sqlite:` or `postgres://` URL", redact_url(&database.url)),
            );
        }
        let notifications = crate::notification::parse_all(&named_tables(raw, "notifications", problems), problems);
        if !notifications.is_empty() && server.public_url.is_none() {
            problems.warn(
                "server.public_url",
                "not set: notifications carry no link to cigw runs and say `/cigw` as their source",
            );
        }
        Settings {
            server,
            database,
            auth: section(raw, "auth", problems),
            retention: section(raw, "retention", problems),
            timings: {
                let timings: Timings = section(raw, "timings", problems);
                timings.check("timings", problems);
                timings
            },
            providers,
            targets,
            hooks: crate::hook::parse_all(&named_tables(raw, "hooks", problems), problems),
            chains: crate::chain::parse_all(&named_tables(raw, "chains", problems), problems),
            notifications,
            schedules: crate::schedule::parse_all(&named_tables(raw, "schedules", problems), problems),
        }
    }

    /// Load all layers and parse them.
    pub fn load(file: Option<&Path>, problems: &mut Problems) -> Result<Settings, LoadError> {
        let raw = load_raw(file)?;
        Ok(Self::from_raw(&raw, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> (Settings, Problems) {
        let raw: serde_json::Value =
            toml::from_str::<toml::Value>(toml_text).map(|v| serde_json::to_value(v).unwrap()).unwrap();
        let mut problems = Problems::default();
        let s = Settings::from_raw(&raw, &mut problems);
        (s, problems)
    }

    #[test]
    fn defaults_load_cleanly() {
        let mut problems = Problems::default();
        let raw = load_raw(None).unwrap();
        let s = Settings::from_raw(&raw, &mut problems);
        assert!(problems.all().is_empty(), "{problems:?}");
        assert_eq!(s.database.url, "sqlite://cigw.db");
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.timings.max_unconfirmed_sends, Timings::default().max_unconfirmed_sends);
        assert_eq!(s.timings.max_unconfirmed_sends, 2);
    }

    #[test]
    fn contradicting_timings_are_refused_with_their_key_paths() {
        let (_, problems) = parse("[timings]\nmax_unconfirmed_sends = 0\nlease = \"50ms\"\n");
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert!(shown.iter().any(|p| p.starts_with("timings.max_unconfirmed_sends: expected at least 1")), "{shown:?}");
        assert!(shown.iter().any(|p| p.starts_with("timings.lease: expected at least 100ms")), "{shown:?}");
        let (s, problems) = parse("[timings]\nmax_unconfirmed_sends = 3\n");
        assert!(!problems.has_errors(), "{problems:?}");
        assert_eq!(s.timings.max_unconfirmed_sends, 3);
    }

    #[test]
    fn every_section_reports_its_own_problems() {
        let (s, problems) = parse(
            r#"
            colour = "blue"
            [server]
            listen = "127.0.0.1:1"
            lisen = "typo"
            [timings]
            lease = "ten seconds"
            [targets.web]
            provider = "circleci"
            account = "main"
            default_branch = "dev"
            max_duration = "30m"
            [targets.web.parameters.env]
            type = "string"
            default = 3
            [targets.bad]
            provider = "travis"
            account = "x"
            "#,
        );
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert!(shown.contains(&"colour: unknown key".to_string()), "{shown:?}");
        assert!(shown.contains(&"server.lisen: unknown key".to_string()), "{shown:?}");
        assert!(shown.iter().any(|p| p.starts_with("timings.lease: ")), "{shown:?}");
        assert!(shown.iter().any(|p| p.starts_with("targets.bad.provider: ")), "{shown:?}");
        assert_eq!(s.server.listen, "127.0.0.1:1");
        let web = &s.targets["web"];
        assert_eq!(web.max_duration, Some(Duration::from_secs(1800)));
        let mut p2 = Problems::default();
        let spec = web.to_spec("web", "targets.web", &mut p2);
        assert_eq!(spec.default_branch, "dev");
        assert_eq!(
            p2.errors().map(ToString::to_string).collect::<Vec<_>>(),
            ["targets.web.parameters.env: default has type integer, but the parameter is declared string"]
        );
    }

    #[test]
    fn listen_addresses_and_database_urls_are_checked() {
        let (_, problems) = parse(
            r#"
            [server]
            listen = "bogus"
            metrics_listen = "[::]:9090"
            [database]
            url = "mysql://root@db/cigw"
            "#,
        );
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "server.listen: `bogus` is not `host:port` (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")",
                "database.url: `mysql://root@db/cigw` is not a `sqlite:` or `postgres://` URL",
            ]
        );
    }

    #[test]
    fn provider_fields_are_left_for_the_adapter() {
        let (s, problems) = parse(
            r#"
            [targets.api]
            provider = "codefresh"
            account = "cf"
            pipeline = "proj/api"
            "#,
        );
        assert!(!problems.has_errors(), "{problems:?}");
        assert_eq!(s.targets["api"].provider_fields["pipeline"], "proj/api");
    }

    #[test]
    fn overrides_win_over_the_given_text() {
        let raw = load_raw_from_str(
            "[providers.codefresh.sim]\napi_key = \"k\"\nbase_url = \"http://placeholder\"\n",
            &[("providers.codefresh.sim.base_url", "http://127.0.0.1:4000/api")],
        )
        .unwrap();
        assert_eq!(raw["providers"]["codefresh"]["sim"]["base_url"], "http://127.0.0.1:4000/api");
        assert_eq!(raw["server"]["listen"], "127.0.0.1:8080", "defaults still apply");
    }

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite://cigw.db"), "sqlite://cigw.db");
        let d = DatabaseSettings { url: "postgres://u:hunter2@h/d".into(), ..Default::default() };
        assert!(!format!("{d:?}").contains("hunter2"));
    }

    #[test]
    fn server_limits_have_defaults_and_refuse_zero() {
        let (s, problems) = parse("");
        assert!(problems.all().is_empty(), "{problems:?}");
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.server.max_connections, 1024);
        let (_, problems) = parse(
            r#"
            [server]
            max_connections = 0
            max_event_streams_per_token = 0
            idle_timeout = "0s"
            "#,
        );
        let shown: Vec<String> = problems.all().iter().map(|p| p.to_string()).collect();
        for key in ["server.max_connections", "server.max_event_streams_per_token", "server.idle_timeout"] {
            assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
        }
    }
}
