//! Account settings (`[providers.circleci.<name>]`) and target settings (the CircleCI keys of
//! `[targets.<name>]`), parsed with every problem reported at its key path.

use std::fmt;
use std::time::Duration;

use cigw_core::config::{Problems, join};
use cigw_core::retry::RetryPolicy;
use cigw_core::secret::SecretSetting;
use cigw_core::transport::{TransportConfig, TransportDefaults, parse_base_url};
use cigw_core::{ParamType, ParamValue, TargetSpec};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::slug::ProjectSlug;

/// CircleCI's public API.
pub const DEFAULT_BASE_URL: &str = "https://circleci.com/api/v2";
/// CircleCI's web app, for links to pipelines.
pub const DEFAULT_APP_URL: &str = "https://app.circleci.com";
/// Most parameters one pipeline takes.
pub const MAX_PARAMETERS: usize = 100;
/// Longest parameter name.
pub const MAX_PARAMETER_NAME: usize = 128;
/// Longest parameter value (as text).
pub const MAX_PARAMETER_VALUE: usize = 512;
/// A declared parameter of this name (type string) is filled with the gateway run id, so the
/// pipeline carries its correlation id.
pub const RUN_ID_PARAMETER: &str = "cigw_run_id";

/// How the token is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `Circle-Token: <token>` (the spec's `api_key_header`).
    #[default]
    CircleToken,
    /// `Authorization: Bearer <token>` (recommended by newer docs; not in the 2025 spec).
    Bearer,
}

/// The account keys of CircleCI's own (the transport keys are read by
/// [`TransportConfig::parse`]).
#[derive(Debug, Deserialize)]
struct RawAccount {
    token: SecretSetting,
    #[serde(default)]
    auth: AuthScheme,
    #[serde(default)]
    app_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    setup_grace: Option<Duration>,
    #[serde(default)]
    max_pages: Option<usize>,
    #[serde(default)]
    webhook_secrets: Vec<SecretSetting>,
}

/// CircleCI's defaults for the transport keys.
pub fn transport_defaults() -> TransportDefaults {
    TransportDefaults {
        base_url: DEFAULT_BASE_URL,
        timeout: Duration::from_secs(30),
        rate_limit: None,
        concurrency: 8,
        retry: RetryPolicy::default(),
    }
}

/// A parsed, resolved account.
#[derive(Clone)]
pub struct AccountConfig {
    /// Base URL (`…/api/v2`, its path kept when joined), timeout, rate limit, concurrency, retries.
    pub transport: TransportConfig,
    /// The web app root, for links.
    pub app_url: Url,
    /// The API token.
    pub token: SecretString,
    /// How the token is sent.
    pub auth: AuthScheme,
    /// How long a `created` pipeline may show no workflows before it counts as skipped.
    pub setup_grace: Duration,
    /// Most pages read from one paginated list.
    pub max_pages: usize,
    /// Webhook signing secrets (several while rotating).
    pub webhook_secrets: Vec<SecretString>,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("transport", &self.transport)
            .field("app_url", &self.app_url.as_str())
            .field("token", &"<redacted>")
            .field("auth", &self.auth)
            .field("setup_grace", &self.setup_grace)
            .field("max_pages", &self.max_pages)
            .field("webhook_secrets", &format_args!("<{} redacted>", self.webhook_secrets.len()))
            .finish()
    }
}

impl AccountConfig {
    /// An account with defaults, for tests and embedding.
    pub fn new(base_url: Url, token: SecretString) -> Self {
        Self {
            transport: TransportConfig { base_url, ..TransportConfig::new(&transport_defaults()) },
            app_url: Url::parse(DEFAULT_APP_URL).expect("constant URL"),
            token,
            auth: AuthScheme::CircleToken,
            setup_grace: Duration::from_secs(60),
            max_pages: 20,
            webhook_secrets: Vec::new(),
        }
    }

