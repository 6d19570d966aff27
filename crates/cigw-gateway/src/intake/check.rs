//! Checking a trigger request against the requester's scopes and the catalog: every problem is
//! found and reported at once, or one run per target is planned.

use std::collections::BTreeSet;

use cigw_core::catalog::ConfiguredTarget;
use cigw_core::git_ref::RefProblem;
use cigw_core::params::{self, MAX_PARAMETERS};
use cigw_core::{GitRef, Parameters};

use super::IntakeError;
use super::request::{MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, MAX_TARGETS, TriggerRequest};
use crate::auth::Principal;
use crate::error::{FieldProblem, MAX_DETAILS};
use crate::state::AppState;

/// Most problems named in the `message` of a 422 (all kept ones are in `details`).
const MESSAGE_PROBLEMS: usize = 3;

/// Why a request cannot be accepted, before the codes are folded into one answer. Keeps the
/// first [`MAX_DETAILS`] problems and counts the rest, so its size never follows the request's.
#[derive(Default)]
struct Problems {
    items: Vec<FieldProblem>,
    omitted: usize,
    codes: BTreeSet<&'static str>,
}

impl Problems {
    fn push(&mut self, code: &'static str, field: impl Into<String>, message: impl Into<String>) {
        self.codes.insert(code);
        if self.items.len() < MAX_DETAILS {
            self.items.push(FieldProblem::new(field, message));
        } else {
            self.omitted += 1;
        }
    }

    /// One 422 for every problem: `unknown_target` when a target is unknown, the shared code
    /// when all problems are of one kind, else `validation_failed`. The message names the first
    /// few problems and how many there are.
    fn into_error(self) -> Option<IntakeError> {
        let code = match self.codes.len() {
            0 => return None,
            _ if self.codes.contains("unknown_target") => "unknown_target",
            1 => self.codes.first().copied().unwrap_or("validation_failed"),
            _ => "validation_failed",
        };
        let total = self.items.len() + self.omitted;
        let message = if total == 1 {
            format!("`{}`: {}", self.items[0].field, self.items[0].message)
        } else {
            let shown: Vec<String> =
                self.items.iter().take(MESSAGE_PROBLEMS).map(|p| format!("`{}`: {}", p.field, p.message)).collect();
            let rest = total - shown.len();
            let more = if rest > 0 { format!("; and {rest} more") } else { String::new() };
            format!("{total} problems: {}{more}", shown.join("; "))
        };
        Some(IntakeError::Invalid { code, message, problems: self.items, omitted: self.omitted })
    }
}

/// One validated run to create.
pub(super) struct Planned<'a> {
    pub(super) target: &'a ConfiguredTarget,
    pub(super) git_ref: GitRef,
    pub(super) parameters: Parameters,
}

