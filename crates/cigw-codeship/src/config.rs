//! Account and target settings, parsed from `[providers.codeship.<name>]` and the
//! provider-specific keys of `[targets.<name>]`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use cigw_core::RateLimit;
use cigw_core::TargetSpec;
use cigw_core::config::{Problems, join};
use cigw_core::retry::RetryPolicy;
use cigw_core::secret::SecretSetting;
use cigw_core::transport::{TransportConfig, TransportDefaults};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::models::ProjectType;

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.codeship.com/v2";

/// Codeship's documented budget: 60 requests per minute per user.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit::new(NonZeroU32::new(60).unwrap(), Duration::from_secs(60));

fn default_refresh_margin() -> Duration {
    Duration::from_secs(60)
}
fn default_max_pages() -> u32 {
    4
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_status_from_list() -> bool {
    true
}

/// Codeship's defaults for the transport keys.
pub fn transport_defaults() -> TransportDefaults {
    TransportDefaults {
        base_url: DEFAULT_BASE_URL,
        timeout: Duration::from_secs(30),
        rate_limit: Some(DEFAULT_RATE_LIMIT),
        concurrency: 4,
        retry: RetryPolicy {
            min_delay: Duration::from_millis(500),
            // A rate-limited call waits for the next minute, so the cap must allow a full minute.
            max_delay: Duration::from_secs(61),
            max_retries: 5,
            deadline: Duration::from_secs(180),
        },
    }
}

/// The account keys of Codeship's own (the transport keys are read by
/// [`TransportConfig::parse`]).
#[derive(Debug, Deserialize)]
struct RawAccount {
    email: SecretSetting,
    password: SecretSetting,
    organization: String,
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    token_refresh_margin: Duration,
    #[serde(default = "default_max_pages")]
    find_recent_max_pages: u32,
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    clock_skew: Duration,
    #[serde(default = "default_status_from_list")]
    status_from_list: bool,
}

/// A resolved account configuration: secrets read, URL parsed. `Debug` never shows the secrets.
#[derive(Clone)]
pub struct AccountConfig {
    /// Base URL, timeout, rate limit (always set: Codeship's budget by default), concurrency, retries.
    pub transport: TransportConfig,
    /// The API user's email (a secret: `env:NAME`, `file:PATH` or a literal).
    pub email: SecretString,
    /// The API user's password (a secret).
    pub password: SecretString,
    /// Organization uuid, or its name (matched case-insensitively).
    pub organization: String,
    /// The token is exchanged again this long before its `expires_at`.
    pub token_refresh_margin: Duration,
    /// Pages of 50 builds `find_recent` reads at most.
    pub find_recent_max_pages: u32,
    /// Tolerated clock difference with Codeship when comparing `queued_at` to a query's `since`.
    pub clock_skew: Duration,
    /// Status reads come from the project's build list (first page): status reads of one
    /// project made at the same time share one list request (each still sees data read after it
    /// was asked), so many runs of one project cost one request; a build not on that page is
    /// read alone. `false`: every status read is a request for that build.
    pub status_from_list: bool,
}

impl AccountConfig {
    /// A configuration with the defaults, for `email`/`password` in `organization`.
    pub fn new(email: SecretString, password: SecretString, organization: impl Into<String>) -> Self {
        Self {
            transport: TransportConfig::new(&transport_defaults()),
            email,
            password,
            organization: organization.into(),
            token_refresh_margin: default_refresh_margin(),
            find_recent_max_pages: default_max_pages(),
            clock_skew: default_clock_skew(),
            status_from_list: default_status_from_list(),
        }
    }

    /// The same configuration against another base URL (tests, simulators, proxies).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.transport.base_url = base_url;
        self
    }

    /// Parse `table` (at key path `path`), reporting every problem.
    pub fn parse(path: &str, table: &serde_json::Value, problems: &mut Problems) -> Option<Self> {
        let before = problems.errors().count();
        let (rest, transport) = TransportConfig::parse(path, table, &transport_defaults(), problems);
        let raw: RawAccount = problems.parse(path, &rest)?;
        let email = raw.email.resolve_at(&join(path, "email"), problems);
        let password = raw.password.resolve_at(&join(path, "password"), problems);
        if raw.organization.trim().is_empty() {
            problems.error(join(path, "organization"), "expected the organization uuid or name, got an empty string");
        }
        if raw.find_recent_max_pages == 0 {
            problems.error(join(path, "find_recent_max_pages"), "expected at least 1");
        }
        if let Some(limit) = transport.as_ref().and_then(|t| t.rate_limit)
            && limit.requests.get() as u64 * 60 / limit.per.as_secs().max(1) > 60
        {
            problems.warn(
                join(path, "rate_limit"),
                "above Codeship's documented 60 requests per minute; expect 403 Rate Limit Exceeded answers",
            );
        }
        if problems.errors().count() > before {
            return None;
        }
        Some(Self {
            transport: transport?,
            email: email?,
            password: password?,
            organization: raw.organization.trim().to_string(),
            token_refresh_margin: raw.token_refresh_margin,
            find_recent_max_pages: raw.find_recent_max_pages,
            clock_skew: raw.clock_skew,
            status_from_list: raw.status_from_list,
        })
    }
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("transport", &self.transport)
            .field("email", &"<redacted>")
            .field("password", &"<redacted>")
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

/// The provider keys of a Codeship `[targets.<name>]` as written.
#[derive(Debug, Deserialize)]
struct RawTarget {
    project_uuid: String,
    #[serde(default)]
    project_type: Option<ProjectType>,
}

/// A parsed Codeship target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// The project uuid.
    pub project_uuid: String,
    /// `basic` or `pro`; discovered with one GET when absent.
    pub project_type: Option<ProjectType>,
}