    /// Parse `table` (at key path `path`), recording every problem.
    pub fn parse(path: &str, table: &serde_json::Value, problems: &mut Problems) -> Option<Self> {
        let before = problems.errors().count();
        let (rest, transport) = TransportConfig::parse(path, table, &transport_defaults(), problems);
        let raw: RawAccount = problems.parse(path, &rest)?;
        let token = raw.token.resolve_at(&join(path, "token"), problems);
        let app_url = parse_base_url(raw.app_url.as_deref().unwrap_or(DEFAULT_APP_URL))
            .map_err(|e| problems.error(join(path, "app_url"), e))
            .ok();
        let max_pages = raw.max_pages.unwrap_or(20);
        if max_pages == 0 {
            problems.error(join(path, "max_pages"), "expected at least 1 page");
        }
        let webhook_secrets: Vec<SecretString> = raw
            .webhook_secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.resolve_at(&format!("{}[{i}]", join(path, "webhook_secrets")), problems))
            .collect();
        if problems.errors().count() > before {
            return None;
        }
        Some(Self {
            transport: transport?,
            app_url: app_url?,
            token: token?,
            auth: raw.auth,
            setup_grace: raw.setup_grace.unwrap_or(Duration::from_secs(60)),
            max_pages,
            webhook_secrets,
        })
    }
}

/// The raw CircleCI keys of a target table.
#[derive(Debug, Deserialize)]
struct RawTarget {
    project_slug: String,
    #[serde(default)]
    definition_id: Option<String>,
    #[serde(default)]
    ignore_sha: bool,
    #[serde(default, with = "humantime_serde")]
    setup_grace: Option<Duration>,
}

/// A parsed CircleCI target.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The project.
    pub slug: ProjectSlug,
    /// The pipeline definition for `/pipeline/run`; required for `circleci/…` slugs.
    pub definition_id: Option<String>,
    /// Accept a requested sha and build the branch head instead of refusing it.
    pub ignore_sha: bool,
    /// Overrides the account's setup grace.
    pub setup_grace: Option<Duration>,
    /// The target declares `cigw_run_id`, so triggers fill it with the gateway run id.
    pub run_id_parameter: bool,
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

impl TargetConfig {
    /// Parse the provider keys of `targets.<name>` and check the declared parameters against
    /// CircleCI's limits.
    pub fn parse(
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let raw: RawTarget = problems.parse(path, &serde_json::Value::Object(table.clone()))?;
        let before = problems.errors().count();
        let slug = match ProjectSlug::parse(&raw.project_slug) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.error(join(path, "project_slug"), e);
                None
            }
        };
        if let Some(id) = &raw.definition_id
            && !is_uuid(id)
        {
            problems.error(join(path, "definition_id"), format!("`{id}`: expected a pipeline definition UUID"));
        }
        if let Some(s) = &slug
            && s.needs_definition_id()
            && raw.definition_id.is_none()
        {
            problems.error(
                join(path, "definition_id"),
                "required for `circleci/…` slugs (GitHub App, GitLab and Bitbucket DC projects cannot use the \
                 classic trigger); find it under Project Settings > Pipelines",
            );
        }
        check_declared_parameters(spec, path, problems);
        if problems.errors().count() > before {
            return None;
        }
        Some(Self {
            slug: slug?,
            definition_id: raw.definition_id,
            ignore_sha: raw.ignore_sha,
            setup_grace: raw.setup_grace,
            run_id_parameter: spec.parameters.iter().any(|p| p.name == RUN_ID_PARAMETER),
        })
    }
}

