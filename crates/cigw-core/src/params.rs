//! Declared target parameters and the validation of requested values against them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most parameters one request (or one target's merged parameters) may carry: CircleCI's limit
/// for pipeline parameters, applied to every provider so a fan-out is judged once.
pub const MAX_PARAMETERS: usize = 100;
/// Longest parameter name, in characters (CircleCI's limit for parameter keys).
pub const MAX_NAME_CHARS: usize = 128;
/// Longest string parameter value, in characters (CircleCI's limit for parameter values).
pub const MAX_VALUE_CHARS: usize = 512;
/// Most declared names or enum values listed in one message; the rest are counted.
const MAX_LISTED: usize = 10;
/// Longest rendering of a requested value echoed in a message.
const MAX_SHOWN_CHARS: usize = 64;

/// The type of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A 64-bit signed integer.
    Integer,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Integer => "integer",
        })
    }
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    String(String),
}

impl ParamValue {
    /// The type of this value.
    pub fn kind(&self) -> ParamType {
        match self {
            Self::Bool(_) => ParamType::Boolean,
            Self::Int(_) => ParamType::Integer,
            Self::String(_) => ParamType::String,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Bool(b) => (*b).into(),
            Self::Int(i) => (*i).into(),
            Self::String(s) => s.clone().into(),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

/// One parameter a target declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterSpec {
    /// The parameter's name as the provider knows it.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when the request gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    /// The only values allowed, when set.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<ParamValue>>,
    /// A request must give a value (or the declaration a default).
    #[serde(default)]
    pub required: bool,
    /// The value is masked wherever it is shown and sent as a secret where the provider can.
    #[serde(default)]
    pub secret: bool,
    /// A human description for the API and the web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ParameterSpec {
    /// Problems with the declaration itself (default or enum values of the wrong type).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            out.push(format!("the name must be 1 to {MAX_NAME_CHARS} characters"));
        }
        let too_long = |v: &ParamValue| matches!(v, ParamValue::String(s) if s.chars().count() > MAX_VALUE_CHARS);
        if self.default.as_ref().is_some_and(too_long) {
            out.push(format!("default is longer than {MAX_VALUE_CHARS} characters"));
        }
        if self.allowed.as_ref().is_some_and(|a| a.iter().any(too_long)) {
            out.push(format!("an enum value is longer than {MAX_VALUE_CHARS} characters"));
        }
        if let Some(default) = &self.default {
            if default.kind() != self.kind {
                out.push(format!("default has type {}, but the parameter is declared {}", default.kind(), self.kind));
            } else if let Some(allowed) = &self.allowed
                && !allowed.contains(default)
            {
                out.push("default is not one of the enum values".to_string());
            }
        }
        if let Some(allowed) = &self.allowed {
            if allowed.is_empty() {
                out.push("enum is empty".to_string());
            }
            for v in allowed.iter().filter(|v| v.kind() != self.kind) {
                out.push(format!(
                    "enum value {v:?} has type {}, but the parameter is declared {}",
                    v.kind(),
                    self.kind
                ));
            }
        }
        out
    }
}

/// One validated parameter value.
#[derive(Clone, PartialEq, Eq)]
pub struct ParamEntry {
    /// The value, coerced to the declared type.
    pub value: ParamValue,
    /// Whether it is a secret (masked when shown).
    pub secret: bool,
}

/// Validated, typed parameters of one run. `Debug` and `Display` mask secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Parameters {
    entries: BTreeMap<String, ParamEntry>,
}

/// The text shown in place of a secret value.
pub const MASK: &str = "***";

impl Parameters {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one (already validated) value.
    pub fn insert(&mut self, name: impl Into<String>, value: ParamValue, secret: bool) {
        self.entries.insert(name.into(), ParamEntry { value, secret });
    }

    /// The entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// One entry.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.get(name)
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A JSON object for display: secret values replaced by `***`.
    pub fn masked_json(&self) -> serde_json::Value {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), if e.secret { MASK.into() } else { e.value.to_json() }))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// A JSON object for storage, secrets included: `{"name": {"value": v, "secret": bool}}`.
    ///
    /// Only the store may call this: a run must still be dispatchable with its secret values
    /// after a restart.
    pub fn to_storage_json(&self) -> serde_json::Value {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), serde_json::json!({"value": e.value.to_json(), "secret": e.secret})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The inverse of [`Parameters::to_storage_json`].
    pub fn from_storage_json(value: &serde_json::Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Stored {
            value: ParamValue,
            #[serde(default)]
            secret: bool,
        }
        let map: BTreeMap<String, Stored> =
            serde_json::from_value(value.clone()).map_err(|e| format!("stored parameters are malformed: {e}"))?;
        Ok(Self {
            entries: map.into_iter().map(|(k, s)| (k, ParamEntry { value: s.value, secret: s.secret })).collect(),
        })
    }
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, e) in &self.entries {
            if e.secret {
                m.entry(k, &MASK);
            } else {
                m.entry(k, &e.value);
            }
        }
        m.finish()
    }
}

