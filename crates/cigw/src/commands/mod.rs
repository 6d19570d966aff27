//! The client subcommands: each talks to a gateway over the HTTP API through [`crate::client`].

pub(crate) mod actions;
pub(crate) mod hooks;
pub(crate) mod notifications;
pub(crate) mod progress;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod targets;
pub(crate) mod token;
pub(crate) mod trigger;
pub(crate) mod watch;

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::client::{Client, ClientError, ConnectArgs};

/// Build the client, or print why not and give the exit code.
pub(crate) fn connect(args: &ConnectArgs) -> Result<Client, ExitCode> {
    Client::new(args).map_err(|e| e.report())
}

/// Print pretty JSON on stdout.
pub(crate) fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Finish a command: print its JSON or its text, or report its error.
pub(crate) fn finish(result: Result<Value, ClientError>, json: bool, text: impl FnOnce(&Value) -> String) -> ExitCode {
    match result {
        Ok(v) => {
            if json {
                print_json(&v);
            } else {
                print!("{}", text(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => e.report(),
    }
}

/// A string field of a JSON object, or `""`.
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A time field parsed, if present.
pub(crate) fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key).and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// A time for a table: RFC 3339 in UTC to the second, or `-`.
pub(crate) fn show_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| "-".into())
}

/// A run's ref as `branch main @ 9fceb02` / `tag v1` / `default branch`.
pub(crate) fn show_ref(r: &Value) -> String {
    let mut out = if let Some(b) = r.get("branch").and_then(Value::as_str) {
        format!("branch {b}")
    } else if let Some(t) = r.get("tag").and_then(Value::as_str) {
        format!("tag {t}")
    } else {
        "default branch".to_string()
    };
    if let Some(sha) = r.get("sha").and_then(Value::as_str) {
        out.push_str(&format!(" @ {sha}"));
    }
    out
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Parse `key=value` pairs given with a repeatable flag; `flag` names it in errors.
pub(crate) fn key_values(pairs: &[String], flag: &str) -> Result<serde_json::Map<String, Value>, ClientError> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(ClientError::Usage(format!("{flag} `{pair}`: expected key=value")));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(ClientError::Usage(format!("{flag} `{pair}`: the key is empty")));
        }
        if out.insert(k.to_string(), Value::String(v.to_string())).is_some() {
            return Err(ClientError::Usage(format!("{flag} `{k}` is given twice")));
        }
    }
    Ok(out)
}

/// Event data keys worth a person's attention; the rest (full provider snapshots) stays in `--json`.
const EVENT_KEYS: [&str; 8] = ["message", "reason", "error", "operation", "by", "raw_status", "outcome", "attempt"];

/// The interesting part of an event's `data`, as `key=value` pairs on one short line.
pub(crate) fn event_summary(data: &Value) -> String {
    let mut parts = Vec::new();
    for source in [Some(data), data.get("detail")].into_iter().flatten() {
        for key in EVENT_KEYS {
            if let Some(v) = source.get(key).filter(|v| !v.is_null()) {
                let shown = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                parts.push(format!("{key}={shown}"));
            }
        }
    }
    let line = parts.join(" ");
    if line.chars().count() > 160 { format!("{}…", line.chars().take(159).collect::<String>()) } else { line }
}

/// A duration flag (`90s`, `5m`, `1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("expected a duration such as 30s, 5m or 1h ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["é".into(), "".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\né\n");
    }

    #[test]
    fn key_value_flags() {
        let m = key_values(&["env=staging".into(), "n=3".into(), "q=a=b".into()], "-p").unwrap();
        assert_eq!(Value::Object(m), json!({"env": "staging", "n": "3", "q": "a=b"}));
        let e = key_values(&["env".into()], "-p").unwrap_err().to_string();
        assert!(e.contains("-p `env`: expected key=value"), "{e}");
        let e = key_values(&["a=1".into(), "a=2".into()], "--label").unwrap_err().to_string();
        assert!(e.contains("--label `a` is given twice"), "{e}");
        assert!(key_values(&["=1".into()], "-p").is_err());
    }

    #[test]
    fn event_summaries_keep_what_matters() {
        let data = json!({"from": "queued", "to": "failed", "detail": {"raw_status": "test failed", "steps": [1, 2],
            "outcome": "started"}});
        assert_eq!(event_summary(&data), "raw_status=test failed outcome=started");
        assert_eq!(event_summary(&json!({"by": "ci-bot"})), "by=ci-bot");
        assert_eq!(
            event_summary(&json!({"operation": "cancel", "message": "HTTP 500"})),
            "message=HTTP 500 operation=cancel"
        );
        assert_eq!(event_summary(&json!({"git_ref": {"branch": "main"}})), "");
        let long = event_summary(&json!({"message": "x".repeat(500)}));
        assert_eq!(long.chars().count(), 160);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn refs_and_times() {
        assert_eq!(show_ref(&json!({"branch": "main", "sha": "9fceb02"})), "branch main @ 9fceb02");
        assert_eq!(show_ref(&json!({"tag": "v1"})), "tag v1");
        assert_eq!(show_ref(&json!({})), "default branch");
        let v = json!({"t": "2026-01-31T10:00:00.123Z"});
        assert_eq!(show_time(time(&v, "t")), "2026-01-31T10:00:00Z");
        assert_eq!(show_time(time(&v, "missing")), "-");
        assert!(parse_duration("1h30m").is_ok());
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
    }
}
