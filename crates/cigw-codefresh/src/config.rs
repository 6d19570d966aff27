//! Settings of a Codefresh account (`[providers.codefresh.<name>]`) and of a Codefresh target
//! (the provider keys of `[targets.<name>]`), parsed with every problem reported at its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use cigw_core::TargetSpec;
use cigw_core::config::{Problems, join};
use cigw_core::retry::RetryPolicy;
use cigw_core::secret::SecretSetting;
use cigw_core::transport::{TransportConfig, TransportDefaults};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

/// The public Codefresh API.
pub const DEFAULT_BASE_URL: &str = "https://g.codefresh.io/api";
/// Default time limit of one HTTP call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum of in-flight requests per account.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The annotation (and `reqId`) carrying the gateway run id.
pub const RUN_ID_ANNOTATION: &str = "cigw_run_id";

/// The account keys of Codefresh's own (the transport keys are read by
/// [`TransportConfig::parse`]).
#[derive(Debug, Deserialize)]
struct RawAccount {
    api_key: SecretSetting,
}

/// Codefresh's defaults for the transport keys.
pub fn transport_defaults() -> TransportDefaults {
    TransportDefaults {
        base_url: DEFAULT_BASE_URL,
        timeout: DEFAULT_TIMEOUT,
        rate_limit: None,
        concurrency: DEFAULT_CONCURRENCY,
        retry: RetryPolicy::default(),
    }
}

/// A parsed, resolved Codefresh account. `Debug` never shows the API key.
#[derive(Clone)]
pub struct AccountConfig {
    /// Base URL (e.g. `https://g.codefresh.io/api`, its path kept when joined), timeout, rate
    /// limit, concurrency, retries.
    pub transport: TransportConfig,
    /// The API key, sent as `Authorization: <key>` (no `Bearer`).
    pub api_key: SecretString,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig").field("transport", &self.transport).field("api_key", &"<redacted>").finish()
    }
}

impl AccountConfig {
    /// An account for `base_url` and `api_key` with every other key at its default.
    pub fn new(base_url: Url, api_key: SecretString) -> Self {
        Self { transport: TransportConfig { base_url, ..TransportConfig::new(&transport_defaults()) }, api_key }
    }

    /// Parse `table` (at key path `path`), recording every problem.
    pub fn parse(path: &str, table: &serde_json::Value, problems: &mut Problems) -> Option<Self> {
        let before = problems.errors().count();
        let (rest, transport) = TransportConfig::parse(path, table, &transport_defaults(), problems);
        let raw: RawAccount = problems.parse(path, &rest)?;
        let api_key = raw.api_key.resolve_at(&join(path, "api_key"), problems);
        if problems.errors().count() > before {
            return None;
        }
        Some(Self { transport: transport?, api_key: api_key? })
    }
}

/// Run options passed through to Codefresh (`options` of the run body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all(serialize = "camelCase"))]
pub struct RunOptions {
    /// Ignore the Docker layer cache.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_cache: bool,
    /// Ignore the Codefresh build cache.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_cf_cache: bool,
    /// Reset the pipeline's volume.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset_volume: bool,
    /// Send notifications (Slack, git status) for this API-started build.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_notifications: bool,
    /// Steps to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// Run only these steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The provider keys of `[targets.<name>]` as written.
#[derive(Debug, Deserialize)]
struct RawTarget {
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    options: RunOptions,
    #[serde(default)]
    contexts: Vec<String>,
}

/// What a target builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineLocator {
    /// A pipeline by full name `project/pipeline`.
    Name(String),
    /// A pipeline by its 24-hex id.
    Id(String),
    /// A pipeline id driven through the legacy `POST /api/builds/{serviceId}`.
    Service(String),
}

impl PipelineLocator {
    /// The name or id, as shown and as sent in paths.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Name(s) | Self::Id(s) | Self::Service(s) => s,
        }
    }
}

