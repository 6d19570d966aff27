//! `cigw hooks` (the configured hooks) and `cigw hook test|replay|deliveries`: dry-run a payload
//! through a hook's rules, replay a remembered delivery against the current rules, and list a
//! hook's remembered deliveries.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::{connect, finish, s, show_time, table, time};
use crate::client::{ClientError, ConnectArgs, segment};

/// Flags of `cigw hooks`.
#[derive(Debug, Args)]
pub(crate) struct HooksArgs {
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `cigw hook …`.
#[derive(Debug, Args)]
pub(crate) struct HookArgs {
    #[command(subcommand)]
    command: HookCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// Dry-run a payload: which rule matches, why the others do not, and the exact trigger
    /// request; nothing is stored or started.
    Test {
        /// The hook's name.
        name: String,
        /// The payload (a JSON file; `-` reads standard input).
        #[arg(long)]
        body: String,
        /// A request header as `Name: value` (repeatable), e.g. `--header 'X-GitHub-Event: push'`.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Check the signature in the headers too, over the file's exact bytes.
        #[arg(long)]
        verify: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-evaluate a remembered delivery against the hook's current rules and trigger what they
    /// ask for (a new trigger).
    Replay {
        /// The hook's name.
        name: String,
        /// The delivery id (see `cigw hook deliveries NAME`).
        delivery_id: String,
        /// Only show what would happen.
        #[arg(long)]
        dry_run: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a hook's remembered deliveries, newest first.
    Deliveries {
        /// The hook's name.
        name: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run `cigw hooks`.
pub(crate) async fn list(args: HooksArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    finish(client.get("/v1/hooks", &[]).await, args.json, |v| {
        let hooks = v.get("hooks").and_then(Value::as_array).cloned().unwrap_or_default();
        list_text(&hooks)
    })
}

fn list_text(hooks: &[Value]) -> String {
    if hooks.is_empty() {
        return "no hooks configured\n".into();
    }
    let strings = |v: &Value, key: &str| -> String {
        v.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let rows: Vec<Vec<String>> = hooks
        .iter()
        .map(|h| {
            vec![
                s(h, "name").into(),
                s(h, "scheme").into(),
                strings(h, "rules"),
                strings(h, "targets"),
                format!(
                    "{} ({} triggered)",
                    h["deliveries"].as_u64().unwrap_or(0),
                    h["triggered"].as_u64().unwrap_or(0)
                ),
                show_time(time(h, "last_received_at")),
            ]
        })
        .collect();
    table(&["HOOK", "SCHEME", "RULES", "TARGETS", "DELIVERIES", "LAST DELIVERY"], &rows)
}

/// Run `cigw hook …`.
pub(crate) async fn run(args: HookArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match args.command {
        HookCommand::Test { name, body, headers, verify, json } => {
            let request = match test_request(&body, &headers, verify) {
                Ok(r) => r,
                Err(e) => return e.report(),
            };
            let path = format!("/v1/hooks/{}/test", segment(&name));
            finish(client.post(&path, &request, &[]).await, json, evaluation_text)
        }
        HookCommand::Replay { name, delivery_id, dry_run, json } => {
            let mut path = format!("/v1/hooks/{}/deliveries/{}/replay", segment(&name), segment(&delivery_id));
            if dry_run {
                path.push_str("?dry_run=true");
            }
            finish(client.post(&path, &Value::Null, &[]).await, json, |v| match v.get("trigger_id") {
                Some(_) => replayed_text(v),
                None => evaluation_text(v),
            })
        }
        HookCommand::Deliveries { name, limit, json } => {
            let path = format!("/v1/hooks/{}/deliveries", segment(&name));
            finish(client.get(&path, &[("limit", limit.to_string())]).await, json, |v| {
                let list = v.get("deliveries").and_then(Value::as_array).cloned().unwrap_or_default();
                deliveries_text(&list)
            })
        }
    }
}

/// The body of `POST /v1/hooks/{name}/test` from the flags; problems name the flag.
fn test_request(body_path: &str, headers: &[String], verify: bool) -> Result<Value, ClientError> {
    let raw = if body_path == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| ClientError::Usage(format!("--body -: cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(body_path)
            .map_err(|e| ClientError::Usage(format!("--body `{body_path}`: cannot read the file: {e}")))?
    };
    let body: Value = serde_json::from_str(&raw)
        .map_err(|e| ClientError::Usage(format!("--body `{body_path}`: the file is not JSON: {e}")))?;
    let mut map = Map::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(ClientError::Usage(format!("--header `{header}`: expected `Name: value`")));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(ClientError::Usage(format!("--header `{header}`: `{name}` is not a header name")));
        }
        map.insert(name.to_string(), Value::String(value.trim().to_string()));
    }
    let mut request = json!({"headers": map, "body": body, "verify": verify});
    if verify {
        request["raw_body"] = Value::String(raw);
    }
    Ok(request)
}

/// A dry run (or a replay that triggered nothing) for a person.
fn evaluation_text(v: &Value) -> String {
    let hook = s(v, "hook");
    let mut out = match s(v, "outcome") {
        "would_trigger" => {
            format!("hook {hook}: rule `{}` matches; this trigger request would be made:\n", s(v, "rule"))
        }
        "invalid_request" => {
            format!("hook {hook}: rule `{}` matches, but intake would refuse its request:\n", s(v, "rule"))
        }
        "template_error" => format!("hook {hook}: rule `{}` matches, but a template fails:\n", s(v, "rule")),
        "ping" => format!("hook {hook}: a GitHub ping; answered, nothing triggered\n"),
        _ => format!("hook {hook}: no rule matches; nothing would be triggered\n"),
    };
    if let Some(check) = v.get("signature").filter(|c| !c.is_null()) {
        match check["valid"].as_bool() {
            Some(true) => out.push_str("  signature: valid\n"),
            _ => out.push_str(&format!("  signature: INVALID: {}\n", s(check, "message"))),
        }
    }
    for miss in v.get("rules").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!("  rule `{}` does not match: {}\n", s(miss, "rule"), s(miss, "reason")));
    }
    if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
        out.push_str(&format!("  error: {} ({})\n", s(error, "message"), s(error, "code")));
        for d in error.get("details").and_then(Value::as_array).into_iter().flatten() {
            out.push_str(&format!("    {}: {}\n", s(d, "field"), s(d, "message")));
        }
    }
    if let Some(request) = v.get("request").filter(|r| !r.is_null()) {
        let pretty = serde_json::to_string_pretty(request).unwrap_or_default();
        for line in pretty.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn replayed_text(v: &Value) -> String {
    let mut out = format!(
        "hook {}: delivery {} replayed; rule `{}` matched; trigger {}\n",
        s(v, "hook"),
        s(v, "delivery_id"),
        s(v, "rule"),
        s(v, "trigger_id")
    );
    for run in v.get("runs").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!("  run {}  {}  {}\n", s(run, "id"), s(run, "target"), s(run, "state")));
    }
    out
}

fn deliveries_text(list: &[Value]) -> String {
    if list.is_empty() {
        return "no deliveries remembered\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                s(d, "delivery_id").into(),
                show_time(time(d, "received_at")),
                s(d, "outcome").into(),
                d["status"].as_u64().map(|n| n.to_string()).unwrap_or_default(),
                match s(d, "rule") {
                    "" => "-".into(),
                    rule => rule.into(),
                },
                match s(d, "trigger_id") {
                    "" => "-".into(),
                    id => id.into(),
                },
                if d["replayable"].as_bool() == Some(true) { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    table(&["DELIVERY", "RECEIVED", "OUTCOME", "STATUS", "RULE", "TRIGGER", "REPLAYABLE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("push.json");
        std::fs::write(&file, "{\"ref\": \"refs/heads/main\"}").unwrap();
        let path = file.to_str().unwrap();
        let request = test_request(path, &["X-GitHub-Event: push".into()], true).unwrap();
        assert_eq!(request["headers"], json!({"X-GitHub-Event": "push"}));
        assert_eq!(request["body"], json!({"ref": "refs/heads/main"}));
        assert_eq!(request["raw_body"], "{\"ref\": \"refs/heads/main\"}");
        let err = test_request(path, &["no colon".into()], false).unwrap_err().to_string();
        assert!(err.contains("--header `no colon`: expected `Name: value`"), "{err}");
        let err = test_request("/nonexistent/push.json", &[], false).unwrap_err().to_string();
        assert!(err.contains("--body `/nonexistent/push.json`: cannot read the file"), "{err}");
        std::fs::write(&file, "{not json").unwrap();
        let err = test_request(path, &[], false).unwrap_err().to_string();
        assert!(err.contains("the file is not JSON"), "{err}");
    }

    #[test]
    fn a_dry_run_reads_as_a_sentence_per_rule() {
        let v = json!({"hook": "gh", "outcome": "would_trigger", "rule": "tag",
            "rules": [{"rule": "push", "reason": "`/ref` is \"refs/tags/v1\", not \"refs/heads/main\""}],
            "request": {"targets": ["api-build"]}, "signature": null, "error": null});
        let text = evaluation_text(&v);
        assert!(text.starts_with("hook gh: rule `tag` matches; this trigger request would be made:\n"), "{text}");
        assert!(text.contains("  rule `push` does not match: `/ref` is"), "{text}");
        assert!(text.contains("\"api-build\""), "{text}");
    }
}
