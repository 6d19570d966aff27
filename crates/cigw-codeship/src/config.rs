//! Account and target settings, parsed from `[providers.codeship.<name>]` and the
//! provider-specific keys of `[targets.<name>]`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use cigw_core::RateLimit;
use cigw_core::config::{Problems, join};
use cigw_core::retry::RetryPolicy;
use cigw_core::secret::SecretSetting;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::models::ProjectType;

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.codeship.com/v2";

/// Codeship's documented budget: 60 requests per minute per user.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit::new(NonZeroU32::new(60).unwrap(), Duration::from_secs(60));

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_rate_limit() -> RateLimit {
    DEFAULT_RATE_LIMIT
}
fn default_concurrency() -> usize {
    4
}
fn default_max_retries() -> usize {
    5
}
fn default_retry_min_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max_delay() -> Duration {
    // A rate-limited call waits for the next minute, so the cap must allow a full minute.
    Duration::from_secs(61)
}
fn default_retry_deadline() -> Duration {
    Duration::from_secs(180)
}
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

/// `[providers.codeship.<name>]` as written.
#[derive(Debug, Deserialize)]
pub struct AccountSettings {
    /// API base URL; a path is kept when joined.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The API user's email (a secret: `env:NAME`, `file:PATH` or a literal).
    pub email: SecretSetting,
    /// The API user's password (a secret).
    pub password: SecretSetting,
    /// Organization uuid, or its name (matched case-insensitively).
    pub organization: String,
    /// Time limit of one HTTP request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Request budget of the credential, shared by every target of the account.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: RateLimit,
    /// Most requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Retries after the first attempt.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// First backoff delay.
    #[serde(default = "default_retry_min_delay", with = "humantime_serde")]
    pub retry_min_delay: Duration,
    /// Largest backoff delay (and largest honoured rate-limit wait).
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// No retry starts later than this after the first attempt.
    #[serde(default = "default_retry_deadline", with = "humantime_serde")]
    pub retry_deadline: Duration,
    /// The token is exchanged again this long before its `expires_at`.
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub token_refresh_margin: Duration,
    /// Pages of 50 builds `find_recent` reads at most.
    #[serde(default = "default_max_pages")]
    pub find_recent_max_pages: u32,
    /// Tolerated clock difference with Codeship when comparing `queued_at` to a query's `since`.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Status reads come from the project's build list (first page): status reads of one
    /// project made at the same time share one list request (each still sees data read after it
    /// was asked), so many runs of one project cost one request; a build not on that page is
    /// read alone. `false`: every status read is a request for that build.
    #[serde(default = "default_status_from_list")]
    pub status_from_list: bool,
}

/// A resolved account configuration: secrets read, URL parsed. `Debug` never shows the secrets.
#[derive(Clone)]
pub struct AccountConfig {
    /// API base URL.
    pub base_url: Url,
    /// The API user's email.
    pub email: SecretString,
    /// The API user's password.
    pub password: SecretString,
    /// Organization uuid or name.
    pub organization: String,
    /// Time limit of one HTTP request.
    pub timeout: Duration,
    /// Request budget.
    pub rate_limit: RateLimit,
    /// Most requests in flight.
    pub concurrency: usize,
    /// Retry policy of every call.
    pub retry: RetryPolicy,
    /// Token refresh margin.
    pub token_refresh_margin: Duration,
    /// Pages `find_recent` reads at most.
    pub find_recent_max_pages: u32,
    /// Tolerated clock difference.
    pub clock_skew: Duration,
    /// Status reads of one project share reads of its build list.
    pub status_from_list: bool,
}

