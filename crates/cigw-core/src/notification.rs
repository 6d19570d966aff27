//! Outbound notifications (`[notifications.<name>]`): where run events are POSTed as signed
//! CDEvents, which of them, and how deliveries are retried. The gateway builds and sends the
//! events; this module only parses and checks the configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::config::Problems;
use crate::provider::ProviderKind;
use crate::secret::SecretSetting;
use crate::signature::standard_webhooks;
use crate::state::RunState;

/// The run states a notification can be about: `pending` (the run was queued: CDEvents
/// `pipelinerun.queued`), `running` (`pipelinerun.started`) and the terminal states
/// (`pipelinerun.finished`).
pub const NOTIFIED_STATES: [RunState; 7] = [
    RunState::Pending,
    RunState::Running,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Canceled,
    RunState::Skipped,
    RunState::Error,
];

/// `[notifications.<name>]` as written (unknown keys are collected by [`Problems::parse`]).
#[derive(Debug, Clone, Deserialize)]
struct RawNotification {
    url: String,
    secrets: Vec<SecretSetting>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    states: Vec<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    backoff_base: Duration,
    #[serde(default = "default_backoff_cap", with = "humantime_serde")]
    backoff_cap: Duration,
    #[serde(default)]
    description: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_cap() -> Duration {
    Duration::from_secs(600)
}

/// The Standard Webhooks signing keys of a notification, first one signing first. `Debug`
/// shows only how many there are.
#[derive(Clone)]
pub struct SigningKeys(Arc<[SecretSlice<u8>]>);

impl SigningKeys {
    /// Keys from their bytes (tests; configuration goes through [`Notification::parse`]).
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self(keys.into_iter().map(SecretSlice::from).collect())
    }

    /// Each key's bytes, in configuration order.
    pub fn each(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|k| k.expose_secret())
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys({} redacted)", self.0.len())
    }
}

/// How deliveries are attempted and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Longest a whole attempt may take (connect, send, answer).
    pub timeout: Duration,
    /// Longest the connection may take to open.
    pub connect_timeout: Duration,
    /// Attempts before a delivery is dead-lettered (the give-up limit; at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; each later wait doubles (with jitter).
    pub backoff_base: Duration,
    /// The longest wait between two attempts (a `Retry-After` may ask for longer, up to an hour).
    pub backoff_cap: Duration,
}

/// Which run events a notification is about. Empty lists mean "all".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Target names or globs (`web-*`).
    pub targets: Vec<String>,
    matchers: Vec<globset::GlobMatcher>,
    /// States the event leaves the run in (see [`NOTIFIED_STATES`]).
    pub states: Vec<RunState>,
    /// Providers of the run's target.
    pub providers: Vec<ProviderKind>,
}

impl EventFilter {
    /// Whether an event of a run of `target` on `provider` that leaves it in `state` is wanted.
    pub fn matches(&self, target: &str, provider: ProviderKind, state: RunState) -> bool {
        (self.matchers.is_empty() || self.matchers.iter().any(|m| m.is_match(target)))
            && (self.states.is_empty() || self.states.contains(&state))
            && (self.providers.is_empty() || self.providers.contains(&provider))
    }
}

/// One configured notification.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Its name (the table key).
    pub name: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// The signing keys (rotation: every key signs, receivers accept any).
    pub keys: SigningKeys,
    /// Which events.
    pub filter: EventFilter,
    /// Timeouts and retries.
    pub delivery: DeliverySettings,
    /// Free text for people.
    pub description: Option<String>,
}

/// Why `text` is not a URL a notification can POST to.
pub fn check_url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("`{text}` is not an http:// or https:// URL"))?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("credentials in the URL are not supported (the receiver checks the signature instead)".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("`{text}` has an unclosed `[` in its host")),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if let Some(port) = port {
        port.parse::<u16>().map_err(|_| format!("`{port}` is not a port number"))?;
    }
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    Ok(())
}

