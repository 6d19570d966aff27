//! Inbound hooks (`[hooks.<name>]`): how a webhook sender proves who it is (the scheme and its
//! secrets), which deliveries start builds (rules of conditions) and what they start (a mapping
//! of templates over the delivery). Parsed and checked when the configuration is read, so a bad
//! regex, template or target is a configuration error at its key path, never a surprise at
//! delivery time. Verification itself lives in the gateway, which sees the raw request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::condition::{Condition, Conditions, Subject};
use crate::config::Problems;
use crate::secret::SecretSetting;
use crate::signature::standard_webhooks;
use crate::template::{TemplateError, Templates};

/// Deliveries kept per hook for replay unless `keep_deliveries` says otherwise.
pub const DEFAULT_KEEP_DELIVERIES: usize = 100;
/// Most deliveries one hook may keep.
pub const MAX_KEEP_DELIVERIES: usize = 10_000;
/// The default timestamp window.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How a hook's sender proves a delivery is theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github,
    /// `X-Gitlab-Token: <secret>`, compared in constant time.
    Gitlab,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` (whsec_ secrets).
    StandardWebhooks,
    /// An HMAC-SHA256 of the body (optionally `<timestamp>.<body>`) in a configured header.
    HmacSha256,
    /// `Authorization: Bearer cigw_…`: a cigw token with a trigger scope for the targets.
    Bearer,
    /// No verification at all (only when written; `check-config` warns).
    None,
}

impl Scheme {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Github => "github",
            Scheme::Gitlab => "gitlab",
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::Bearer => "bearer",
            Scheme::None => "none",
        }
    }

    /// Whether the scheme verifies with configured secrets.
    pub fn needs_secrets(self) -> bool {
        matches!(self, Scheme::Github | Scheme::Gitlab | Scheme::StandardWebhooks | Scheme::HmacSha256)
    }

    /// The header the sender puts its delivery id in, where the scheme defines one.
    pub fn delivery_header(self) -> Option<&'static str> {
        match self {
            Scheme::Github => Some("x-github-delivery"),
            Scheme::Gitlab => Some("x-gitlab-event-uuid"),
            Scheme::StandardWebhooks => Some(standard_webhooks::ID_HEADER),
            _ => None,
        }
    }
}

/// How an `hmac-sha256` signature is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lower- or upper-case hex.
    #[default]
    Hex,
    /// Standard base64 (with padding).
    Base64,
}

/// The options of the `hmac-sha256` scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacOptions {
    /// The header holding the signature (lower-cased).
    pub signature_header: String,
    /// Text before the signature (e.g. `sha256=`), removed before decoding.
    pub prefix: String,
    /// How the signature is encoded.
    pub encoding: Encoding,
    /// A header with the Unix-seconds timestamp; then `<timestamp>.<body>` is signed and the
    /// timestamp must be within the tolerance.
    pub timestamp_header: Option<String>,
}

/// One secret's key bytes. `Debug` never shows them.
#[derive(Clone)]
pub struct HookKey(Arc<[u8]>);

impl HookKey {
    /// The key bytes (to compute an HMAC or compare a token with).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookKey(<redacted>)")
    }
}

/// The templates of a rule's ref; each renders to a string (empty → left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefTemplates {
    /// Template of the branch.
    pub branch: Option<String>,
    /// Template of the tag.
    pub tag: Option<String>,
    /// Template of the commit sha.
    pub sha: Option<String>,
}

/// One rule: when its conditions hold, these targets are triggered with this mapping.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name (shown in answers and deliveries).
    pub name: String,
    /// The conditions on headers and the JSON body.
    pub conditions: Conditions,
    /// Targets to trigger.
    pub targets: Vec<String>,
    /// What to build (none → each target's default branch).
    pub git_ref: Option<RefTemplates>,
    /// Parameters: strings are templates, other values are passed as written.
    pub parameters: BTreeMap<String, Value>,
    /// Labels, each a template.
    pub labels: BTreeMap<String, String>,
}

/// One configured hook.
#[derive(Clone)]
pub struct Hook {
    /// Its name (the table key and the `{name}` of `POST /hooks/{name}`).
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// How deliveries are verified.
    pub scheme: Scheme,
    keys: Vec<HookKey>,
    /// The timestamp window where the scheme has a timestamp.
    pub tolerance: Duration,
    /// The delivery id header (lower-cased): configured, else the scheme's own.
    pub delivery_header: Option<String>,
    /// Options of the `hmac-sha256` scheme.
    pub hmac: Option<HmacOptions>,
    /// How many deliveries are kept (body and headers) for replay.
    pub keep_deliveries: usize,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    templates: Arc<Templates>,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .field("delivery_header", &self.delivery_header)
            .field("hmac", &self.hmac)
            .field("keep_deliveries", &self.keep_deliveries)
            .field("rules", &self.rules)
            .finish()
    }
}

/// Why one rule did not match a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// The rule's name.
    pub rule: String,
    /// The first failing condition (or every `any` condition).
    pub reason: String,
}

/// Which rule a delivery matched, and why the rules before it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The index of the first rule that matched.
    pub matched: Option<usize>,
    /// Why each rule before it (every rule when none matched) did not.
    pub misses: Vec<Miss>,
}

/// A template that failed on a delivery, with the rule it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}`: {error}")]
pub struct MappingError {
    /// The rule.
    pub rule: String,
    /// The template and what went wrong.
    pub error: TemplateError,
}