fn check_declared_parameters(spec: &TargetSpec, path: &str, problems: &mut Problems) {
    if spec.parameters.len() > MAX_PARAMETERS {
        problems.error(
            join(path, "parameters"),
            format!("{} parameters declared; CircleCI takes at most {MAX_PARAMETERS}", spec.parameters.len()),
        );
    }
    for p in &spec.parameters {
        let at = format!("{}.{}", join(path, "parameters"), p.name);
        if p.name.chars().count() > MAX_PARAMETER_NAME {
            problems.error(&at, format!("the name is longer than CircleCI's {MAX_PARAMETER_NAME} characters"));
        }
        let values = p.default.iter().chain(p.allowed.iter().flatten());
        if values.clone().any(|v| matches!(v, ParamValue::String(s) if s.chars().count() > MAX_PARAMETER_VALUE)) {
            problems.error(&at, format!("a value is longer than CircleCI's {MAX_PARAMETER_VALUE} characters"));
        }
        if p.name == RUN_ID_PARAMETER && p.kind != ParamType::String {
            problems.error(&at, format!("`{RUN_ID_PARAMETER}` carries the gateway run id and must be a string"));
        }
    }
}

#[cfg(test)]
mod tests {
    use cigw_core::{ConcurrencyPolicy, ParameterSpec, ProviderKind};
    use serde_json::json;

    use super::*;

    fn spec(parameters: Vec<ParameterSpec>) -> TargetSpec {
        TargetSpec {
            name: "web".into(),
            provider: ProviderKind::Circleci,
            account: "main".into(),
            default_branch: "main".into(),
            parameters,
            max_duration: None,
            concurrency: ConcurrencyPolicy::Queue,
            debounce: None,
            description: None,
        }
    }

    fn param(name: &str, kind: ParamType) -> ParameterSpec {
        ParameterSpec {
            name: name.into(),
            kind,
            default: None,
            allowed: None,
            required: false,
            secret: false,
            description: None,
        }
    }