/// A parsed Codefresh target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// The pipeline it builds.
    pub pipeline: PipelineLocator,
    /// The pipeline trigger (id or name) branch and sha resolve against.
    pub trigger: Option<String>,
    /// Variables sent on every run (parameters override them).
    pub variables: BTreeMap<String, String>,
    /// Run options.
    pub options: RunOptions,
    /// Shared configuration contexts to attach.
    pub contexts: Vec<String>,
}

/// Whether `s` is a 24-hex ObjectId.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_pipeline_name(name: &str) -> Result<PipelineLocator, String> {
    let name = name.trim();
    if is_object_id(name) {
        return Ok(PipelineLocator::Id(name.to_string()));
    }
    let bad_char = |s: &str| s.chars().any(|c| c.is_control() || c.is_whitespace() && c != ' ');
    match name.split_once('/') {
        Some((project, pipeline))
            if !project.trim().is_empty()
                && !pipeline.trim().is_empty()
                && !pipeline.contains('/')
                && !bad_char(name) =>
        {
            Ok(PipelineLocator::Name(name.to_string()))
        }
        _ => Err(format!("`{name}`: expected `project/pipeline` or a 24-hex pipeline id")),
    }
}

/// Codefresh variable names (like its annotation names) are identifiers.
fn is_variable_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TargetConfig {
    /// Parse the provider keys of a target (at key path `path`) and check them and the
    /// target's declared parameters against what Codefresh can take.
    pub fn parse(
        spec: &TargetSpec,
        path: &str,
        table: &serde_json::Map<String, serde_json::Value>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let errors_before = problems.errors().count();
        let raw: RawTarget = problems.parse(path, &serde_json::Value::Object(table.clone()))?;
        let pipeline = match (&raw.pipeline, &raw.service_id) {
            (Some(name), None) => check_pipeline_name(name).map_err(|e| problems.error(join(path, "pipeline"), e)).ok(),
            (None, Some(id)) if is_object_id(id.trim()) => Some(PipelineLocator::Service(id.trim().to_string())),
            (None, Some(id)) => {
                problems.error(join(path, "service_id"), format!("`{id}`: expected a 24-hex pipeline (service) id"));
                None
            }
            (Some(_), Some(_)) => {
                problems.error(path, "give either `pipeline` or `service_id`, not both");
                None
            }
            (None, None) => {
                problems.error(
                    join(path, "pipeline"),
                    "missing: a Codefresh target needs `pipeline` (\"project/pipeline\" or an id) or a legacy `service_id`",
                );
                None
            }
        };
        for key in raw.variables.keys().filter(|k| !is_variable_name(k)) {
            problems.error(
                join(path, &format!("variables.{key}")),
                "expected a variable name: a letter or `_`, then letters, digits, `_` or `-`",
            );
        }
        for p in spec.parameters.iter().filter(|p| !is_variable_name(&p.name)) {
            problems.error(
                join(path, &format!("parameters.{}", p.name)),
                "Codefresh variables need a name of a letter or `_`, then letters, digits, `_` or `-`",
            );
        }
        if let Some(trigger) = &raw.trigger
            && trigger.trim().is_empty()
        {
            problems.error(join(path, "trigger"), "must not be empty");
        }
        if matches!(pipeline, Some(PipelineLocator::Service(_))) {
            // The legacy endpoint takes branch, sha, variables and buildFlags.nocache only.
            if raw.trigger.is_some() {
                problems.error(join(path, "trigger"), "not supported with `service_id`; use `pipeline`");
            }
            if !raw.contexts.is_empty() {
                problems.error(join(path, "contexts"), "not supported with `service_id`; use `pipeline`");
            }
            let only_no_cache = RunOptions { no_cache: raw.options.no_cache, ..RunOptions::default() };
            if raw.options != only_no_cache {
                problems.error(join(path, "options"), "only `no_cache` is supported with `service_id`; use `pipeline`");
            }
            for p in spec.parameters.iter().filter(|p| p.secret) {
                problems.error(
                    join(path, &format!("parameters.{}", p.name)),
                    "the legacy `service_id` trigger cannot send encrypted variables; use `pipeline` for secret parameters",
                );
            }
        }
        if problems.errors().count() > errors_before {
            return None;
        }
        Some(Self {
            pipeline: pipeline?,
            trigger: raw.trigger.map(|t| t.trim().to_string()),
            variables: raw.variables,
            options: raw.options,
            contexts: raw.contexts,
        })
    }
}

