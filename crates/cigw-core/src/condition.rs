//! The condition language hook rules and chain rules share: `all`/`any` of tests on a header or on a
//! JSON pointer into a document (a hook's body, a chain's upstream run).
//!
//! ```toml
//! all = [
//!   { header = "X-GitHub-Event", equals = "push" },
//!   { pointer = "/ref", glob = "refs/heads/*" },
//! ]
//! any = [{ pointer = "/repository/name", one_of = ["api", "web"] }]
//! ```
//!
//! Regexes and globs are compiled when the configuration is read, so a bad one is a configuration
//! error with its key path, never a surprise at delivery time.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Request headers (names compared without case); empty where there are none (chains).
    pub headers: &'a [(String, String)],
    /// The JSON document pointers select from.
    pub document: &'a Value,
}

/// `all` of these and at least one of `any` (when `any` is not empty).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Conditions {
    /// Every one of these must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<Condition>,
    /// At least one of these must hold, unless the list is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<Condition>,
}

impl Conditions {
    /// `Ok` when the conditions hold, else why not (the first failing test, or every `any` test).
    pub fn evaluate(&self, subject: Subject<'_>) -> Result<(), String> {
        for condition in &self.all {
            condition.evaluate(subject)?;
        }
        if self.any.is_empty() {
            return Ok(());
        }
        let mut reasons = Vec::with_capacity(self.any.len());
        for condition in &self.any {
            match condition.evaluate(subject) {
                Ok(()) => return Ok(()),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(format!("none of `any` holds: {}", reasons.join("; ")))
    }

    /// Whether any test reads a header (meaningless where there are none, e.g. in chains).
    pub fn reads_headers(&self) -> bool {
        self.all.iter().chain(&self.any).any(|c| matches!(c.selector, Selector::Header(_)))
    }

    /// No conditions at all (always holds).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty()
    }
}

/// One test on one selected value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawCondition", into = "RawCondition")]
pub struct Condition {
    selector: Selector,
    test: Test,
}

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    /// A header, by its lower-cased name.
    Header(String),
    /// A JSON pointer (RFC 6901) into the document.
    Pointer(String),
}

#[derive(Debug, Clone)]
enum Test {
    Equals(Value),
    OneOf(Vec<Value>),
    Glob(String, globset::GlobMatcher),
    Regex(regex::Regex),
    Exists(bool),
}

impl PartialEq for Test {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Equals(a), Self::Equals(b)) => a == b,
            (Self::OneOf(a), Self::OneOf(b)) => a == b,
            (Self::Glob(a, _), Self::Glob(b, _)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Exists(a), Self::Exists(b)) => a == b,
            _ => false,
        }
    }
}

/// A condition as written: one selector and one test.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct RawCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    glob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let selector = match (raw.header, raw.pointer) {
            (Some(h), None) if !h.trim().is_empty() => Selector::Header(h.trim().to_ascii_lowercase()),
            (None, Some(p)) if p.is_empty() || p.starts_with('/') => Selector::Pointer(p),
            (None, Some(p)) => return Err(format!("pointer `{p}` must be empty or start with `/` (RFC 6901)")),
            (Some(_), Some(_)) => return Err("a condition takes `header` or `pointer`, not both".into()),
            _ => return Err("a condition needs `header = \"<name>\"` or `pointer = \"/json/pointer\"`".into()),
        };
        let mut tests = Vec::new();
        if let Some(v) = raw.equals {
            tests.push(Test::Equals(v));
        }
        if let Some(v) = raw.one_of {
            if v.is_empty() {
                return Err("`one_of` needs at least one value".into());
            }
            tests.push(Test::OneOf(v));
        }
        if let Some(pattern) = raw.glob {
            let glob = globset::GlobBuilder::new(&pattern)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("glob `{pattern}`: {}", e.kind()))?;
            tests.push(Test::Glob(pattern, glob.compile_matcher()));
        }
        if let Some(pattern) = raw.regex {
            let re = regex::Regex::new(&pattern).map_err(|e| format!("regex `{pattern}`: {e}"))?;
            tests.push(Test::Regex(re));
        }
        if let Some(v) = raw.exists {
            tests.push(Test::Exists(v));
        }
        match tests.len() {
            1 => Ok(Self { selector, test: tests.pop().expect("one test") }),
            0 => Err("a condition needs one test: `equals`, `one_of`, `glob`, `regex` or `exists`".into()),
            _ => Err("a condition takes exactly one of `equals`, `one_of`, `glob`, `regex`, `exists`".into()),
        }
    }
}