/// Check `req` for `principal` against the catalog: every problem at once, or one planned run
/// per requested target.
pub(super) fn plan<'a>(
    state: &'a AppState,
    principal: &Principal,
    req: &TriggerRequest,
) -> Result<Vec<Planned<'a>>, IntakeError> {
    let mut problems = Problems::default();
    if req.targets.is_empty() {
        problems.push("invalid_targets", "targets", "give at least one target");
    }
    if req.targets.len() > MAX_TARGETS {
        // Nothing else is looked at: the work (and the answer) must not grow with the list.
        problems.push(
            "invalid_targets",
            "targets",
            format!("at most {MAX_TARGETS} targets per trigger, got {}", req.targets.len()),
        );
        return Err(problems.into_error().unwrap_or_else(|| IntakeError::Internal("no problem recorded".into())));
    }
    let mut seen = BTreeSet::new();
    for (i, name) in req.targets.iter().enumerate() {
        if !seen.insert(name.as_str()) {
            problems.push("invalid_targets", format!("targets[{i}]"), format!("target `{name}` is listed twice"));
        }
    }
    // The scope is checked before anything else about the targets: a token learns nothing about
    // targets it may not trigger.
    let missing: Vec<String> =
        seen.iter().filter(|t| !principal.may_trigger(t)).map(|t| format!("trigger:{t}")).collect();
    if !missing.is_empty() {
        return Err(IntakeError::MissingScopes(missing));
    }
    for name in req.overrides.keys().filter(|k| !seen.contains(k.as_str())) {
        problems.push("invalid_overrides", format!("overrides.{name}"), "not one of the requested targets");
    }
    if req.labels.len() > MAX_LABELS {
        problems.push("invalid_labels", "labels", format!("at most {MAX_LABELS} labels, got {}", req.labels.len()));
    }
    for (key, value) in &req.labels {
        if key.is_empty() || key.chars().count() > MAX_LABEL_KEY {
            problems.push(
                "invalid_labels",
                format!("labels.{key}"),
                format!("keys must be 1 to {MAX_LABEL_KEY} characters"),
            );
        }
        if value.chars().count() > MAX_LABEL_VALUE {
            problems.push(
                "invalid_labels",
                format!("labels.{key}"),
                format!("values must be at most {MAX_LABEL_VALUE} characters"),
            );
        }
    }
    let top_ref = req.git_ref.clone().unwrap_or_default();
    let top_ref_ok = match top_ref.check() {
        Ok(()) => true,
        Err(problem) => {
            problems.push("invalid_ref", ref_field("ref", &problem), problem.message);
            false
        }
    };
    // An oversized parameter map is refused as a whole, once, before any target looks at it.
    let mut params_ok = true;
    if req.parameters.len() > MAX_PARAMETERS {
        problems.push("invalid_parameters", "parameters", params::too_many_message(req.parameters.len()));
        params_ok = false;
    }
    for (name, o) in req.overrides.iter().filter(|(_, o)| o.parameters.len() > MAX_PARAMETERS) {
        problems.push(
            "invalid_parameters",
            format!("overrides.{name}.parameters"),
            params::too_many_message(o.parameters.len()),
        );
        params_ok = false;
    }

    let mut planned = Vec::new();
    let mut unique = BTreeSet::new();
    for (i, name) in req.targets.iter().enumerate() {
        if !unique.insert(name.as_str()) {
            continue;
        }
        let Some(target) = state.target(name) else {
            let known: Vec<&str> =
                state.catalog.targets.keys().map(String::as_str).filter(|t| principal.may_trigger(t)).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            problems.push(
                "unknown_target",
                format!("targets[{i}]"),
                format!("unknown target `{name}` (known targets: {known})"),
            );
            continue;
        };
        let over = req.overrides.get(name);
        let (git_ref, ref_field) = match over.and_then(|o| o.git_ref.clone()) {
            Some(r) => {
                let field = format!("overrides.{name}.ref");
                if let Err(problem) = r.check() {
                    problems.push("invalid_ref", ref_field(&field, &problem), problem.message);
                    continue;
                }
                (r, field)
            }
            None if top_ref_ok => (top_ref.clone(), "ref".to_string()),
            None => continue,
        };
        let git_ref = git_ref.or_default_branch(&target.spec.default_branch);
        if let Err(message) = target.target.check_ref(&git_ref) {
            problems.push("unsupported_ref", ref_field, format!("target `{name}`: {message}"));
        }
        if !params_ok {
            continue;
        }
        let mut requested = req.parameters.entries().clone();
        if let Some(o) = over {
            requested.extend(o.parameters.entries().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        match params::validate(&target.spec.parameters, &requested) {
            Ok(parameters) => planned.push(Planned { target, git_ref, parameters }),
            Err(errors) if errors.too_many.is_some() => {
                let count = errors.too_many.unwrap_or_default();
                problems.push(
                    "invalid_parameters",
                    format!("overrides.{name}.parameters"),
                    format!("target `{name}`: {} (request and override merged)", params::too_many_message(count)),
                );
            }
            Err(errors) => {
                for p in errors.problems {
                    let field = if over.is_some_and(|o| o.parameters.entries().contains_key(&p.name)) {
                        format!("overrides.{name}.parameters.{}", p.name)
                    } else {
                        format!("parameters.{}", p.name)
                    };
                    problems.push("invalid_parameters", field, format!("target `{name}`: {}", p.message));
                }
            }
        }
    }
    match problems.into_error() {
        Some(e) => Err(e),
        None => Ok(planned),
    }
}

/// The field of a ref problem under `prefix` (`ref`, `overrides.<target>.ref`): `ref.branch`, ….
fn ref_field(prefix: &str, problem: &RefProblem) -> String {
    match problem.field {
        Some(f) => format!("{prefix}.{f}"),
        None => prefix.to_string(),
    }
}
