//! Chains (`[chains.<name>]`): when an upstream run ends in a wanted state, trigger downstream
//! targets with a ref and parameters rendered from that run. `when.targets` fires for any one
//! upstream; `when.all_of` is a fan-in join that fires once every listed target has a run in a
//! wanted state for the same join key (the root trigger, or the commit sha).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::RunState;
use crate::catalog::Catalog;
use crate::condition::{Condition, Conditions, Subject};
use crate::config::Problems;
use crate::template::{TemplateError, Templates};

/// How deep a chain of chains may go at run time when a chain sets no `max_depth`: a guard
/// against loops `check-config` cannot see (e.g. through a hook calling back into cigw).
pub const DEFAULT_MAX_DEPTH: u32 = 8;
/// How long a half-complete join waits by default before it expires.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);

/// What runs of an `all_of` join have in common.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinKey {
    /// Runs started (directly or through chains) by the same root trigger.
    #[default]
    Root,
    /// Runs of the same commit sha, however they were started.
    Sha,
}

impl JoinKey {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinKey::Root => "root",
            JoinKey::Sha => "sha",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct RawWhen {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    all_of: Vec<String>,
    #[serde(default)]
    states: Option<Vec<RunState>>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    all: Vec<Condition>,
    #[serde(default)]
    any: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRef {
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    sha: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawThen {
    targets: Vec<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<RawRef>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawChain {
    when: RawWhen,
    then: RawThen,
    #[serde(default)]
    join: Option<JoinKey>,
    #[serde(default, with = "humantime_serde")]
    join_ttl: Option<Duration>,
    #[serde(default)]
    max_depth: Option<u32>,
    #[serde(default)]
    description: Option<String>,
}

/// Which upstream runs a chain reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The end of a run of any of these targets fires the chain.
    AnyOf(Vec<String>),
    /// A join: fires once every one of these targets has a wanted run for one join key.
    AllOf {
        /// The targets to wait for.
        targets: Vec<String>,
        /// What the runs share.
        key: JoinKey,
        /// How long a half-complete join waits.
        ttl: Duration,
    },
}

impl Upstream {
    /// Every upstream target.
    pub fn targets(&self) -> &[String] {
        match self {
            Upstream::AnyOf(t) | Upstream::AllOf { targets: t, .. } => t,
        }
    }
}

/// The ref templates of `then.ref` (each renders to a value; an empty rendering leaves it out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefTemplates {
    /// `then.ref.branch`.
    pub branch: bool,
    /// `then.ref.tag`.
    pub tag: bool,
    /// `then.ref.sha`.
    pub sha: bool,
}

/// One configured chain.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Its name (the table key).
    pub name: String,
    /// The upstream targets and how they combine.
    pub upstream: Upstream,
    /// Upstream end states that fire it (default `succeeded`).
    pub states: Vec<RunState>,
    /// Only upstream runs of a matching branch (a glob), when set.
    pub branch: Option<String>,
    branch_glob: Option<globset::GlobMatcher>,
    /// Conditions over the upstream run (JSON pointers into [`Chain`]'s upstream document).
    pub conditions: Conditions,
    /// Downstream targets.
    pub targets: Vec<String>,
    /// Which ref templates `then.ref` sets; `None`: the upstream's sha where the downstream can
    /// pin one, else its branch (or tag).
    pub git_ref: Option<RefTemplates>,
    /// Parameter names whose values are templates (strings); the rest are literal values.
    pub parameters: BTreeMap<String, Value>,
    /// Labels on each downstream trigger.
    pub labels: BTreeMap<String, String>,
    /// Deepest chain of chains this one may extend.
    pub max_depth: u32,
    /// Free text for people.
    pub description: Option<String>,
    templates: Arc<Templates>,
}

/// The ref a firing renders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedRef {
    /// Branch.
    pub branch: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Sha.
    pub sha: Option<String>,
}