impl From<Condition> for RawCondition {
    fn from(c: Condition) -> Self {
        let mut raw = RawCondition::default();
        match c.selector {
            Selector::Header(h) => raw.header = Some(h),
            Selector::Pointer(p) => raw.pointer = Some(p),
        }
        match c.test {
            Test::Equals(v) => raw.equals = Some(v),
            Test::OneOf(v) => raw.one_of = Some(v),
            Test::Glob(p, _) => raw.glob = Some(p),
            Test::Regex(re) => raw.regex = Some(re.as_str().to_string()),
            Test::Exists(v) => raw.exists = Some(v),
        }
        raw
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(h) => write!(f, "header `{h}`"),
            Self::Pointer(p) => write!(f, "`{p}`"),
        }
    }
}

impl Condition {
    /// `Ok` when the test holds on the selected value, else a sentence saying what was found.
    pub fn evaluate(&self, subject: Subject<'_>) -> Result<(), String> {
        let selected: Option<Value> = match &self.selector {
            Selector::Header(name) => subject
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| Value::String(v.clone())),
            Selector::Pointer(p) => subject.document.pointer(p).filter(|v| !v.is_null()).cloned(),
        };
        let what = &self.selector;
        let Some(value) = selected else {
            return match self.test {
                Test::Exists(false) => Ok(()),
                _ => Err(format!("{what} is missing")),
            };
        };
        let shown = show(&value);
        let holds = match &self.test {
            Test::Exists(wanted) => {
                return if *wanted { Ok(()) } else { Err(format!("{what} exists ({shown}) but should not")) };
            }
            Test::Equals(wanted) => same(&value, wanted),
            Test::OneOf(list) => list.iter().any(|wanted| same(&value, wanted)),
            Test::Glob(_, glob) => text(&value).is_some_and(|t| glob.is_match(t.as_str())),
            Test::Regex(re) => text(&value).is_some_and(|t| re.is_match(&t)),
        };
        if holds {
            return Ok(());
        }
        Err(match &self.test {
            Test::Equals(wanted) => format!("{what} is {shown}, not {}", show(wanted)),
            Test::OneOf(list) => {
                format!("{what} is {shown}, not one of [{}]", list.iter().map(show).collect::<Vec<_>>().join(", "))
            }
            Test::Glob(pattern, _) => format!("{what} is {shown}, which does not match glob `{pattern}`"),
            Test::Regex(re) => format!("{what} is {shown}, which does not match regex `{}`", re.as_str()),
            Test::Exists(_) => unreachable!("answered above"),
        })
    }
}