impl TargetConfig {
    /// Parse and check the provider keys of a target (at key path `path`), refusing declared
    /// parameters (Codeship builds take none).
    pub fn parse(
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let before = problems.errors().count();
        let raw: RawTarget = problems.parse(path, &serde_json::Value::Object(table.clone()))?;
        if let Err(e) = check_uuid_shape(&raw.project_uuid) {
            problems.error(join(path, "project_uuid"), e);
        }
        if !spec.parameters.is_empty() {
            let names: Vec<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
            problems.error(
                join(path, "parameters"),
                format!(
                    "a Codeship target cannot declare parameters (Codeship builds take none); remove: {}",
                    names.join(", ")
                ),
            );
        }
        (problems.errors().count() == before)
            .then_some(Self { project_uuid: raw.project_uuid, project_type: raw.project_type })
    }
}

/// Codeship uuids are not validated strictly (an official fixture has a `g` in one), but they
/// go into URL paths, so only letters, digits and dashes are accepted.
pub fn check_uuid_shape(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("expected a Codeship uuid, got an empty string".into());
    }
    if value.len() > 64 || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("expected a Codeship uuid (letters, digits and dashes), got `{value}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn spec() -> TargetSpec {
        TargetSpec {
            name: "web".into(),
            provider: cigw_core::ProviderKind::Codeship,
            account: "main".into(),
            default_branch: "main".into(),
            parameters: Vec::new(),
            max_duration: None,
            concurrency: cigw_core::ConcurrencyPolicy::Queue,
            debounce: None,
            description: None,
        }
    }

    fn messages(p: &Problems) -> Vec<String> {
        p.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn minimal_account_takes_the_defaults() {
        let mut p = Problems::default();
        let cfg = AccountConfig::parse(
            "providers.codeship.main",
            &json!({"email": "ci@example.com", "password": "pw", "organization": "Acme"}),
            &mut p,
        )
        .unwrap();
        assert!(!p.has_errors(), "{p:?}");
        assert_eq!(p.warnings().count(), 2, "two literal secrets");
        assert_eq!(cfg.transport.base_url.as_str(), "https://api.codeship.com/v2");
        assert_eq!(cfg.transport.rate_limit, Some(DEFAULT_RATE_LIMIT));
        assert_eq!(cfg.transport.timeout, Duration::from_secs(30));
        assert_eq!(cfg.email.expose_secret(), "ci@example.com");
        assert_eq!(cfg.token_refresh_margin, Duration::from_secs(60));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut p = Problems::default();
        let cfg = AccountConfig::parse(
            "providers.codeship.main",
            &json!({"email": "env:CIGW_TEST_SURELY_UNSET_EMAIL", "password": "pw", "organization": " ",
                    "base_url": "ftp://x", "concurrency": 0, "colour": "blue"}),
            &mut p,
        );
        assert!(cfg.is_none());
        let shown = messages(&p);
        assert!(shown.contains(&"providers.codeship.main.colour: unknown key".to_string()), "{shown:?}");
        assert!(
            shown.iter().any(|m| m.starts_with("providers.codeship.main.email: environment variable")),
            "{shown:?}"
        );
        assert!(shown.iter().any(|m| m.starts_with("providers.codeship.main.base_url: expected an http")), "{shown:?}");
        assert!(shown.iter().any(|m| m.starts_with("providers.codeship.main.organization: ")), "{shown:?}");
        assert!(
            shown.contains(&"providers.codeship.main.concurrency: expected at least 1 in-flight request".to_string()),
            "{shown:?}"
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let mut p = Problems::default();
        let cfg = AccountConfig::parse(
            "providers.codeship.main",
            &json!({"email": "e", "password": "pw", "organization": "o", "timeout": "soon"}),
            &mut p,
        );
        assert!(cfg.is_none());
        assert!(messages(&p).iter().any(|m| m.starts_with("providers.codeship.main.timeout: ")), "{p:?}");
    }

    #[test]
    fn the_default_rate_limit_is_codeships_budget() {
        assert_eq!(RateLimit::parse("60/min").unwrap(), DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn debug_hides_the_secrets() {
        let cfg = AccountConfig::new("ci@example.com".into(), "hunter2".into(), "acme");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("ci@example.com"), "{shown}");
    }

    #[test]
    fn target_keys() {
        let mut p = Problems::default();
        let t = TargetConfig::parse(
            &spec(),
            "targets.web",
            json!({"project_uuid": "0059df30-7701-0135-8810-6e5f001a2e3c", "project_type": "pro"}).as_object().unwrap(),
            &mut p,
        )
        .unwrap();
        assert_eq!(t.project_type, Some(ProjectType::Pro));
        let bad = TargetConfig::parse(
            &spec(),
            "targets.web",
            json!({"project_uuid": "a", "project_type": "enterprise"}).as_object().unwrap(),
            &mut p,
        );
        assert!(bad.is_none());
        let unknown = TargetConfig::parse(
            &spec(),
            "targets.web",
            json!({"project_uuid": "a", "slug": "x"}).as_object().unwrap(),
            &mut p,
        );
        assert!(unknown.is_none());
        let shown = messages(&p);
        assert!(
            shown.iter().any(|m| m.starts_with("targets.web.project_type: unknown variant `enterprise`")),
            "{shown:?}"
        );
        assert!(shown.contains(&"targets.web.slug: unknown key".to_string()), "{shown:?}");
        let mut p = Problems::default();
        assert!(
            TargetConfig::parse(&spec(), "t", json!({"project_uuid": "a/b"}).as_object().unwrap(), &mut p).is_none()
        );
        assert_eq!(messages(&p), ["t.project_uuid: expected a Codeship uuid (letters, digits and dashes), got `a/b`"]);
    }
}