#[derive(Debug, Deserialize)]
struct RawHook {
    scheme: Option<Scheme>,
    #[serde(default)]
    secrets: Vec<SecretSetting>,
    #[serde(default, with = "humantime_serde")]
    tolerance: Option<Duration>,
    #[serde(default)]
    delivery_header: Option<String>,
    #[serde(default)]
    signature_header: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default)]
    timestamp_header: Option<String>,
    #[serde(default)]
    keep_deliveries: Option<usize>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    name: Option<String>,
    #[serde(default)]
    all: Vec<Condition>,
    #[serde(default)]
    any: Vec<Condition>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<RawRef>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RawRef {
    branch: Option<String>,
    tag: Option<String>,
    sha: Option<String>,
}

/// A valid header name for the key paths it is checked at.
fn header_name(path: String, value: &str, problems: &mut Problems) -> Option<String> {
    let ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if ok {
        Some(value.to_ascii_lowercase())
    } else {
        problems.error(path, format!("`{value}` is not an HTTP header name"));
        None
    }
}

impl Hook {
    /// Parse `[hooks.<name>]`, resolving its secrets and compiling its templates, recording
    /// problems at their key paths.
    pub fn parse(name: &str, value: &Value, problems: &mut Problems) -> Option<Hook> {
        let path = format!("hooks.{name}");
        let raw: RawHook = problems.parse(&path, value)?;
        let errors_before = problems.errors().count();
        let Some(scheme) = raw.scheme else {
            problems.error(
                format!("{path}.scheme"),
                "give a scheme: github, gitlab, standard-webhooks, hmac-sha256, bearer or none",
            );
            return None;
        };
        if scheme == Scheme::None {
            problems.warn(
                format!("{path}.scheme"),
                "`none`: anyone who can reach the gateway can start these builds; use a signing scheme",
            );
        }
        let mut keys = Vec::new();
        if scheme.needs_secrets() {
            if raw.secrets.is_empty() {
                problems.error(
                    format!("{path}.secrets"),
                    format!("scheme `{}` needs at least one secret", scheme.as_str()),
                );
            }
            for (i, setting) in raw.secrets.iter().enumerate() {
                let at = format!("{path}.secrets[{i}]");
                let Some(secret) = setting.resolve_at(&at, problems) else { continue };
                let bytes = if scheme == Scheme::StandardWebhooks {
                    match standard_webhooks::key(secret.expose_secret()) {
                        Ok(key) => key,
                        Err(why) => {
                            problems.error(at, why);
                            continue;
                        }
                    }
                } else {
                    secret.expose_secret().as_bytes().to_vec()
                };
                keys.push(HookKey(bytes.into()));
            }
        } else if !raw.secrets.is_empty() {
            problems.error(
                format!("{path}.secrets"),
                format!("scheme `{}` takes no secrets (bearer hooks use cigw tokens)", scheme.as_str()),
            );
        }
        let hmac = if scheme == Scheme::HmacSha256 {
            match raw.signature_header.as_deref() {
                None => {
                    problems.error(format!("{path}.signature_header"), "scheme `hmac-sha256` needs `signature_header`");
                    None
                }
                Some(h) => {
                    header_name(format!("{path}.signature_header"), h, problems).map(|signature_header| HmacOptions {
                        signature_header,
                        prefix: raw.prefix.clone().unwrap_or_default(),
                        encoding: raw.encoding.unwrap_or_default(),
                        timestamp_header: raw
                            .timestamp_header
                            .as_deref()
                            .and_then(|t| header_name(format!("{path}.timestamp_header"), t, problems)),
                    })
                }
            }
        } else {
            for (key, given) in [
                ("signature_header", raw.signature_header.is_some()),
                ("prefix", raw.prefix.is_some()),
                ("encoding", raw.encoding.is_some()),
                ("timestamp_header", raw.timestamp_header.is_some()),
            ] {
                if given {
                    problems.error(format!("{path}.{key}"), "only the `hmac-sha256` scheme takes this key");
                }
            }
            None
        };
        let tolerance = raw.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        if tolerance.is_zero() {
            problems.error(format!("{path}.tolerance"), "must be longer than 0s");
        }
        let delivery_header = match raw.delivery_header.as_deref() {
            Some(h) => header_name(format!("{path}.delivery_header"), h, problems),
            None => scheme.delivery_header().map(str::to_string),
        };
        let keep_deliveries = raw.keep_deliveries.unwrap_or(DEFAULT_KEEP_DELIVERIES);
        if keep_deliveries > MAX_KEEP_DELIVERIES {
            problems.error(
                format!("{path}.keep_deliveries"),
                format!("at most {MAX_KEEP_DELIVERIES}, got {keep_deliveries}"),
            );
        }
        if raw.rules.is_empty() {
            problems.error(format!("{path}.rules"), "give at least one [[hooks.<name>.rules]] table");
        }
        let mut templates = Templates::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            let name = r.name.unwrap_or_else(|| format!("rules[{i}]"));
            if !names.insert(name.clone()) {
                problems.error(format!("{at}.name"), format!("another rule of this hook is named `{name}`"));
            }
            if r.targets.is_empty() {
                problems.error(format!("{at}.targets"), "give at least one target");
            }
            let mut add = |key: String, source: &str, problems: &mut Problems| {
                if let Err(e) = templates.add(&key, source) {
                    problems.error(format!("{path}.{key}"), e.message);
                }
            };
            if let Some(git_ref) = &r.git_ref {
                for (field, source) in [("branch", &git_ref.branch), ("tag", &git_ref.tag), ("sha", &git_ref.sha)] {
                    if let Some(source) = source {
                        add(format!("rules[{i}].ref.{field}"), source, problems);
                    }
                }
            }
            for (key, value) in &r.parameters {
                if let Value::String(source) = value {
                    add(format!("rules[{i}].parameters.{key}"), source, problems);
                }
            }
            for (key, source) in &r.labels {
                add(format!("rules[{i}].labels.{key}"), source, problems);
            }
            rules.push(Rule {
                name,
                conditions: Conditions { all: r.all, any: r.any },
                targets: r.targets,
                git_ref: r.git_ref.map(|g| RefTemplates { branch: g.branch, tag: g.tag, sha: g.sha }),
                parameters: r.parameters,
                labels: r.labels,
            });
        }
        if problems.errors().count() > errors_before {
            return None;
        }
        Some(Hook {
            name: name.to_string(),
            description: raw.description,
            scheme,
            keys,
            tolerance,
            delivery_header,
            hmac,
            keep_deliveries,
            rules,
            templates: Arc::new(templates),
        })
    }

    /// The secrets' key bytes, in configuration order (any of them verifies: rotation).
    pub fn keys(&self) -> &[HookKey] {
        &self.keys
    }

    /// The targets any rule may trigger (for a bearer token's scope check and listings).
    pub fn targets(&self) -> Vec<String> {
        let mut all: Vec<String> = self.rules.iter().flat_map(|r| r.targets.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Run the rules on a delivery (headers with any case; the parsed body), first match wins.
    pub fn evaluate(&self, headers: &[(String, String)], body: &Value) -> Evaluation {
        let subject = Subject { headers, document: body };
        let mut misses = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            match rule.conditions.evaluate(subject) {
                Ok(()) => return Evaluation { matched: Some(i), misses },
                Err(reason) => misses.push(Miss { rule: rule.name.clone(), reason }),
            }
        }
        Evaluation { matched: None, misses }
    }

    /// The template context of a delivery: `{ body, headers (lower-cased names), hook }`.
    pub fn context(&self, headers: &[(String, String)], body: &Value) -> Value {
        let headers: Map<String, Value> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone()))).collect();
        json!({ "body": body, "headers": headers, "hook": self.name })
    }

    /// The trigger request (the JSON of `POST /v1/triggers`) rule `index` makes from `context`.
    pub fn render(&self, index: usize, context: &Value) -> Result<Value, MappingError> {
        let rule = &self.rules[index];
        let fail = |error: TemplateError| MappingError { rule: rule.name.clone(), error };
        let mut request = Map::new();
        request.insert("targets".into(), json!(rule.targets));
        if let Some(git_ref) = &rule.git_ref {
            let mut out = Map::new();
            for (field, source) in [("branch", &git_ref.branch), ("tag", &git_ref.tag), ("sha", &git_ref.sha)] {
                if source.is_some() {
                    let text = self.templates.render(&format!("rules[{index}].ref.{field}"), context).map_err(fail)?;
                    if !text.is_empty() {
                        out.insert(field.into(), Value::String(text));
                    }
                }
            }
            if !out.is_empty() {
                request.insert("ref".into(), Value::Object(out));
            }
        }
        let mut parameters = Map::new();
        for (key, value) in &rule.parameters {
            let rendered = match value {
                Value::String(_) => Value::String(
                    self.templates.render(&format!("rules[{index}].parameters.{key}"), context).map_err(fail)?,
                ),
                other => other.clone(),
            };
            parameters.insert(key.clone(), rendered);
        }
        if !parameters.is_empty() {
            request.insert("parameters".into(), Value::Object(parameters));
        }
        let mut labels = Map::new();
        for key in rule.labels.keys() {
            let text = self.templates.render(&format!("rules[{index}].labels.{key}"), context).map_err(fail)?;
            labels.insert(key.clone(), Value::String(text));
        }
        if !labels.is_empty() {
            request.insert("labels".into(), Value::Object(labels));
        }
        Ok(Value::Object(request))
    }

    /// Check the rules' targets against the configured targets, at this hook's key paths.
    pub fn check(&self, catalog: &Catalog, problems: &mut Problems) {
        for (i, rule) in self.rules.iter().enumerate() {
            for (j, name) in rule.targets.iter().enumerate() {
                if !catalog.targets.contains_key(name) {
                    let known: Vec<&str> = catalog.targets.keys().map(String::as_str).collect();
                    problems.error(
                        format!("hooks.{}.rules[{i}].targets[{j}]", self.name),
                        format!("unknown target `{name}` (known targets: {})", known.join(", ")),
                    );
                }
            }
        }
    }
}