impl AccountConfig {
    /// A configuration with the defaults, for `email`/`password` in `organization`.
    pub fn new(email: SecretString, password: SecretString, organization: impl Into<String>) -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL parses"),
            email,
            password,
            organization: organization.into(),
            timeout: default_timeout(),
            rate_limit: DEFAULT_RATE_LIMIT,
            concurrency: default_concurrency(),
            retry: RetryPolicy {
                min_delay: default_retry_min_delay(),
                max_delay: default_retry_max_delay(),
                max_retries: default_max_retries(),
                deadline: default_retry_deadline(),
            },
            token_refresh_margin: default_refresh_margin(),
            find_recent_max_pages: default_max_pages(),
            clock_skew: default_clock_skew(),
            status_from_list: default_status_from_list(),
        }
    }

    /// The same configuration against another base URL (tests, simulators, proxies).
    pub fn with_base_url(mut self, base_url: Url) -> Self {
        self.base_url = base_url;
        self
    }

    /// Parse `table` (at key path `path`), reporting every problem.
    pub fn parse(path: &str, table: &serde_json::Value, problems: &mut Problems) -> Option<Self> {
        let settings: AccountSettings = problems.parse(path, table)?;
        let before = problems.errors().count();
        let email = settings.email.resolve_at(&join(path, "email"), problems);
        let password = settings.password.resolve_at(&join(path, "password"), problems);
        let base_url = match parse_base_url(&settings.base_url) {
            Ok(u) => Some(u),
            Err(e) => {
                problems.error(join(path, "base_url"), e);
                None
            }
        };
        if settings.organization.trim().is_empty() {
            problems.error(join(path, "organization"), "expected the organization uuid or name, got an empty string");
        }
        if settings.concurrency == 0 {
            problems.error(join(path, "concurrency"), "expected at least 1");
        }
        if settings.find_recent_max_pages == 0 {
            problems.error(join(path, "find_recent_max_pages"), "expected at least 1");
        }
        if settings.retry_min_delay > settings.retry_max_delay {
            problems.error(join(path, "retry_min_delay"), "must not be larger than retry_max_delay");
        }
        if settings.rate_limit.requests.get() as u64 * 60 / settings.rate_limit.per.as_secs().max(1) > 60 {
            problems.warn(
                join(path, "rate_limit"),
                "above Codeship's documented 60 requests per minute; expect 403 Rate Limit Exceeded answers",
            );
        }
        if problems.errors().count() > before {
            return None;
        }
        Some(Self {
            base_url: base_url?,
            email: email?,
            password: password?,
            organization: settings.organization.trim().to_string(),
            timeout: settings.timeout,
            rate_limit: settings.rate_limit,
            concurrency: settings.concurrency,
            retry: RetryPolicy {
                min_delay: settings.retry_min_delay,
                max_delay: settings.retry_max_delay,
                max_retries: settings.max_retries,
                deadline: settings.retry_deadline,
            },
            token_refresh_margin: settings.token_refresh_margin,
            find_recent_max_pages: settings.find_recent_max_pages,
            clock_skew: settings.clock_skew,
            status_from_list: settings.status_from_list,
        })
    }
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("base_url", &self.base_url.as_str())
            .field("email", &"<redacted>")
            .field("password", &"<redacted>")
            .field("organization", &self.organization)
            .field("timeout", &self.timeout)
            .field("rate_limit", &self.rate_limit)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Parse a base URL: http or https, no query or fragment, no credentials.
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("expected an http(s) URL, got `{text}` ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("expected an http or https URL, got scheme `{}`", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use `email` and `password`".into());
    }
    Ok(url)
}

/// The provider-specific keys of a Codeship `[targets.<name>]`.
#[derive(Debug, Deserialize)]
pub struct TargetSettings {
    /// The project uuid.
    pub project_uuid: String,
    /// `basic` or `pro`; discovered with one GET when absent.
    #[serde(default)]
    pub project_type: Option<ProjectType>,
}

impl TargetSettings {
    /// Parse and check the keys (at key path `path`).
    pub fn parse(
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let before = problems.errors().count();
        let settings: TargetSettings = problems.parse(path, &serde_json::Value::Object(table.clone()))?;
        if let Err(e) = check_uuid_shape(&settings.project_uuid) {
            problems.error(join(path, "project_uuid"), e);
        }
        (problems.errors().count() == before).then_some(settings)
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
        assert_eq!(cfg.base_url.as_str(), "https://api.codeship.com/v2");
        assert_eq!(cfg.rate_limit, DEFAULT_RATE_LIMIT);
        assert_eq!(cfg.timeout, Duration::from_secs(30));
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
        assert!(shown.contains(&"providers.codeship.main.concurrency: expected at least 1".to_string()), "{shown:?}");
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
        let t = TargetSettings::parse(
            "targets.web",
            json!({"project_uuid": "0059df30-7701-0135-8810-6e5f001a2e3c", "project_type": "pro"}).as_object().unwrap(),
            &mut p,
        )
        .unwrap();
        assert_eq!(t.project_type, Some(ProjectType::Pro));
        let bad = TargetSettings::parse(
            "targets.web",
            json!({"project_uuid": "a", "project_type": "enterprise"}).as_object().unwrap(),
            &mut p,
        );
        assert!(bad.is_none());
        let unknown = TargetSettings::parse(
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
        assert!(TargetSettings::parse("t", json!({"project_uuid": "a/b"}).as_object().unwrap(), &mut p).is_none());
        assert_eq!(messages(&p), ["t.project_uuid: expected a Codeship uuid (letters, digits and dashes), got `a/b`"]);
    }
}