#[cfg(test)]
mod tests {
    use cigw_core::{ConcurrencyPolicy, ParamType, ParameterSpec, ProviderKind, RateLimit};
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn spec(params: Vec<ParameterSpec>) -> TargetSpec {
        TargetSpec {
            name: "api".into(),
            provider: ProviderKind::Codefresh,
            account: "cf".into(),
            default_branch: "main".into(),
            parameters: params,
            max_duration: None,
            concurrency: ConcurrencyPolicy::Queue,
            debounce: None,
            description: None,
        }
    }

    fn param(name: &str, secret: bool) -> ParameterSpec {
        ParameterSpec {
            name: name.into(),
            kind: ParamType::String,
            default: None,
            allowed: None,
            required: false,
            secret,
            description: None,
        }
    }

    fn target(v: serde_json::Value, params: Vec<ParameterSpec>) -> (Option<TargetConfig>, Vec<String>) {
        let mut problems = Problems::default();
        let t = TargetConfig::parse(&spec(params), "targets.api", v.as_object().unwrap(), &mut problems);
        (t, problems.errors().map(ToString::to_string).collect())
    }

    #[test]
    fn account_defaults() {
        let mut problems = Problems::default();
        let a = AccountConfig::parse("providers.codefresh.cf", &json!({"api_key": "k.secret"}), &mut problems).unwrap();
        assert_eq!(a.transport.base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(a.transport.timeout, DEFAULT_TIMEOUT);
        assert_eq!(a.transport.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(a.transport.rate_limit, None);
        assert_eq!(a.api_key.expose_secret(), "k.secret");
        assert_eq!(problems.warnings().count(), 1, "a literal key is accepted with a warning");
    }

    #[test]
    fn account_every_key() {
        let mut problems = Problems::default();
        let a = AccountConfig::parse(
            "providers.codefresh.cf",
            &json!({"api_key": "k", "base_url": "https://cf.example.com/api/", "timeout": "5s",
                    "rate_limit": "300/min", "concurrency": 2, "max_retries": 1, "retry_min_delay": "10ms",
                    "retry_max_delay": "1s", "retry_deadline": "10s"}),
            &mut problems,
        )
        .unwrap();
        assert!(!problems.has_errors(), "{problems:?}");
        assert_eq!(a.transport.base_url.as_str(), "https://cf.example.com/api/");
        assert_eq!(a.transport.timeout, Duration::from_secs(5));
        assert_eq!(a.transport.rate_limit, Some(RateLimit::parse("300/min").unwrap()));
        assert_eq!(a.transport.concurrency, 2);
        assert_eq!(a.transport.retry.max_retries, 1);
        assert_eq!(a.transport.retry.min_delay, Duration::from_millis(10));
        assert_eq!(a.transport.retry.deadline, Duration::from_secs(10));
    }

    #[test]
    fn account_problems_name_their_keys() {
        let mut problems = Problems::default();
        let a = AccountConfig::parse(
            "providers.codefresh.cf",
            &json!({"api_key": "env:CIGW_TEST_SURELY_UNSET_CF_KEY", "base_url": "ftp://x", "rate_limit": "5/week",
                    "concurrency": 0, "tokn": "x"}),
            &mut problems,
        );
        assert!(a.is_none());
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert!(shown.contains(&"providers.codefresh.cf.tokn: unknown key".to_string()), "{shown:?}");
        assert!(
            shown.iter().any(|p| p.starts_with("providers.codefresh.cf.api_key: environment variable")),
            "{shown:?}"
        );
        assert!(shown.iter().any(|p| p.starts_with("providers.codefresh.cf.base_url: ")), "{shown:?}");
        assert!(
            shown.iter().any(|p| p.starts_with("providers.codefresh.cf.rate_limit: `5/week`: expected")),
            "{shown:?}"
        );
        assert!(
            shown.contains(&"providers.codefresh.cf.concurrency: expected at least 1 in-flight request".to_string())
        );
        let mut problems = Problems::default();
        assert!(AccountConfig::parse("p", &json!({}), &mut problems).is_none());
        assert!(problems.errors().any(|p| p.message.contains("api_key")), "{problems:?}");
    }

    #[test]
    fn debug_hides_the_key() {
        let a = AccountConfig::new(Url::parse(DEFAULT_BASE_URL).unwrap(), SecretString::from("hunter2.key"));
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn pipeline_name_id_and_service_targets() {
        let (t, errs) = target(
            json!({"pipeline": "demo/api-build", "trigger": "acme/api",
            "variables": {"LOG_LEVEL": "debug"}, "options": {"no_cache": true, "reset_volume": true}}),
            vec![],
        );
        assert!(errs.is_empty(), "{errs:?}");
        let t = t.unwrap();
        assert_eq!(t.pipeline, PipelineLocator::Name("demo/api-build".into()));
        assert_eq!(serde_json::to_value(&t.options).unwrap(), json!({"noCache": true, "resetVolume": true}));
        let (t, _) = target(json!({"pipeline": "65e0aaaabbbbccccddddeeee"}), vec![]);
        assert_eq!(t.unwrap().pipeline, PipelineLocator::Id("65e0aaaabbbbccccddddeeee".into()));
        let (t, _) = target(json!({"service_id": "65e0aaaabbbbccccddddeeee", "options": {"no_cache": true}}), vec![]);
        assert_eq!(t.unwrap().pipeline, PipelineLocator::Service("65e0aaaabbbbccccddddeeee".into()));
    }

    #[test]
    fn target_problems_name_their_keys() {
        for (bad, want) in [
            (json!({"pipeline": "just-a-name"}), "targets.api.pipeline: `just-a-name`: expected `project/pipeline`"),
            (json!({"pipeline": "a/b/c"}), "targets.api.pipeline: `a/b/c`: expected"),
            (json!({"pipeline": "/b"}), "targets.api.pipeline: `/b`: expected"),
            (json!({}), "targets.api.pipeline: missing"),
            (json!({"pipeline": "a/b", "service_id": "65e0aaaabbbbccccddddeeee"}), "targets.api: give either"),
            (json!({"service_id": "nope"}), "targets.api.service_id: `nope`: expected a 24-hex"),
            (
                json!({"pipeline": "a/b", "variables": {"1X": "v"}}),
                "targets.api.variables.1X: expected a variable name",
            ),
            (json!({"pipeline": "a/b", "colour": "red"}), "targets.api.colour: unknown key"),
            (json!({"service_id": "65e0aaaabbbbccccddddeeee", "trigger": "t"}), "targets.api.trigger: not supported"),
            (
                json!({"service_id": "65e0aaaabbbbccccddddeeee", "options": {"reset_volume": true}}),
                "targets.api.options: only `no_cache`",
            ),
        ] {
            let (t, errs) = target(bad.clone(), vec![]);
            assert!(t.is_none(), "{bad}");
            assert!(errs.iter().any(|e| e.starts_with(want)), "{bad}: {errs:?}");
        }
    }

    #[test]
    fn parameters_are_checked_against_what_codefresh_takes() {
        let (t, errs) = target(json!({"pipeline": "a/b"}), vec![param("bad name", false)]);
        assert!(t.is_none());
        assert!(errs[0].starts_with("targets.api.parameters.bad name: Codefresh variables need"), "{errs:?}");
        let (t, errs) = target(json!({"service_id": "65e0aaaabbbbccccddddeeee"}), vec![param("TOKEN", true)]);
        assert!(t.is_none());
        assert!(errs[0].contains("cannot send encrypted variables"), "{errs:?}");
        let (t, errs) = target(json!({"pipeline": "a/b"}), vec![param("TOKEN", true), param("ENV", false)]);
        assert!(t.is_some() && errs.is_empty(), "{errs:?}");
    }
}