/// Parse every `[hooks.<name>]` table.
pub fn parse_all(tables: &BTreeMap<String, Value>, problems: &mut Problems) -> BTreeMap<String, Hook> {
    tables.iter().filter_map(|(name, v)| Hook::parse(name, v, problems).map(|h| (name.clone(), h))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<Hook>, Problems) {
        let table: toml::Value = toml::from_str(text).unwrap();
        let value = serde_json::to_value(table).unwrap();
        let mut problems = Problems::default();
        let hook = Hook::parse("gh", &value, &mut problems);
        (hook, problems)
    }

    const PUSH: &str = r#"
        scheme = "github"
        secrets = ["old-secret", "new-secret"]
        [[rules]]
        name = "push"
        all = [{ header = "X-GitHub-Event", equals = "push" }, { pointer = "/ref", glob = "refs/heads/*" }]
        targets = ["api-build"]
        ref = { branch = "{{ body.ref | branch }}", sha = "{{ body.after }}" }
        parameters = { deploy_env = "none", retries = 2 }
        labels = { pusher = "{{ body.pusher.name }}", event = "{{ headers['x-github-event'] }}" }
    "#;

    #[test]
    fn parses_a_github_hook_and_renders_its_mapping() {
        let (hook, problems) = parse(PUSH);
        assert!(!problems.has_errors(), "{problems:?}");
        let hook = hook.unwrap();
        assert_eq!(hook.keys().len(), 2);
        assert_eq!(hook.delivery_header.as_deref(), Some("x-github-delivery"));
        assert_eq!(hook.tolerance, DEFAULT_TOLERANCE);
        assert_eq!(hook.keep_deliveries, DEFAULT_KEEP_DELIVERIES);
        assert!(!format!("{hook:?}").contains("new-secret"), "{hook:?}");
        let headers = vec![("X-GitHub-Event".to_string(), "push".to_string())];
        let body = json!({"ref": "refs/heads/feature/x", "after": "abc123", "pusher": {"name": "ada"}});
        let eval = hook.evaluate(&headers, &body);
        assert_eq!(eval.matched, Some(0));
        let request = hook.render(0, &hook.context(&headers, &body)).unwrap();
        assert_eq!(
            request,
            json!({
                "targets": ["api-build"],
                "ref": {"branch": "feature/x", "sha": "abc123"},
                "parameters": {"deploy_env": "none", "retries": 2},
                "labels": {"pusher": "ada", "event": "push"},
            })
        );
        let err = hook.render(0, &hook.context(&headers, &json!({"ref": "refs/heads/x", "after": "1"}))).unwrap_err();
        assert_eq!(err.rule, "push");
        assert_eq!(err.error.template, "rules[0].labels.pusher");
        assert!(err.to_string().contains("`body.pusher.name` is not in the payload"), "{err}");
        let eval = hook.evaluate(&[], &body);
        assert_eq!(eval.matched, None);
        assert_eq!(eval.misses[0].rule, "push");
        assert!(eval.misses[0].reason.contains("header `x-github-event` is missing"), "{eval:?}");
    }

    #[test]
    fn problems_are_reported_at_their_key_paths() {
        let (hook, problems) = parse(
            r#"
            scheme = "hmac-sha256"
            colour = 1
            "#,
        );
        assert!(hook.is_none());
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert!(shown.iter().any(|p| p.starts_with("hooks.gh.colour: unknown key")), "{shown:?}");

        let (hook, problems) = parse(
            r#"
            scheme = "hmac-sha256"
            tolerance = "0s"
            delivery_header = "bad header"
            [[rules]]
            name = "a"
            targets = []
            ref = { branch = "{{ body.ref " }
            [[rules]]
            name = "a"
            all = [{ pointer = "/x", regex = "(" }]
            targets = ["t"]
            "#,
        );
        assert!(hook.is_none());
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert!(!shown.is_empty());
        // The regex is refused while the table is read (the first type error stops the parse).
        assert!(shown.iter().any(|p| p.contains("hooks.gh.rules[1].all[0]") && p.contains("regex")), "{shown:?}");

        let (hook, problems) = parse(
            r#"
            scheme = "hmac-sha256"
            tolerance = "0s"
            delivery_header = "bad header"
            prefix = "sha256="
            [[rules]]
            name = "a"
            targets = []
            ref = { branch = "{{ body.ref " }
            [[rules]]
            name = "a"
            targets = ["t"]
            "#,
        );
        assert!(hook.is_none());
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        for key in [
            "hooks.gh.secrets: ",
            "hooks.gh.signature_header: ",
            "hooks.gh.tolerance: ",
            "hooks.gh.delivery_header: ",
            "hooks.gh.rules[0].targets: ",
            "hooks.gh.rules[0].ref.branch: ",
            "hooks.gh.rules[1].name: ",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
        }
    }

    #[test]
    fn schemes_and_secrets_must_fit() {
        let (hook, problems) = parse("[[rules]]\ntargets = [\"t\"]");
        assert!(hook.is_none());
        assert!(problems.errors().any(|p| p.path == "hooks.gh.scheme"), "{problems:?}");
        let (hook, problems) = parse("scheme = \"none\"\n[[rules]]\ntargets = [\"t\"]");
        assert!(hook.is_some(), "{problems:?}");
        assert!(problems.warnings().any(|p| p.path == "hooks.gh.scheme"), "{problems:?}");
        let (_, problems) = parse("scheme = \"bearer\"\nsecrets = [\"x\"]\n[[rules]]\ntargets = [\"t\"]");
        assert!(problems.errors().any(|p| p.path == "hooks.gh.secrets"), "{problems:?}");
        let (_, problems) =
            parse("scheme = \"standard-webhooks\"\nsecrets = [\"whsec_!!\"]\n[[rules]]\ntargets = [\"t\"]");
        assert!(problems.errors().any(|p| p.path == "hooks.gh.secrets[0]"), "{problems:?}");
        assert!(!format!("{problems:?}").contains("whsec_!!"), "{problems:?}");
        let (_, problems) = parse(
            "scheme = \"github\"\nsecrets = [\"env:CIGW_SURELY_UNSET_HOOK_SECRET\"]\n[[rules]]\ntargets = [\"t\"]",
        );
        assert!(problems.errors().any(|p| p.path == "hooks.gh.secrets[0]"), "{problems:?}");
        let (_, problems) =
            parse("scheme = \"github\"\nsecrets = [\"s\"]\nprefix = \"x\"\n[[rules]]\ntargets = [\"t\"]");
        assert!(problems.errors().any(|p| p.path == "hooks.gh.prefix"), "{problems:?}");
    }
}