impl Chain {
    /// Parse `[chains.<name>]`, recording problems at their key paths.
    pub fn parse(name: &str, value: &Value, problems: &mut Problems) -> Option<Chain> {
        let path = format!("chains.{name}");
        let errors_before = problems.errors().count();
        let raw: RawChain = problems.parse(&path, value)?;
        let mut ok = true;
        let mut fail = |problems: &mut Problems, at: String, message: String| {
            problems.error(at, message);
            ok = false;
        };
        let upstream = match (raw.when.targets.is_empty(), raw.when.all_of.is_empty()) {
            (false, true) => {
                if raw.join.is_some() || raw.join_ttl.is_some() {
                    fail(problems, format!("{path}.join"), "`join` and `join_ttl` apply to `when.all_of` only".into());
                }
                Upstream::AnyOf(raw.when.targets.clone())
            }
            (true, false) => {
                if raw.when.all_of.len() < 2 {
                    fail(
                        problems,
                        format!("{path}.when.all_of"),
                        "list at least two targets (for one, use `when.targets`)".into(),
                    );
                }
                let ttl = raw.join_ttl.unwrap_or(DEFAULT_JOIN_TTL);
                if ttl.is_zero() {
                    fail(problems, format!("{path}.join_ttl"), "must be longer than 0s".into());
                }
                Upstream::AllOf { targets: raw.when.all_of.clone(), key: raw.join.unwrap_or_default(), ttl }
            }
            (true, true) => {
                fail(problems, format!("{path}.when"), "give `targets` (any of them) or `all_of` (a join)".into());
                Upstream::AnyOf(vec![])
            }
            (false, false) => {
                fail(problems, format!("{path}.when"), "give either `targets` or `all_of`, not both".into());
                Upstream::AnyOf(vec![])
            }
        };
        let states = raw.when.states.clone().unwrap_or_else(|| vec![RunState::Succeeded]);
        if states.is_empty() {
            fail(problems, format!("{path}.when.states"), "list at least one end state".into());
        }
        for (i, s) in states.iter().enumerate() {
            if !s.is_terminal() {
                fail(
                    problems,
                    format!("{path}.when.states[{i}]"),
                    format!("`{s}` is not an end state (succeeded, failed, canceled, skipped, error)"),
                );
            }
        }
        let branch_glob = match &raw.when.branch {
            None => None,
            Some(g) => match globset::GlobBuilder::new(g).literal_separator(false).build() {
                Ok(glob) => Some(glob.compile_matcher()),
                Err(e) => {
                    fail(problems, format!("{path}.when.branch"), format!("`{g}` is not a glob: {e}"));
                    None
                }
            },
        };
        let conditions = Conditions { all: raw.when.all.clone(), any: raw.when.any.clone() };
        if conditions.reads_headers() {
            fail(
                problems,
                format!("{path}.when"),
                "chain conditions test the upstream run with `pointer`; a chain has no headers".into(),
            );
        }
        if raw.then.targets.is_empty() {
            fail(problems, format!("{path}.then.targets"), "give at least one target".into());
        }
        let max_depth = raw.max_depth.unwrap_or(DEFAULT_MAX_DEPTH);
        if max_depth == 0 {
            fail(problems, format!("{path}.max_depth"), "must be at least 1".into());
        }
        let mut templates = Templates::new();
        let mut add = |problems: &mut Problems, at: String, source: &str| {
            if let Err(TemplateError { message, .. }) = templates.add(&at, source) {
                problems.error(at, message);
                false
            } else {
                true
            }
        };
        let git_ref = raw.then.git_ref.as_ref().map(|r| {
            let mut set = RefTemplates::default();
            if r.branch.is_some() && r.tag.is_some() {
                problems.error(format!("{path}.then.ref"), "give `branch` or `tag`, not both");
            }
            for (field, source, flag) in
                [("branch", &r.branch, &mut set.branch), ("tag", &r.tag, &mut set.tag), ("sha", &r.sha, &mut set.sha)]
            {
                if let Some(source) = source {
                    *flag = add(problems, format!("{path}.then.ref.{field}"), source);
                }
            }
            set
        });
        for (pname, v) in &raw.then.parameters {
            match v {
                Value::String(source) => {
                    add(problems, format!("{path}.then.parameters.{pname}"), source);
                }
                Value::Bool(_) | Value::Number(_) => {}
                _ => problems.error(
                    format!("{path}.then.parameters.{pname}"),
                    "expected a string (a template), a boolean or an integer",
                ),
            }
        }
        if !ok || problems.errors().count() > errors_before {
            return None;
        }
        Some(Chain {
            name: name.to_string(),
            upstream,
            states,
            branch: raw.when.branch,
            branch_glob,
            conditions,
            targets: raw.then.targets,
            git_ref,
            parameters: raw.then.parameters,
            labels: raw.then.labels,
            max_depth,
            description: raw.description,
            templates: Arc::new(templates),
        })
    }

    /// Whether an upstream run (as its JSON document, see the gateway's chain module) on
    /// `branch` passes `when.branch` and the conditions; `Err` says why not. The end state is
    /// [`Chain::wants`]'s business: a join also records members that ended otherwise.
    pub fn matches(&self, branch: Option<&str>, upstream: &Value) -> Result<(), String> {
        if let Some(glob) = &self.branch_glob {
            match branch {
                Some(b) if glob.is_match(b) => {}
                Some(b) => {
                    return Err(format!("branch `{b}` does not match `{}`", self.branch.as_deref().unwrap_or("")));
                }
                None => return Err("the upstream run has no branch".into()),
            }
        }
        self.conditions.evaluate(Subject { headers: &[], document: upstream })
    }

