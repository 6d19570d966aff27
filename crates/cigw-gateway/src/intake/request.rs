//! A trigger request as read from JSON, with its limits: what intake takes in.

use std::collections::BTreeMap;

use cigw_core::GitRef;
use cigw_core::params::{MAX_PARAMETERS, MAX_VALUE_CHARS};
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Most targets one trigger may fan out to.
pub const MAX_TARGETS: usize = 100;
/// Most labels on one trigger.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 1024;

/// A request's parameter map as read: at most [`MAX_PARAMETERS`] entries are kept, further ones
/// are skipped unread and only counted, so memory never grows with the map.
#[derive(Debug, Default)]
pub struct ParamMap {
    entries: BTreeMap<String, Value>,
    skipped: usize,
}

impl ParamMap {
    /// How many entries the request gave.
    pub fn len(&self) -> usize {
        self.entries.len() + self.skipped
    }

    /// Whether it gave none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept entries (all of them when [`ParamMap::len`] is at most [`MAX_PARAMETERS`]).
    pub fn entries(&self) -> &BTreeMap<String, Value> {
        &self.entries
    }
}

impl<'de> Deserialize<'de> for ParamMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = ParamMap;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of parameter names to values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ParamMap, A::Error> {
                use serde::de::IgnoredAny;
                let mut out = ParamMap::default();
                loop {
                    if out.entries.len() < MAX_PARAMETERS {
                        let Some(name) = map.next_key::<String>()? else { break };
                        let value = map.next_value()?;
                        out.entries.insert(name, value);
                    } else {
                        let Some(IgnoredAny) = map.next_key::<IgnoredAny>()? else { break };
                        map.next_value::<IgnoredAny>()?;
                        out.skipped += 1;
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Bounded)
    }
}

/// A trigger request: build these targets at this ref with these parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Target names (1 to 50, no duplicates).
    #[schema(min_items = 1, max_items = 100)]
    pub targets: Vec<String>,
    /// What to build: `branch` or `tag` (neither → each target's default branch), optionally `sha`.
    #[serde(rename = "ref", default)]
    #[schema(value_type = Option<RefRequest>)]
    pub git_ref: Option<GitRef>,
    /// Parameters for every target, checked against each target's declarations: at most 100,
    /// names at most 128 characters, string values at most 512 characters.
    #[serde(default)]
    #[schema(value_type = HashMap<String, ParameterInput>)]
    pub parameters: ParamMap,
    /// Per-target ref and parameters (keys: requested targets); override parameters are merged
    /// over the top-level ones (at most 100 after merging).
    #[serde(default)]
    pub overrides: BTreeMap<String, TargetOverride>,
    /// Free-form string labels: at most 64, keys 1 to 128 characters, values at most 1024.
    #[serde(default)]
    #[schema(value_type = HashMap<String, String>)]
    pub labels: BTreeMap<String, String>,
}

/// What one target builds differently from the rest of the request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    /// Replaces the request's ref for this target.
    #[serde(rename = "ref", default)]
    #[schema(value_type = Option<RefRequest>)]
    pub git_ref: Option<GitRef>,
    /// Merged over the request's parameters for this target (same limits).
    #[serde(default)]
    #[schema(value_type = HashMap<String, ParameterInput>)]
    pub parameters: ParamMap,
}

/// What to build, as a request gives it: `branch` or `tag` (not both; neither → the target's
/// default branch), optionally a commit `sha`. Branch and tag names follow git's
/// `check-ref-format` rules (no `..`, `@{`, `//`, no part starting with `.` or ending with
/// `.lock`, not starting with `-` or `/`, not ending with `/` or `.`), are at most 255 bytes and
/// hold no whitespace, control or invisible formatting characters (bidi overrides, zero-width).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the request for OpenAPI; the handler reads it as a `GitRef`
pub(crate) struct RefRequest {
    /// Branch name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF~^:?*\[\\]+$"
    )]
    branch: Option<String>,
    /// Tag name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF~^:?*\[\\]+$"
    )]
    tag: Option<String>,
    /// Commit sha: 7 to 40 hexadecimal digits.
    #[schema(pattern = "^[0-9a-fA-F]{7,40}$")]
    sha: Option<String>,
}

/// A requested parameter value: a string (at most 512 characters), a number or a boolean,
/// checked and coerced against the parameter's declared type.
#[derive(Debug)]
pub struct ParameterInput;

impl PartialSchema for ParameterInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_VALUE_CHARS)))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some("A string (at most 512 characters), a number or a boolean, coerced to the declared type"))
            .into()
    }
}

impl ToSchema for ParameterInput {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_maps_keep_at_most_the_cap_and_count_the_rest() {
        let text = format!(
            "{{{}}}",
            (0..95_000).map(|i| format!("\"{i:x}\":[{i},{{\"deep\":\"x\"}}]")).collect::<Vec<_>>().join(",")
        );
        let map: ParamMap = serde_json::from_str(&text).unwrap();
        assert_eq!(map.len(), 95_000);
        assert_eq!(map.entries().len(), MAX_PARAMETERS);
        let small: ParamMap = serde_json::from_str(r#"{"a": 1, "b": "x"}"#).unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(small.entries()["b"], "x");
        assert!(serde_json::from_str::<ParamMap>("[1]").is_err());
    }
}
