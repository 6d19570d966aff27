//! Templates hook mappings and chain rules use to build a trigger from a JSON context (minijinja,
//! Jinja syntax), with a few filters for git refs.
//!
//! Undefined values are errors, never empty strings: a mapping that reads a field the payload does
//! not have must refuse the delivery and say which field, not start a build at ref "".

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// A set of named templates, each checked for syntax when added.
pub struct Templates {
    env: Environment<'static>,
}

/// A template that did not parse or render; names the template and, where known, the missing field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {message}")]
pub struct TemplateError {
    /// The template's name (where it sits in the configuration, e.g. `rules[0].ref`).
    pub template: String,
    /// What went wrong.
    pub message: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("names", &self.env.templates().map(|(n, _)| n).collect::<Vec<_>>()).finish()
    }
}

impl Templates {
    /// An empty set with strict undefined values and cigw's filters.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Values are rendered into refs and parameters, never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("branch", |s: String| s.strip_prefix("refs/heads/").map(str::to_string).unwrap_or(s));
        env.add_filter("tag", |s: String| s.strip_prefix("refs/tags/").map(str::to_string).unwrap_or(s));
        env.add_filter("short_sha", |s: String| s.chars().take(7).collect::<String>());
        env.add_filter("strip_prefix", |s: String, prefix: String| {
            s.strip_prefix(prefix.as_str()).map(str::to_string).unwrap_or(s)
        });
        Self { env }
    }

    /// Add a template under `name`; a syntax error is reported now.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| TemplateError { template: name.to_string(), message: describe(&e) })
    }

    /// Whether a template of that name was added.
    pub fn contains(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Render `name` over `context`, trimmed; an undefined field is an error naming it.
    pub fn render(&self, name: &str, context: &Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError { template: name.to_string(), message: describe(&e) })?;
        template.render(context).map(|s| s.trim().to_string()).map_err(|e| {
            let message = match e.kind() {
                minijinja::ErrorKind::UndefinedError => match first_missing(&template, context) {
                    Some(field) => format!("`{field}` is not in the payload"),
                    None => describe(&e),
                },
                _ => describe(&e),
            };
            TemplateError { template: name.to_string(), message }
        })
    }
}

/// The error's own sentence, without minijinja's source excerpt.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The first variable path (e.g. `body.head_commit.id`) the template reads that the context lacks.
fn first_missing(template: &minijinja::Template<'_, '_>, context: &Value) -> Option<String> {
    let mut paths: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    paths.sort();
    paths.into_iter().find(|path| {
        let mut at = context;
        for part in path.split('.') {
            match at.get(part) {
                Some(next) if !next.is_null() => at = next,
                _ => return true,
            }
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(source: &str, context: Value) -> Result<String, TemplateError> {
        let mut t = Templates::new();
        t.add("rules[0].ref", source)?;
        t.render("rules[0].ref", &context)
    }

    #[test]
    fn renders_fields_and_ref_filters() {
        let ctx = json!({"body": {"ref": "refs/heads/feature/x", "after": "0123456789abcdef"}, "hook": "github"});
        assert_eq!(render("{{ body.ref | branch }}", ctx.clone()).unwrap(), "feature/x");
        assert_eq!(render("{{ body.after | short_sha }}", ctx.clone()).unwrap(), "0123456");
        assert_eq!(render("{{ 'refs/tags/v1' | tag }}", ctx.clone()).unwrap(), "v1");
        assert_eq!(render("{{ body.ref | strip_prefix('refs/') }}", ctx.clone()).unwrap(), "heads/feature/x");
        assert_eq!(render("  {{ hook }}-<&>\n", ctx.clone()).unwrap(), "github-<&>");
        assert_eq!(render("{{ body.missing | default('main') }}", ctx).unwrap(), "main");
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let err = render("{{ body.head_commit.id }}", json!({"body": {"ref": "x"}})).unwrap_err();
        assert_eq!(err.template, "rules[0].ref");
        assert_eq!(err.message, "`body.head_commit.id` is not in the payload");
        assert!(err.to_string().contains("rules[0].ref"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_when_added() {
        let mut t = Templates::new();
        let err = t.add("then.ref", "{{ body.ref ").unwrap_err();
        assert_eq!(err.template, "then.ref");
        assert!(err.message.contains("syntax"), "{}", err.message);
        assert!(!t.contains("then.ref"));
    }
}