impl Notification {
    /// Parse `[notifications.<name>]`, recording problems at their key paths (never a secret).
    pub fn parse(name: &str, value: &serde_json::Value, problems: &mut Problems) -> Option<Notification> {
        let path = format!("notifications.{name}");
        let raw: RawNotification = problems.parse(&path, value)?;
        let mut ok = true;
        if let Err(why) = check_url(&raw.url) {
            problems.error(format!("{path}.url"), why);
            ok = false;
        }
        if raw.secrets.is_empty() {
            problems.error(format!("{path}.secrets"), "give at least one `whsec_…` secret (several while rotating)");
            ok = false;
        }
        let mut keys = Vec::new();
        for (i, setting) in raw.secrets.iter().enumerate() {
            let at = format!("{path}.secrets[{i}]");
            let Some(secret) = setting.resolve_at(&at, problems) else {
                ok = false;
                continue;
            };
            match standard_webhooks::key(secret.expose_secret()) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    problems.error(at, why);
                    ok = false;
                }
            }
        }
        let mut matchers = Vec::new();
        for (i, pattern) in raw.targets.iter().enumerate() {
            match globset::GlobBuilder::new(pattern).literal_separator(false).build() {
                Ok(g) => matchers.push(g.compile_matcher()),
                Err(e) => {
                    problems.error(format!("{path}.targets[{i}]"), format!("glob `{pattern}`: {}", e.kind()));
                    ok = false;
                }
            }
        }
        let mut states = Vec::new();
        for (i, text) in raw.states.iter().enumerate() {
            match text.parse::<RunState>() {
                Ok(s) if NOTIFIED_STATES.contains(&s) => states.push(s),
                _ => {
                    let known: Vec<&str> = NOTIFIED_STATES.iter().map(|s| s.as_str()).collect();
                    problems.error(
                        format!("{path}.states[{i}]"),
                        format!("`{text}` is not a state notifications are sent for (expected {})", known.join(", ")),
                    );
                    ok = false;
                }
            }
        }
        let mut providers = Vec::new();
        for (i, text) in raw.providers.iter().enumerate() {
            match text.parse::<ProviderKind>() {
                Ok(p) => providers.push(p),
                Err(e) => {
                    problems.error(format!("{path}.providers[{i}]"), e);
                    ok = false;
                }
            }
        }
        let durations = [
            ("timeout", raw.timeout),
            ("connect_timeout", raw.connect_timeout),
            ("backoff_base", raw.backoff_base),
            ("backoff_cap", raw.backoff_cap),
        ];
        for (key, d) in durations {
            if d.is_zero() {
                problems.error(format!("{path}.{key}"), "must be longer than 0s");
                ok = false;
            }
        }
        if raw.backoff_cap < raw.backoff_base {
            problems.error(format!("{path}.backoff_cap"), "must be at least `backoff_base`");
            ok = false;
        }
        if raw.max_attempts == 0 {
            problems.error(format!("{path}.max_attempts"), "must be at least 1");
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(Notification {
            name: name.to_string(),
            url: raw.url,
            keys: SigningKeys::new(keys),
            filter: EventFilter { targets: raw.targets, matchers, states, providers },
            delivery: DeliverySettings {
                timeout: raw.timeout,
                connect_timeout: raw.connect_timeout,
                max_attempts: raw.max_attempts,
                backoff_base: raw.backoff_base,
                backoff_cap: raw.backoff_cap,
            },
            description: raw.description,
        })
    }

    /// Check the target names against the configured targets: a plain name must exist, a glob
    /// that matches none is worth a warning.
    pub fn check(&self, catalog: &Catalog, problems: &mut Problems) {
        let path = format!("notifications.{}", self.name);
        for (i, (pattern, matcher)) in self.filter.targets.iter().zip(&self.filter.matchers).enumerate() {
            if catalog.targets.keys().any(|t| matcher.is_match(t)) {
                continue;
            }
            let known: Vec<&str> = catalog.targets.keys().map(String::as_str).collect();
            let is_glob = pattern.contains(['*', '?', '[', '{']);
            let message = format!(
                "{} `{pattern}` (known targets: {})",
                if is_glob { "no target matches" } else { "unknown target" },
                known.join(", ")
            );
            if is_glob {
                problems.warn(format!("{path}.targets[{i}]"), message);
            } else {
                problems.error(format!("{path}.targets[{i}]"), message);
            }
        }
    }
}