    /// Whether `state` is one this chain waits for (joins: the member counts as done).
    pub fn wants(&self, state: RunState) -> bool {
        self.states.contains(&state)
    }

    /// Render `then.ref` over `context`; `None` when it is not set (the caller's default applies).
    pub fn render_ref(&self, context: &Value) -> Result<Option<RenderedRef>, TemplateError> {
        let Some(set) = &self.git_ref else { return Ok(None) };
        let path = format!("chains.{}.then.ref", self.name);
        let render = |on: bool, field: &str| -> Result<Option<String>, TemplateError> {
            if !on {
                return Ok(None);
            }
            let v = self.templates.render(&format!("{path}.{field}"), context)?;
            Ok((!v.is_empty()).then_some(v))
        };
        Ok(Some(RenderedRef {
            branch: render(set.branch, "branch")?,
            tag: render(set.tag, "tag")?,
            sha: render(set.sha, "sha")?,
        }))
    }

    /// Render `then.parameters` over `context` (strings are templates; other values as written).
    pub fn render_parameters(&self, context: &Value) -> Result<BTreeMap<String, Value>, TemplateError> {
        let mut out = BTreeMap::new();
        for (pname, v) in &self.parameters {
            let value = match v {
                Value::String(_) => Value::String(
                    self.templates.render(&format!("chains.{}.then.parameters.{pname}", self.name), context)?,
                ),
                other => other.clone(),
            };
            out.insert(pname.clone(), value);
        }
        Ok(out)
    }

    /// Check targets against the configured ones, at this chain's key paths.
    pub fn check(&self, catalog: &Catalog, problems: &mut Problems) {
        let path = format!("chains.{}", self.name);
        let known = || catalog.targets.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        let when_key = match self.upstream {
            Upstream::AnyOf(_) => "targets",
            Upstream::AllOf { .. } => "all_of",
        };
        for (i, name) in self.upstream.targets().iter().enumerate() {
            if !catalog.targets.contains_key(name) {
                problems.error(
                    format!("{path}.when.{when_key}[{i}]"),
                    format!("unknown target `{name}` (known targets: {})", known()),
                );
            }
        }
        for (i, name) in self.targets.iter().enumerate() {
            let Some(target) = catalog.targets.get(name) else {
                problems.error(
                    format!("{path}.then.targets[{i}]"),
                    format!("unknown target `{name}` (known targets: {})", known()),
                );
                continue;
            };
            for pname in self.parameters.keys() {
                if !target.spec.parameters.iter().any(|p| &p.name == pname) {
                    problems.error(
                        format!("{path}.then.parameters.{pname}"),
                        format!("target `{name}` declares no parameter `{pname}`"),
                    );
                }
            }
            if self.git_ref.as_ref().is_some_and(|r| r.sha) && !target.target.capabilities().pin_sha {
                problems.warn(
                    format!("{path}.then.ref.sha"),
                    format!("target `{name}` cannot pin a sha; runs are refused unless it sets `ignore_sha`"),
                );
            }
        }
    }
}

/// Parse every `[chains.<name>]` table.
pub fn parse_all(tables: &BTreeMap<String, Value>, problems: &mut Problems) -> BTreeMap<String, Chain> {
    tables.iter().filter_map(|(name, v)| Chain::parse(name, v, problems).map(|c| (name.clone(), c))).collect()
}

