//! What a verified delivery asks for: a GitHub ping, no matching rule, a template that failed,
//! or the exact trigger request of the first matching rule. Shared by deliveries, the dry run
//! and replays, so all three answer alike.

use cigw_core::hook::{Hook, MappingError, Miss};
use serde_json::{Value, json};

use crate::error::{ApiError, FieldProblem};
use crate::hooks::verify::header;

/// The label a hook's trigger records its delivery id under.
pub const DELIVERY_LABEL: &str = "hook_delivery";
/// What the delivery label says in a dry run whose headers carry no delivery id.
pub const GENERATED_ID: &str = "(generated when delivered)";

/// What a delivery asks for.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A GitHub `ping` event (sent when a webhook is created): answered, nothing else.
    Ping,
    /// No rule matched.
    NotMatched {
        /// Why each rule did not.
        misses: Vec<Miss>,
    },
    /// The rule at `index` matched but one of its templates failed on this payload.
    TemplateError {
        /// Why the rules before it did not match.
        misses: Vec<Miss>,
        /// The template and what went wrong.
        error: MappingError,
        /// The hook (for the key path).
        hook: String,
        /// The rule's index.
        index: usize,
    },
    /// The rule at `index` matched: this is the trigger request it makes.
    Matched {
        /// The rule's name.
        rule: String,
        /// Why the rules before it did not match.
        misses: Vec<Miss>,
        /// The request, as `POST /v1/triggers` takes it.
        request: Value,
    },
}

/// Decide what a delivery with these headers and body asks of `hook`; the trigger request
/// records `delivery_id` as the label [`DELIVERY_LABEL`].
pub fn decide(hook: &Hook, headers: &[(String, String)], body: &Value, delivery_id: &str) -> Decision {
    if header(headers, "x-github-event") == Some("ping") {
        return Decision::Ping;
    }
    let evaluation = hook.evaluate(headers, body);
    let Some(index) = evaluation.matched else { return Decision::NotMatched { misses: evaluation.misses } };
    match hook.render(index, &hook.context(headers, body)) {
        Ok(mut request) => {
            if let Some(map) = request.as_object_mut() {
                let labels = map.entry("labels").or_insert_with(|| json!({}));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert(DELIVERY_LABEL.into(), Value::String(delivery_id.to_string()));
                }
            }
            Decision::Matched { rule: hook.rules[index].name.clone(), misses: evaluation.misses, request }
        }
        Err(error) => Decision::TemplateError { misses: evaluation.misses, error, hook: hook.name.clone(), index },
    }
}

/// The misses as JSON: `[{rule, reason}]`.
pub fn misses_json(misses: &[Miss]) -> Value {
    Value::Array(misses.iter().map(|m| json!({"rule": m.rule, "reason": m.reason})).collect())
}

/// One sentence with every rule's reason.
pub fn reason(misses: &[Miss]) -> String {
    if misses.is_empty() {
        return "the hook has no rules".into();
    }
    let each: Vec<String> = misses.iter().map(|m| format!("rule `{}`: {}", m.rule, m.reason)).collect();
    format!("no rule matched ({})", each.join("; "))
}

/// The answer to a delivery no rule matched (200).
pub fn not_matched_json(hook: &str, delivery_id: &str, misses: &[Miss]) -> Value {
    json!({
        "matched": false,
        "hook": hook,
        "delivery_id": delivery_id,
        "reason": reason(misses),
        "rules": misses_json(misses),
    })
}

/// The 422 of a template that failed: it names the template (at its configuration key path)
/// and the missing field.
pub fn template_error(hook: &str, error: &MappingError) -> ApiError {
    ApiError::unprocessable(
        "template_error",
        error.to_string(),
        vec![FieldProblem::new(format!("hooks.{hook}.{}", error.error.template), error.error.message.clone())],
    )
}