/// Parse every `[notifications.<name>]` table.
pub fn parse_all(
    tables: &std::collections::BTreeMap<String, serde_json::Value>,
    problems: &mut Problems,
) -> std::collections::BTreeMap<String, Notification> {
    tables.iter().filter_map(|(name, v)| Notification::parse(name, v, problems).map(|n| (name.clone(), n))).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(value: serde_json::Value) -> (Option<Notification>, Vec<String>) {
        let mut problems = Problems::default();
        let n = Notification::parse("ops", &value, &mut problems);
        (n, problems.all().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_and_filters() {
        // Any two kinds: this file stays out of the "adding a provider" list (no provider named).
        let [wanted, other, ..] = ProviderKind::ALL;
        let (n, problems) = parse(json!({"url": "https://hooks.example.com/cigw", "secrets": [SECRET],
            "targets": ["web-*", "api"], "states": ["failed", "error"], "providers": [wanted.as_str()]}));
        let n = n.unwrap();
        assert_eq!(problems.len(), 1, "only the literal-secret warning: {problems:?}");
        assert_eq!(n.delivery.max_attempts, 10);
        assert_eq!(n.delivery.timeout, Duration::from_secs(10));
        assert_eq!(n.keys.len(), 1);
        assert!(n.filter.matches("web-e2e", wanted, RunState::Failed));
        assert!(n.filter.matches("api", wanted, RunState::Error));
        assert!(!n.filter.matches("api", wanted, RunState::Succeeded), "state");
        assert!(!n.filter.matches("api", other, RunState::Failed), "provider");
        assert!(!n.filter.matches("docs", wanted, RunState::Failed), "target");
        let all = EventFilter::default();
        assert!(all.matches("anything", other, RunState::Pending));
    }

    #[test]
    fn every_mistake_is_reported_at_its_path_without_the_secret() {
        let (n, problems) =
            parse(json!({"url": "ftp://x", "secrets": ["whsec_not base64!", "env:CIGW_SURELY_UNSET_X"],
            "targets": ["[bad"], "states": ["queued"], "providers": ["jenkins"], "max_attempts": 0,
            "timeout": "0s", "backoff_base": "10m", "backoff_cap": "1m", "colour": "red"}));
        assert!(n.is_none());
        for key in [
            "notifications.ops.url: ",
            "notifications.ops.secrets[0]: a Standard Webhooks secret is base64",
            "notifications.ops.secrets[1]: environment variable `CIGW_SURELY_UNSET_X` is not set",
            "notifications.ops.targets[0]: glob",
            "notifications.ops.states[0]: `queued` is not a state",
            "notifications.ops.providers[0]: unknown provider",
            "notifications.ops.max_attempts: ",
            "notifications.ops.timeout: ",
            "notifications.ops.backoff_cap: ",
            "notifications.ops.colour: unknown key",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(key)), "{key}: {problems:?}");
        }
        assert!(!problems.iter().any(|p| p.contains("not base64!")), "the secret is never shown: {problems:?}");
        let (_, problems) = parse(json!({"url": "https://x", "secrets": []}));
        assert!(problems.iter().any(|p| p.starts_with("notifications.ops.secrets: ")), "{problems:?}");
    }

    #[test]
    fn urls() {
        for good in ["http://127.0.0.1:9000/hook", "https://example.com", "https://[::1]:8443/x?y=1", "http://h:1"] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in ["", "example.com", "https://", "http://:80/", "https://a b", "https://u:p@h/", "http://h:99999/"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_never_reach_debug() {
        let (n, _) = parse(json!({"url": "https://x", "secrets": [SECRET, SECRET]}));
        let shown = format!("{:?}", n.unwrap());
        assert!(shown.contains("SigningKeys(2 redacted)"), "{shown}");
        assert!(!shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    }
}