/// Scalars compare by their text too, so `equals = "42"` matches a number and headers (always text)
/// can be compared with numbers.
fn same(value: &Value, wanted: &Value) -> bool {
    value == wanted || matches!((text(value), text(wanted)), (Some(a), Some(b)) if a == b)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short rendering for reasons: long values are cut so a reason stays one readable line.
fn show(value: &Value) -> String {
    let full = value.to_string();
    if full.chars().count() <= 80 { full } else { format!("{}…", full.chars().take(80).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conditions(toml_text: &str) -> Result<Conditions, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn push_to_main_is_one_line() {
        let c = conditions(
            r#"all = [{ header = "X-GitHub-Event", equals = "push" }, { pointer = "/ref", equals = "refs/heads/main" }]"#,
        )
        .unwrap();
        let h = headers(&[("x-github-event", "push")]);
        let doc = json!({"ref": "refs/heads/main"});
        assert_eq!(c.evaluate(Subject { headers: &h, document: &doc }), Ok(()));
        let doc = json!({"ref": "refs/heads/dev"});
        assert_eq!(
            c.evaluate(Subject { headers: &h, document: &doc }),
            Err(r#"`/ref` is "refs/heads/dev", not "refs/heads/main""#.into())
        );
        let h = headers(&[("X-GitHub-Event", "ping")]);
        assert_eq!(
            c.evaluate(Subject { headers: &h, document: &doc }),
            Err(r#"header `x-github-event` is "ping", not "push""#.into())
        );
        assert!(c.reads_headers());
    }

    #[test]
    fn each_test_holds_and_fails() {
        let doc = json!({"ref": "refs/tags/v1.2", "n": 42, "draft": false, "labels": ["a"], "none": null});
        let s = Subject { headers: &[], document: &doc };
        let holds = |t: &str| conditions(&format!("all = [{t}]")).unwrap().evaluate(s);
        assert_eq!(holds(r#"{ pointer = "/ref", glob = "refs/tags/v*" }"#), Ok(()));
        assert!(holds(r#"{ pointer = "/ref", glob = "refs/heads/*" }"#).unwrap_err().contains("glob"));
        assert_eq!(holds(r#"{ pointer = "/ref", regex = "^refs/tags/v\\d+\\.\\d+$" }"#), Ok(()));
        assert!(holds(r#"{ pointer = "/ref", regex = "^v" }"#).is_err());
        assert_eq!(holds(r#"{ pointer = "/n", equals = 42 }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/n", equals = "42" }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/draft", equals = false }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/n", one_of = [1, 42] }"#), Ok(()));
        assert!(holds(r#"{ pointer = "/n", one_of = [1, 2] }"#).unwrap_err().contains("not one of [1, 2]"));
        assert_eq!(holds(r#"{ pointer = "/labels/0", exists = true }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/missing", exists = false }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/none", exists = false }"#), Ok(()));
        assert_eq!(holds(r#"{ pointer = "/missing", equals = 1 }"#), Err("`/missing` is missing".into()));
        assert!(holds(r#"{ pointer = "/ref", exists = false }"#).is_err());
        // Globs and regexes never match objects or arrays.
        assert!(holds(r#"{ pointer = "/labels", glob = "*" }"#).is_err());
    }

    #[test]
    fn any_needs_one_and_reports_all() {
        let c = conditions(r#"any = [{ pointer = "/a", equals = 1 }, { pointer = "/b", equals = 2 }]"#).unwrap();
        let doc = json!({"b": 2});
        assert_eq!(c.evaluate(Subject { headers: &[], document: &doc }), Ok(()));
        let doc = json!({"a": 3});
        let reason = c.evaluate(Subject { headers: &[], document: &doc }).unwrap_err();
        assert!(reason.contains("`/a` is 3, not 1") && reason.contains("`/b` is missing"), "{reason}");
        assert!(Conditions::default().evaluate(Subject { headers: &[], document: &doc }).is_ok());
    }

    #[test]
    fn bad_conditions_are_refused_when_read() {
        for (text, wanted) in [
            (r#"all = [{ pointer = "/a" }]"#, "needs one test"),
            (r#"all = [{ pointer = "/a", equals = 1, glob = "x" }]"#, "exactly one"),
            (r#"all = [{ equals = 1 }]"#, "needs `header"),
            (r#"all = [{ header = "a", pointer = "/a", exists = true }]"#, "not both"),
            (r#"all = [{ pointer = "a", exists = true }]"#, "RFC 6901"),
            (r#"all = [{ pointer = "/a", regex = "(" }]"#, "regex `(`"),
            (r#"all = [{ pointer = "/a", glob = "[" }]"#, "glob `[`"),
            (r#"all = [{ pointer = "/a", one_of = [] }]"#, "at least one"),
        ] {
            let err = conditions(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let text = r#"all = [{ header = "x-a", glob = "v*" }, { pointer = "/r", regex = "^x$" }]"#;
        let c = conditions(text).unwrap();
        let back: Conditions = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