impl fmt::Display for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(k, e)| if e.secret { format!("{k}={MASK}") } else { format!("{k}={}", e.value) })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// One problem with a requested parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamProblem {
    /// The parameter's name.
    pub name: String,
    /// What is wrong, naming what was expected.
    pub message: String,
}

/// Every problem found in one request's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamErrors {
    /// Set when the request gave more than [`MAX_PARAMETERS`] values (this many): the map is
    /// refused as a whole and no value is looked at.
    pub too_many: Option<usize>,
    /// The problems, in parameter-name order.
    pub problems: Vec<ParamProblem>,
}

/// The message for a parameter map with `count` entries, over [`MAX_PARAMETERS`].
pub fn too_many_message(count: usize) -> String {
    format!("at most {MAX_PARAMETERS} parameters, got {count}")
}

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(count) = self.too_many {
            return write!(f, "parameters: {}", too_many_message(count));
        }
        let parts: Vec<String> =
            self.problems.iter().map(|p| format!("parameter `{}`: {}", p.name, p.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ParamErrors {}

/// A requested value as messages may echo it: scalars as JSON, cut to [`MAX_SHOWN_CHARS`];
/// arrays and objects only by their kind, so no message grows with the request.
fn show_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => describe_json(v).to_string(),
        scalar => {
            let text = scalar.to_string();
            if text.chars().count() > MAX_SHOWN_CHARS {
                format!("{}…", text.chars().take(MAX_SHOWN_CHARS).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// The first [`MAX_LISTED`] items joined with `, `, and how many more there are.
fn list_some(items: impl ExactSizeIterator<Item = String>) -> String {
    let total = items.len();
    let mut text = items.take(MAX_LISTED).collect::<Vec<_>>().join(", ");
    if total > MAX_LISTED {
        text.push_str(&format!(" and {} more", total - MAX_LISTED));
    }
    text
}

fn describe_json(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn coerce(spec: &ParameterSpec, raw: &serde_json::Value) -> Result<ParamValue, String> {
    use serde_json::Value as J;
    // Secret values are never echoed back in messages.
    let shown = |v: &J| if spec.secret { describe_json(v).to_string() } else { show_json(v) };
    let wrong = |v: &J| format!("expected {}, got {}", spec.kind, shown(v));
    match (spec.kind, raw) {
        (ParamType::String, J::String(s)) => {
            let chars = s.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(format!("expected at most {MAX_VALUE_CHARS} characters, got {chars}"));
            }
            Ok(ParamValue::String(s.clone()))
        }
        (ParamType::String, J::Number(n)) => Ok(ParamValue::String(n.to_string())),
        (ParamType::String, J::Bool(b)) => Ok(ParamValue::String(b.to_string())),
        (ParamType::Boolean, J::Bool(b)) => Ok(ParamValue::Bool(*b)),
        (ParamType::Boolean, J::String(s)) => match s.as_str() {
            "true" => Ok(ParamValue::Bool(true)),
            "false" => Ok(ParamValue::Bool(false)),
            _ => Err(wrong(raw)),
        },
        (ParamType::Integer, J::Number(n)) => n.as_i64().map(ParamValue::Int).ok_or_else(|| wrong(raw)),
        (ParamType::Integer, J::String(s)) => s.trim().parse().map(ParamValue::Int).map_err(|_| wrong(raw)),
        (_, v) => Err(wrong(v)),
    }
}

/// Validate requested values against a target's declarations: unknown names, wrong types,
/// values outside the enum and missing required values are all reported at once. Values are
/// coerced to the declared type ("true" → true, "42" → 42, 42 → "42" for strings) and defaults
/// are filled in. A map of more than [`MAX_PARAMETERS`] values is refused as a whole, names
/// longer than [`MAX_NAME_CHARS`] and string values longer than [`MAX_VALUE_CHARS`] one by one.
/// Messages never show a secret parameter's value or its allowed values.
pub fn validate(
    specs: &[ParameterSpec],
    requested: &BTreeMap<String, serde_json::Value>,
) -> Result<Parameters, ParamErrors> {
    if requested.len() > MAX_PARAMETERS {
        return Err(ParamErrors { too_many: Some(requested.len()), problems: Vec::new() });
    }
    let mut problems = Vec::new();
    let mut out = Parameters::new();
    let undeclared = if specs.is_empty() {
        "not declared (this target takes no parameters)".to_string()
    } else {
        format!("not declared (declared: {})", list_some(specs.iter().map(|s| s.name.clone())))
    };
    for name in requested.keys().filter(|n| !specs.iter().any(|s| &s.name == *n)) {
        let message = if name.chars().count() > MAX_NAME_CHARS {
            format!("names are at most {MAX_NAME_CHARS} characters")
        } else {
            undeclared.clone()
        };
        problems.push(ParamProblem { name: name.clone(), message });
    }
    for spec in specs {
        let value = match requested.get(&spec.name) {
            Some(raw) => match coerce(spec, raw) {
                Ok(v) => Some(v),
                Err(message) => {
                    problems.push(ParamProblem { name: spec.name.clone(), message });
                    continue;
                }
            },
            None => spec.default.clone(),
        };
        match value {
            Some(v) => {
                if let Some(allowed) = &spec.allowed
                    && !allowed.contains(&v)
                {
                    let message = if spec.secret {
                        "not one of the allowed values".to_string()
                    } else {
                        let list = list_some(allowed.iter().map(|a| show_json(&a.to_json())));
                        format!("expected one of {list}, got {}", show_json(&v.to_json()))
                    };
                    problems.push(ParamProblem { name: spec.name.clone(), message });
                    continue;
                }
                out.insert(spec.name.clone(), v, spec.secret);
            }
            None if spec.required => problems.push(ParamProblem {
                name: spec.name.clone(),
                message: format!("required {} value is missing", spec.kind),
            }),
            None => {}
        }
    }
    problems.sort_by(|a, b| a.name.cmp(&b.name));
    if problems.is_empty() { Ok(out) } else { Err(ParamErrors { too_many: None, problems }) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(name: &str, kind: ParamType) -> ParameterSpec {
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

    fn req(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).unwrap()
    }

    fn specs() -> Vec<ParameterSpec> {
        vec![
            ParameterSpec { required: true, ..spec("env", ParamType::String) },
            ParameterSpec {
                allowed: Some(vec![ParamValue::String("eu".into()), ParamValue::String("us".into())]),
                default: Some(ParamValue::String("eu".into())),
                ..spec("region", ParamType::String)
            },
            spec("count", ParamType::Integer),
            spec("dry_run", ParamType::Boolean),
            ParameterSpec { secret: true, ..spec("token", ParamType::String) },
        ]
    }

    #[test]
    fn coerces_values_and_fills_defaults() {
        let p = validate(&specs(), &req(json!({"env": 3, "count": "42", "dry_run": "true"}))).unwrap();
        assert_eq!(p.get("env").unwrap().value, ParamValue::String("3".into()));
        assert_eq!(p.get("count").unwrap().value, ParamValue::Int(42));
        assert_eq!(p.get("dry_run").unwrap().value, ParamValue::Bool(true));
        assert_eq!(p.get("region").unwrap().value, ParamValue::String("eu".into()));
        assert!(p.get("token").is_none());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = validate(&specs(), &req(json!({"count": "many", "dry_run": 1, "region": "mars", "colour": "red"})))
            .unwrap_err();
        let names: Vec<&str> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["colour", "count", "dry_run", "env", "region"]);
        let text = err.to_string();
        assert!(
            text.contains("parameter `colour`: not declared (declared: env, region, count, dry_run, token)"),
            "{text}"
        );
        assert!(text.contains("parameter `count`: expected integer, got \"many\""), "{text}");
        assert!(text.contains("parameter `dry_run`: expected boolean, got 1"), "{text}");
        assert!(text.contains("parameter `env`: required string value is missing"), "{text}");
        assert!(text.contains("parameter `region`: expected one of \"eu\", \"us\", got \"mars\""), "{text}");
    }

    #[test]
    fn rejects_floats_and_null_for_integers() {
        let s = [spec("n", ParamType::Integer)];
        assert!(validate(&s, &req(json!({"n": 1.5}))).is_err());
        assert!(validate(&s, &req(json!({"n": null}))).is_err());
        assert!(validate(&s, &req(json!({"n": [1]}))).is_err());
    }

    #[test]
    fn undeclared_parameters_on_a_target_without_any() {
        let err = validate(&[], &req(json!({"x": 1}))).unwrap_err();
        assert_eq!(err.to_string(), "parameter `x`: not declared (this target takes no parameters)");
    }

    #[test]
    fn secret_values_are_masked_in_debug_display_json_and_errors() {
        let p = validate(&specs(), &req(json!({"env": "prod", "token": "hunter2-very-secret"}))).unwrap();
        for shown in [format!("{p:?}"), p.to_string(), p.masked_json().to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("prod"), "{shown}");
        }
        let secret_int = [ParameterSpec { secret: true, ..spec("pin", ParamType::Integer) }];
        let err = validate(&secret_int, &req(json!({"pin": "hunter2-very-secret"}))).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(err.to_string(), "parameter `pin`: expected integer, got a string");
    }

    #[test]
    fn a_secret_parameter_never_shows_its_allowed_values_or_its_value() {
        let pin = ParameterSpec {
            secret: true,
            allowed: Some(vec![ParamValue::String("alpha-secret".into()), ParamValue::String("beta-secret".into())]),
            ..spec("pin", ParamType::String)
        };
        let err = validate(&[pin], &req(json!({"pin": "gamma-guess"}))).unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "parameter `pin`: not one of the allowed values");
        for hidden in ["alpha-secret", "beta-secret", "gamma-guess"] {
            assert!(!text.contains(hidden), "{text}");
            assert!(!serde_json::to_string(&err).unwrap().contains(hidden));
        }
    }

    #[test]
    fn parameter_maps_names_and_values_are_capped() {
        let many: BTreeMap<String, serde_json::Value> =
            (0..=MAX_PARAMETERS).map(|i| (format!("p{i}"), json!(i))).collect();
        let err = validate(&specs(), &many).unwrap_err();
        assert_eq!(err.too_many, Some(MAX_PARAMETERS + 1));
        assert!(err.problems.is_empty());
        assert_eq!(err.to_string(), "parameters: at most 100 parameters, got 101");

        let long_name = "n".repeat(MAX_NAME_CHARS + 1);
        let err = validate(&specs(), &req(json!({ long_name.clone(): 1, "env": "x" }))).unwrap_err();
        assert_eq!(err.problems[0].name, long_name);
        assert_eq!(err.problems[0].message, "names are at most 128 characters");

        let s = [spec("note", ParamType::String)];
        assert!(validate(&s, &req(json!({"note": "é".repeat(MAX_VALUE_CHARS)}))).is_ok());
        let err = validate(&s, &req(json!({"note": "é".repeat(MAX_VALUE_CHARS + 1)}))).unwrap_err();
        assert_eq!(err.to_string(), "parameter `note`: expected at most 512 characters, got 513");
    }

    #[test]
    fn messages_do_not_grow_with_the_request() {
        let s = [spec("n", ParamType::Integer)];
        let big = "x".repeat(10_000);
        let err = validate(&s, &req(json!({"n": big}))).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        let err = validate(&s, &req(json!({"n": [big.clone(), big]}))).unwrap_err();
        assert_eq!(err.to_string(), "parameter `n`: expected integer, got an array");
        let declared: Vec<ParameterSpec> = (0..50).map(|i| spec(&format!("p{i:02}"), ParamType::String)).collect();
        let err = validate(&declared, &req(json!({"x": 1}))).unwrap_err();
        assert_eq!(
            err.problems[0].message,
            "not declared (declared: p00, p01, p02, p03, p04, p05, p06, p07, p08, p09 and 40 more)"
        );
    }

    #[test]
    fn storage_round_trip_keeps_secrets() {
        let p = validate(&specs(), &req(json!({"env": "prod", "token": "s3cr3t", "count": 7}))).unwrap();
        let stored = p.to_storage_json();
        assert_eq!(stored["token"]["value"], "s3cr3t");
        assert_eq!(Parameters::from_storage_json(&stored).unwrap(), p);
    }

    #[test]
    fn declaration_problems() {
        let bad = ParameterSpec { default: Some(ParamValue::String("x".into())), ..spec("n", ParamType::Integer) };
        assert_eq!(bad.problems(), ["default has type string, but the parameter is declared integer"]);
        let bad_enum = ParameterSpec {
            allowed: Some(vec![ParamValue::Int(1)]),
            default: Some(ParamValue::Int(2)),
            ..spec("n", ParamType::Integer)
        };
        assert_eq!(bad_enum.problems(), ["default is not one of the enum values"]);
        assert!(specs().iter().all(|s| s.problems().is_empty()));
        let long = ParameterSpec {
            default: Some(ParamValue::String("d".repeat(MAX_VALUE_CHARS + 1))),
            ..spec(&"n".repeat(MAX_NAME_CHARS + 1), ParamType::String)
        };
        assert_eq!(long.problems(), ["the name must be 1 to 128 characters", "default is longer than 512 characters"]);
    }
}