/// Report every cycle of targets the chains form (`a -> b -> a`), once each, at the path of
/// the first chain on it.
pub fn check_cycles(chains: &BTreeMap<String, Chain>, problems: &mut Problems) {
    // Edges upstream target → (downstream target, chain).
    let mut edges: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for chain in chains.values() {
        for up in chain.upstream.targets() {
            for down in &chain.targets {
                edges.entry(up).or_default().push((down, &chain.name));
            }
        }
    }
    let mut reported: BTreeSet<BTreeSet<&str>> = BTreeSet::new();
    for &start in edges.keys() {
        // Depth-first search for paths back to `start`.
        let mut stack: Vec<(Vec<&str>, Vec<&str>)> = vec![(vec![start], vec![])];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((targets, via)) = stack.pop() {
            let last = *targets.last().unwrap_or(&start);
            for &(next, chain) in edges.get(last).map(Vec::as_slice).unwrap_or(&[]) {
                let mut via = via.clone();
                via.push(chain);
                if next == start {
                    let members: BTreeSet<&str> = targets.iter().copied().collect();
                    if reported.insert(members) {
                        let mut shown = targets.clone();
                        shown.push(start);
                        let chains_on: BTreeSet<&str> = via.iter().copied().collect();
                        let first = via.first().copied().unwrap_or(chain);
                        problems.error(
                            format!("chains.{first}"),
                            format!(
                                "chains form a cycle: {} (through chains {})",
                                shown.join(" -> "),
                                chains_on.into_iter().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                } else if seen.insert(next) {
                    let mut path = targets.clone();
                    path.push(next);
                    stack.push((path, via));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> (Option<Chain>, Vec<String>) {
        let mut problems = Problems::default();
        let c = Chain::parse("c", &value, &mut problems);
        (c, problems.errors().map(ToString::to_string).collect())
    }

    #[test]
    fn a_simple_chain_parses_with_defaults() {
        let (c, errors) = parse(json!({"when": {"targets": ["a"]}, "then": {"targets": ["b"]}}));
        assert!(errors.is_empty(), "{errors:?}");
        let c = c.unwrap();
        assert_eq!(c.states, [RunState::Succeeded]);
        assert_eq!(c.upstream, Upstream::AnyOf(vec!["a".into()]));
        assert_eq!(c.max_depth, DEFAULT_MAX_DEPTH);
        assert!(c.git_ref.is_none());
    }

    #[test]
    fn bad_keys_states_globs_templates_and_headers_are_reported_at_their_paths() {
        let (c, errors) = parse(json!({
            "when": {"targets": ["a"], "states": ["running"], "branch": "[", "all": [{"header": "X", "equals": "y"}]},
            "then": {"targets": [], "ref": {"branch": "{{ upstream.branch"}, "parameters": {"p": [1]}},
            "join": "sha",
            "colour": 1,
        }));
        assert!(c.is_none());
        for key in [
            "chains.c.when.states[0]: ",
            "chains.c.when.branch: ",
            "chains.c.when: chain conditions",
            "chains.c.then.targets: ",
            "chains.c.then.ref.branch: ",
            "chains.c.then.parameters.p: ",
            "chains.c.join: ",
            "chains.c.colour: unknown key",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(key)), "{key}: {errors:?}");
        }
        let (_, errors) = parse(json!({"when": {"all_of": ["a"], "targets": ["b"]}, "then": {"targets": ["c"]}}));
        assert!(errors.iter().any(|e| e.starts_with("chains.c.when: give either")), "{errors:?}");
        let (_, errors) = parse(json!({"when": {"all_of": ["a"]}, "join": "commit", "then": {"targets": ["c"]}}));
        assert!(errors.iter().any(|e| e.starts_with("chains.c.join: ")), "{errors:?}");
    }

    #[test]
    fn matching_checks_state_branch_and_pointers() {
        let (c, _) = parse(json!({
            "when": {"targets": ["a"], "branch": "release/*", "all": [{"pointer": "/labels/team", "equals": "web"}]},
            "then": {"targets": ["b"]},
        }));
        let c = c.unwrap();
        let doc = json!({"labels": {"team": "web"}});
        assert!(c.matches(Some("release/1.2"), &doc).is_ok());
        assert!(c.wants(RunState::Succeeded) && !c.wants(RunState::Failed));
        assert!(c.matches(Some("main"), &doc).is_err());
        assert!(c.matches(None, &doc).is_err());
        assert!(c.matches(Some("release/1"), &json!({"labels": {"team": "api"}})).is_err());
    }

    #[test]
    fn templates_render_over_the_upstream_and_refuse_missing_fields() {
        let (c, errors) = parse(json!({
            "when": {"targets": ["a"]},
            "then": {"targets": ["b"], "ref": {"branch": "{{ upstream.branch }}", "sha": "{{ upstream.sha }}"},
                     "parameters": {"FROM": "{{ upstream.run_id }}", "N": 3, "X": "{{ upstream.nope }}"}},
        }));
        assert!(errors.is_empty(), "{errors:?}");
        let c = c.unwrap();
        let ctx = json!({"upstream": {"branch": "main", "sha": "abc1234", "run_id": "r1"}});
        let r = c.render_ref(&ctx).unwrap().unwrap();
        assert_eq!((r.branch.as_deref(), r.sha.as_deref(), r.tag), (Some("main"), Some("abc1234"), None));
        let e = c.render_parameters(&ctx).unwrap_err();
        assert!(e.message.contains("upstream.nope"), "{e}");
    }

    #[test]
    fn cycles_are_reported_once_with_their_path() {
        let mut problems = Problems::default();
        let mut chains = BTreeMap::new();
        for (name, up, down) in
            [("ab", "a", "b"), ("bc", "b", "c"), ("ca", "c", "a"), ("dd", "d", "d"), ("xy", "x", "y")]
        {
            let v = json!({"when": {"targets": [up]}, "then": {"targets": [down]}});
            chains.insert(name.to_string(), Chain::parse(name, &v, &mut problems).unwrap());
        }
        check_cycles(&chains, &mut problems);
        let errors: Vec<String> = problems.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("a -> b -> c -> a")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("d -> d")), "{errors:?}");
    }
}
