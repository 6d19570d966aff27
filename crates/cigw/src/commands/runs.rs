//! `cigw runs` (a filtered table) and `cigw status ID` (one run with its events, and the tree of
//! triggers chains made around it; or, given a trigger id, that tree).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use clap::Args;
use serde_json::Value;

use super::{connect, finish, s, show_ref, show_time, table, time};
use crate::client::{ClientError, ConnectArgs, segment};

/// Flags of `cigw runs`.
#[derive(Debug, Args)]
pub(crate) struct RunsArgs {
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Only this state (pending, queued, running, blocked, canceling, succeeded, failed, canceled, skipped, error).
    #[arg(long)]
    state: Option<String>,
    /// Only the runs of this trigger.
    #[arg(long = "trigger", value_name = "TRIGGER_ID")]
    trigger: Option<String>,
    /// Only runs created since: an RFC 3339 time, or a duration ago such as 2h.
    #[arg(long)]
    since: Option<String>,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The `next_cursor` printed under the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw runs`.
pub(crate) async fn list(args: RunsArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    for (key, value) in
        [("target", &args.target), ("state", &args.state), ("trigger_id", &args.trigger), ("cursor", &args.cursor)]
    {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    if let Some(since) = &args.since {
        match since_to_rfc3339(since) {
            Ok(t) => query.push(("since", t)),
            Err(e) => return e.report(),
        }
    }
    finish(client.get("/v1/runs", &query).await, args.json, runs_text)
}

/// `--since`: an RFC 3339 time is passed on; a duration means that long ago.
fn since_to_rfc3339(since: &str) -> Result<String, ClientError> {
    if chrono::DateTime::parse_from_rfc3339(since).is_ok() {
        return Ok(since.to_string());
    }
    let ago: Duration = humantime::parse_duration(since).map_err(|_| {
        ClientError::Usage(format!("--since `{since}`: expected an RFC 3339 time or a duration such as 2h"))
    })?;
    let ago =
        chrono::Duration::from_std(ago).map_err(|_| ClientError::Usage(format!("--since `{since}`: too long")))?;
    Ok((Utc::now() - ago).to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn runs_text(page: &Value) -> String {
    let runs = page.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
    if runs.is_empty() {
        return "no runs\n".into();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                s(r, "id").to_string(),
                s(r, "target").to_string(),
                s(r, "provider").to_string(),
                s(r, "state").to_string(),
                show_ref(r.get("ref").unwrap_or(&Value::Null)),
                show_time(time(r, "created_at")),
            ]
        })
        .collect();
    let mut out = table(&["RUN", "TARGET", "PROVIDER", "STATE", "REF", "CREATED"], &rows);
    if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
        let _ = writeln!(out, "more: --cursor {next}");
    }
    out
}

/// Flags of `cigw status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Run id (or a trigger id: its chain tree).
    run: String,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw status`.
pub(crate) async fn status(args: StatusArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let run = match client.get(&format!("/v1/runs/{}", segment(&args.run)), &[]).await {
        // Not a run: perhaps a trigger, whose tree is drawn.
        Err(ClientError::Api { status, code, message, details }) if status == reqwest::StatusCode::NOT_FOUND => {
            let tree = match client.get(&format!("/v1/triggers/{}/tree", segment(&args.run)), &[]).await {
                // Neither a run nor a trigger: say so as a run (what the command is mostly given).
                Err(ClientError::Api { status: s, .. }) if s == reqwest::StatusCode::NOT_FOUND => {
                    Err(ClientError::Api { status, code, message, details })
                }
                other => other,
            };
            return finish(tree, args.json, |t| tree_text(t, None));
        }
        other => other,
    };
    let Ok(run) = run else { return finish(run, args.json, run_text) };
    if args.json {
        return finish(Ok(run), true, run_text);
    }
    let mut out = run_text(&run);
    let trigger = s(&run, "trigger_id").to_string();
    // A tree of one trigger adds nothing; a tree that cannot be read leaves the run shown.
    if let Ok(tree) = client.get(&format!("/v1/triggers/{}/tree", segment(&trigger)), &[]).await
        && tree.get("triggers").and_then(Value::as_array).is_some_and(|t| t.len() > 1)
    {
        out.push_str(&tree_text(&tree, Some(s(&run, "id"))));
    }
    finish(Ok(Value::String(out)), false, |v| v.as_str().unwrap_or_default().to_string())
}

/// A trigger tree for a person: each run, and under it the triggers its end fired (with the
/// chain's name), drawn with box characters; `here` marks one run.
pub(crate) fn tree_text(tree: &Value, here: Option<&str>) -> String {
    let nodes = tree.get("triggers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "chain tree (root trigger {}):", s(tree, "root_trigger_id"));
    let Some(root) = nodes.first() else { return out };
    let _ = writeln!(out, "trigger {} ({})", s(&root["trigger"], "id"), s(&root["trigger"], "source"));
    draw_runs(&nodes, root, "", here, &mut out);
    out
}

fn draw_runs(nodes: &[Value], node: &Value, indent: &str, here: Option<&str>, out: &mut String) {
    let runs = node["trigger"]["runs"].as_array().cloned().unwrap_or_default();
    for (i, run) in runs.iter().enumerate() {
        let last = i + 1 == runs.len();
        let id = s(run, "id");
        let mark = if Some(id) == here { "  ← this run" } else { "" };
        let _ = writeln!(
            out,
            "{indent}{}{}  {}  run {id}{mark}",
            if last { "└─ " } else { "├─ " },
            s(run, "target"),
            s(run, "state"),
        );
        let child_indent = format!("{indent}{}", if last { "   " } else { "│  " });
        let fired: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["parent_run_ids"].as_array().and_then(|p| p.first()).and_then(Value::as_str) == Some(id))
            .collect();
        for (j, child) in fired.iter().enumerate() {
            let last_child = j + 1 == fired.len();
            let others: Vec<&str> =
                child["parent_run_ids"].as_array().into_iter().flatten().skip(1).filter_map(Value::as_str).collect();
            let join =
                if others.is_empty() { String::new() } else { format!(", joined with run {}", others.join(", run ")) };
            let _ = writeln!(
                out,
                "{child_indent}{}[chain {}] trigger {}{join}",
                if last_child { "└─ " } else { "├─ " },
                s(child, "chain"),
                s(&child["trigger"], "id"),
            );
            let deeper = format!("{child_indent}{}", if last_child { "   " } else { "│  " });
            draw_runs(nodes, child, &deeper, here, out);
        }
    }
}

/// A run for a person: one `field  value` line each, then its events.
pub(crate) fn run_text(run: &Value) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("run", s(run, "id").into()),
        ("target", format!("{} ({}, account {})", s(run, "target"), s(run, "provider"), s(run, "account"))),
    ];
    let mut state = s(run, "state").to_string();
    if let Some(raw) = run.get("raw_status").and_then(Value::as_str) {
        state.push_str(&format!(" (provider: {raw})"));
    }
    if run.get("cancel_requested").and_then(Value::as_bool) == Some(true) {
        state.push_str(", cancel requested");
    }
    if run.get("unconfirmed").and_then(Value::as_bool) == Some(true) {
        state.push_str(", unconfirmed");
    }
    lines.push(("state", state));
    if let Some(m) = run.get("message").and_then(Value::as_str) {
        lines.push(("message", m.into()));
    }
    lines.push(("ref", show_ref(run.get("ref").unwrap_or(&Value::Null))));
    if let Some(params) = run.get("parameters").and_then(Value::as_object).filter(|p| !p.is_empty()) {
        let shown: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
            .collect();
        lines.push(("parameters", shown.join(" ")));
    }
    if let Some(p) = run.get("provider_ref").filter(|p| !p.is_null()) {
        let mut text = s(p, "id").to_string();
        if let Some(n) = p.get("number").and_then(Value::as_u64) {
            text = format!("#{n} ({text})");
        }
        if let Some(u) = p.get("url").and_then(Value::as_str) {
            text.push_str(&format!(" {u}"));
        }
        lines.push(("build", text));
    }
    lines.push(("trigger", s(run, "trigger_id").into()));
    if let Some(of) = run.get("rerun_of").and_then(Value::as_str) {
        let failed_only = run.get("rerun_failed_only").and_then(Value::as_bool) == Some(true);
        lines.push(("rerun of", format!("{of}{}", if failed_only { " (failed only)" } else { "" })));
    }
    lines.push(("requested by", s(run, "requested_by").into()));
    for key in ["created_at", "queued_at", "started_at", "finished_at"] {
        if let Some(t) = time(run, key) {
            lines.push((key.trim_end_matches("_at"), show_time(Some(t))));
        }
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &lines {
        let _ = writeln!(out, "{k:width$}  {v}");
    }
    if let Some(events) = run.get("events").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "events:");
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    format!("  {}", e.get("id").map(Value::to_string).unwrap_or_default()),
                    show_time(time(e, "created_at")),
                    s(e, "kind").to_string(),
                    s(e, "state").to_string(),
                    e.get("data").map(super::event_summary).unwrap_or_default(),
                ]
            })
            .collect();
        let t = table(&["", "", "", "", ""], &rows);
        // The header row of empty titles is only there to size the columns.
        out.push_str(t.split_once('\n').map(|(_, rest)| rest).unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_accepts_times_and_durations() {
        assert_eq!(since_to_rfc3339("2026-01-31T10:00:00Z").unwrap(), "2026-01-31T10:00:00Z");
        let t = since_to_rfc3339("2h").unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(&t).unwrap();
        let ago = Utc::now() - parsed.with_timezone(&Utc);
        assert!((7199..=7201).contains(&ago.num_seconds()), "{t}");
        assert!(since_to_rfc3339("yesterday").unwrap_err().to_string().contains("--since"));
    }

    #[test]
    fn the_runs_table_and_cursor() {
        let page = json!({"runs": [{"id": "r1", "target": "api", "provider": "circleci", "state": "running",
            "ref": {"branch": "main"}, "created_at": "2026-01-31T10:00:00Z"}], "next_cursor": "c2"});
        let text = runs_text(&page);
        assert_eq!(
            text,
            "RUN  TARGET  PROVIDER  STATE    REF          CREATED\n\
             r1   api     circleci  running  branch main  2026-01-31T10:00:00Z\n\
             more: --cursor c2\n"
        );
        assert_eq!(runs_text(&json!({"runs": [], "next_cursor": null})), "no runs\n");
    }

    #[test]
    fn a_tree_draws_runs_and_the_triggers_they_fired() {
        let run = |id: &str, target: &str, state: &str| json!({"id": id, "target": target, "state": state});
        let tree = json!({
            "root_trigger_id": "t1",
            "triggers": [
                {"chain": null, "depth": 0, "parent_run_ids": [],
                 "trigger": {"id": "t1", "source": "api", "runs": [run("r1", "api-build", "succeeded"), run("r2", "web-e2e", "succeeded")]}},
                {"chain": "both", "depth": 1, "parent_run_ids": ["r2", "r1"],
                 "trigger": {"id": "t2", "source": "chain:both", "runs": [run("r3", "legacy-basic", "running")]}},
            ]
        });
        let text = tree_text(&tree, Some("r3"));
        assert_eq!(
            text,
            "chain tree (root trigger t1):\n\
             trigger t1 (api)\n\
             ├─ api-build  succeeded  run r1\n\
             └─ web-e2e  succeeded  run r2\n   \
             └─ [chain both] trigger t2, joined with run r1\n      \
             └─ legacy-basic  running  run r3  ← this run\n"
        );
    }

    #[test]
    fn a_run_with_events() {
        let run = json!({"id": "r1", "target": "web", "provider": "codefresh", "account": "main", "state": "failed",
            "raw_status": "error", "message": "tests failed", "ref": {"tag": "v1"},
            "parameters": {"env": "qa", "token": "***", "n": 3},
            "provider_ref": {"id": "b1", "number": null, "attempt": 1, "url": "https://cf/b1"},
            "trigger_id": "t1", "rerun_of": null, "requested_by": "ci", "created_at": "2026-01-31T10:00:00Z",
            "finished_at": "2026-01-31T10:02:00Z",
            "events": [{"id": 1, "kind": "created", "state": "pending", "data": {}, "created_at": "2026-01-31T10:00:00Z"},
                       {"id": 12, "kind": "state_changed", "state": "failed", "data": {"from": "running", "detail": {"raw_status": "error", "steps": []}},
                        "created_at": "2026-01-31T10:02:00Z"}]});
        let text = run_text(&run);
        assert!(text.contains("state         failed (provider: error)\n"), "{text}");
        assert!(text.contains("parameters    env=qa n=3 token=***\n"), "{text}");
        assert!(text.contains("build         b1 https://cf/b1\n"), "{text}");
        assert!(text.contains("events:\n  1   2026-01-31T10:00:00Z  created        pending\n"), "{text}");
        assert!(text.contains("  12  2026-01-31T10:02:00Z  state_changed  failed   raw_status=error\n"), "{text}");
    }
}
