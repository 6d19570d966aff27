//! `cigw targets [NAME]`: the configured targets, or one target with its parameters.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{connect, print_json, s, table};
use crate::client::{ClientError, ConnectArgs};

/// Flags of `cigw targets`.
#[derive(Debug, Args)]
pub(crate) struct TargetsArgs {
    /// Show only this target, with its parameters and capabilities.
    name: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw targets`.
pub(crate) async fn run(args: TargetsArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listing = match client.get("/v1/targets", &[]).await {
        Ok(v) => v,
        Err(e) => return e.report(),
    };
    let targets = listing.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
    match &args.name {
        None if args.json => print_json(&listing),
        None => print!("{}", list_text(&targets)),
        Some(name) => {
            let Some(t) = targets.iter().find(|t| s(t, "name") == name) else {
                let known: Vec<&str> = targets.iter().map(|t| s(t, "name")).collect();
                let e = ClientError::Usage(format!("unknown target `{name}` (known targets: {})", known.join(", ")));
                return e.report();
            };
            if args.json {
                print_json(t);
            } else {
                print!("{}", detail_text(t));
            }
        }
    }
    ExitCode::SUCCESS
}

fn list_text(targets: &[Value]) -> String {
    if targets.is_empty() {
        return "no targets configured\n".into();
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let params: Vec<String> = t
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let required = p.get("required").and_then(Value::as_bool) == Some(true);
                    format!("{}{}", s(p, "name"), if required { "*" } else { "" })
                })
                .collect();
            vec![
                s(t, "name").into(),
                format!("{}/{}", s(t, "provider"), s(t, "account")),
                s(t, "default_branch").into(),
                if params.is_empty() { "-".into() } else { params.join(",") },
                s(t, "description").into(),
            ]
        })
        .collect();
    table(&["TARGET", "PROVIDER", "BRANCH", "PARAMETERS", "DESCRIPTION"], &rows)
}

/// One parameter: `name: type, required, default x, one of a|b, secret — description`.
fn parameter_line(p: &Value) -> String {
    let mut traits = vec![s(p, "type").to_string()];
    if p.get("required").and_then(Value::as_bool) == Some(true) {
        traits.push("required".into());
    }
    if p.get("secret").and_then(Value::as_bool) == Some(true) {
        traits.push("secret".into());
    }
    if let Some(d) = p.get("default").filter(|d| !d.is_null()) {
        traits.push(format!("default {}", d.as_str().map(String::from).unwrap_or_else(|| d.to_string())));
    }
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        let shown: Vec<String> =
            values.iter().map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).collect();
        traits.push(format!("one of {}", shown.join("|")));
    }
    let mut line = format!("{}: {}", s(p, "name"), traits.join(", "));
    if let Some(d) = p.get("description").and_then(Value::as_str) {
        line.push_str(&format!(" — {d}"));
    }
    line
}

/// The declared parameters of a target, for error explanations and `cigw targets NAME`.
pub(crate) fn parameters_text(t: &Value) -> String {
    let params = t.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    if params.is_empty() {
        let _ = writeln!(out, "target `{}` declares no parameters", s(t, "name"));
    } else {
        let _ = writeln!(out, "parameters of `{}`:", s(t, "name"));
        for p in &params {
            let _ = writeln!(out, "  {}", parameter_line(p));
        }
    }
    out
}

fn detail_text(t: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}  {}/{}  {}", s(t, "name"), s(t, "provider"), s(t, "account"), s(t, "locator"));
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "  {d}");
    }
    let _ = writeln!(out, "default branch: {}", s(t, "default_branch"));
    let _ = writeln!(out, "concurrency: {}", s(t, "concurrency"));
    if let Some(m) = t.get("max_duration_seconds").and_then(Value::as_u64) {
        let _ = writeln!(out, "max duration: {}", humantime::format_duration(std::time::Duration::from_secs(m)));
    }
    if let Some(caps) = t.get("capabilities").and_then(Value::as_object) {
        let yes: Vec<&str> = caps.iter().filter(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(out, "can: {}", yes.join(", "));
    }
    out.push_str(&parameters_text(t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"name": "web-e2e", "provider": "codefresh", "account": "main", "locator": "web/e2e",
            "description": "End-to-end tests", "default_branch": "main", "concurrency": "queue",
            "max_duration_seconds": 3600,
            "parameters": [
                {"name": "env", "type": "string", "required": false, "secret": false, "enum": ["qa", "staging"],
                 "default": "qa", "description": null},
                {"name": "retries", "type": "integer", "required": true, "secret": false, "enum": null,
                 "default": null, "description": "How often"},
                {"name": "api_key", "type": "string", "required": false, "secret": true, "enum": null,
                 "default": "***", "description": null}],
            "capabilities": {"cancel": true, "rerun": false, "approve": true}})
    }

    #[test]
    fn the_list_marks_required_parameters() {
        assert_eq!(
            list_text(&[sample()]),
            "TARGET   PROVIDER        BRANCH  PARAMETERS            DESCRIPTION\n\
             web-e2e  codefresh/main  main    env,retries*,api_key  End-to-end tests\n"
        );
        assert_eq!(list_text(&[]), "no targets configured\n");
    }

    #[test]
    fn the_detail_shows_every_declared_parameter() {
        let text = detail_text(&sample());
        assert!(text.contains("  env: string, default qa, one of qa|staging\n"), "{text}");
        assert!(text.contains("  retries: integer, required — How often\n"), "{text}");
        assert!(text.contains("  api_key: string, secret, default ***\n"), "{text}");
        assert!(text.contains("can: approve, cancel\n"), "{text}");
        assert!(text.contains("max duration: 1h\n"), "{text}");
        let none = parameters_text(&json!({"name": "x", "parameters": []}));
        assert_eq!(none, "target `x` declares no parameters\n");
    }
}