    fn shown(p: &Problems) -> Vec<String> {
        p.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn account_defaults_and_every_key() {
        let mut p = Problems::default();
        let a = AccountConfig::parse("providers.circleci.main", &json!({"token": "tok-123"}), &mut p).unwrap();
        assert_eq!(a.transport.base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(a.transport.timeout, Duration::from_secs(30));
        assert_eq!(a.setup_grace, Duration::from_secs(60));
        assert_eq!(p.warnings().count(), 1, "a literal token is a warning");
        let mut p = Problems::default();
        let a = AccountConfig::parse(
            "providers.circleci.main",
            &json!({"token": "tok", "auth": "bearer", "base_url": "https://ci.example.com/api/v2", "timeout": "5s",
                    "rate_limit": "600/min", "concurrency": 2, "max_retries": 1, "retry_min_delay": "1ms",
                    "retry_max_delay": "2ms", "retry_deadline": "1s", "setup_grace": "2m", "max_pages": 3,
                    "webhook_secrets": ["one", "two"], "app_url": "https://ci.example.com"}),
            &mut p,
        )
        .unwrap();
        assert!(!p.has_errors(), "{p:?}");
        assert_eq!(a.auth, AuthScheme::Bearer);
        assert_eq!(a.transport.rate_limit.unwrap().per, Duration::from_secs(60));
        assert_eq!(a.transport.retry.max_retries, 1);
        assert_eq!(a.webhook_secrets.len(), 2);
        assert_eq!(a.setup_grace, Duration::from_secs(120));
    }

    #[test]
    fn account_problems_name_their_keys() {
        let mut p = Problems::default();
        let a = AccountConfig::parse(
            "providers.circleci.main",
            &json!({"token": "env:CIGW_SURELY_UNSET_TOKEN", "base_url": "not a url", "rate_limit": "fast",
                    "concurrency": 0, "colour": "red"}),
            &mut p,
        );
        assert!(a.is_none());
        let s = shown(&p);
        assert!(s.contains(&"providers.circleci.main.colour: unknown key".to_string()), "{s:?}");
        let mut p = Problems::default();
        AccountConfig::parse(
            "providers.circleci.main",
            &json!({"token": "env:CIGW_SURELY_UNSET_TOKEN", "base_url": "not a url", "rate_limit": "fast", "concurrency": 0}),
            &mut p,
        );
        let s = shown(&p);
        for key in ["token", "base_url", "rate_limit", "concurrency"] {
            assert!(s.iter().any(|e| e.starts_with(&format!("providers.circleci.main.{key}: "))), "{key}: {s:?}");
        }
    }

    #[test]
    fn debug_hides_the_token_and_webhook_secrets() {
        let mut p = Problems::default();
        let a =
            AccountConfig::parse("a", &json!({"token": "hunter2-token", "webhook_secrets": ["whsec-hidden"]}), &mut p)
                .unwrap();
        let d = format!("{a:?}");
        assert!(!d.contains("hunter2") && !d.contains("whsec-hidden"), "{d}");
        assert!(d.contains("<1 redacted>"), "{d}");
    }

    #[test]
    fn rate_limits_parse() {}

    #[test]
    fn target_keys_and_definition_rule() {
        let mut p = Problems::default();
        let t = TargetConfig::parse(
            &spec(vec![]),
            "targets.web",
            json!({"project_slug": "gh/acme/web", "ignore_sha": true}).as_object().unwrap(),
            &mut p,
        )
        .unwrap();
        assert!(t.ignore_sha);
        assert_eq!(t.slug.to_string(), "gh/acme/web");
        let mut p = Problems::default();
        let t = TargetConfig::parse(
            &spec(vec![]),
            "targets.web",
            json!({"project_slug": "circleci/abc/def"}).as_object().unwrap(),
            &mut p,
        );
        assert!(t.is_none());
        assert!(shown(&p)[0].starts_with("targets.web.definition_id: required for `circleci/…` slugs"), "{p:?}");
        let mut p = Problems::default();
        TargetConfig::parse(
            &spec(vec![]),
            "targets.web",
            json!({"project_slug": "gh/acme/web", "pipeline": "x"}).as_object().unwrap(),
            &mut p,
        );
        assert_eq!(shown(&p), ["targets.web.pipeline: unknown key"]);
        let mut p = Problems::default();
        TargetConfig::parse(
            &spec(vec![]),
            "targets.web",
            json!({"project_slug": "gh/acme", "definition_id": "nope"}).as_object().unwrap(),
            &mut p,
        );
        let s = shown(&p);
        assert!(s.iter().any(|e| e.starts_with("targets.web.project_slug: ")), "{s:?}");
        assert!(s.iter().any(|e| e.starts_with("targets.web.definition_id: `nope`")), "{s:?}");
    }

    #[test]
    fn declared_parameters_respect_circleci_limits() {
        let long_name = param(&"n".repeat(129), ParamType::String);
        let long_default =
            ParameterSpec { default: Some(ParamValue::String("v".repeat(513))), ..param("env", ParamType::String) };
        let run_id = param(RUN_ID_PARAMETER, ParamType::Integer);
        let mut p = Problems::default();
        TargetConfig::parse(
            &spec(vec![long_name, long_default, run_id]),
            "targets.web",
            json!({"project_slug": "gh/a/b"}).as_object().unwrap(),
            &mut p,
        );
        let s = shown(&p);
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s.iter().any(|e| e.contains("longer than CircleCI's 128")), "{s:?}");
        assert!(s.iter().any(|e| e.starts_with("targets.web.parameters.env: a value is longer")), "{s:?}");
        assert!(s.iter().any(|e| e.starts_with("targets.web.parameters.cigw_run_id: ")), "{s:?}");
        let many: Vec<_> = (0..101).map(|i| param(&format!("p{i}"), ParamType::Boolean)).collect();
        let mut p = Problems::default();
        TargetConfig::parse(&spec(many), "targets.web", json!({"project_slug": "gh/a/b"}).as_object().unwrap(), &mut p);
        assert_eq!(shown(&p), ["targets.web.parameters: 101 parameters declared; CircleCI takes at most 100"]);
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("e411ea74-c64a-4d60-9292-115e782802ed"));
        assert!(!is_uuid("e411ea74-c64a-4d60-9292-115e782802e"));
    }
}
