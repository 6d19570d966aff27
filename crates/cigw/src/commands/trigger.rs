//! `cigw trigger`: start runs, and with `--wait` follow them to the end with a live display.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde_json::{Value, json};

use super::progress::{self, Display, RunRow};
use super::{connect, key_values, print_json, s, table};
use crate::client::{Client, ClientError, ConnectArgs, EXIT_USAGE};

/// Flags of `cigw trigger`.
#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// Target names (see `cigw targets`).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Build this branch (default: each target's default branch).
    #[arg(long, conflicts_with = "tag")]
    branch: Option<String>,
    /// Build this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Pin this commit (7–40 hex digits).
    #[arg(long)]
    sha: Option<String>,
    /// A parameter, sent as a string; the gateway converts it to the declared type.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A label stored with the trigger.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Makes retries safe: the same key and body give back the first trigger.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the runs until they finish; the exit code tells how they ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 3), e.g. 30m.
    #[arg(long, requires = "wait", value_parser = super::parse_duration)]
    timeout: Option<Duration>,
    /// With --wait: how often to read the runs.
    #[arg(long, requires = "wait", value_parser = super::parse_duration, default_value = "500ms", hide = true)]
    poll_interval: Duration,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw trigger`.
pub(crate) async fn run(args: TriggerArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let body = match request_body(&args) {
        Ok(b) => b,
        Err(e) => return e.report(),
    };
    let headers: Vec<(&str, String)> = args.idempotency_key.iter().map(|k| ("Idempotency-Key", k.clone())).collect();
    let accepted = match client.post("/v1/triggers", &body, &headers).await {
        Ok(v) => v,
        Err(e) => {
            eprint!("{e}");
            explain_intake_error(&client, &e, &args.targets).await;
            return ExitCode::from(e.exit_code());
        }
    };
    let trigger_id = s(&accepted, "trigger_id").to_string();
    let rows: Vec<RunRow> =
        accepted.get("runs").and_then(Value::as_array).into_iter().flatten().map(RunRow::from_json).collect();
    if !args.wait {
        if args.json {
            print_json(&accepted);
        } else {
            print!("{}", accepted_text(&trigger_id, &rows));
        }
        return ExitCode::SUCCESS;
    }
    let mut display = if args.json {
        Display::Quiet
    } else if std::io::stdout().is_terminal() {
        println!("trigger {trigger_id}");
        Display::live(&rows)
    } else {
        println!("trigger {trigger_id}");
        Display::plain()
    };
    let outcome = follow(&client, &trigger_id, rows, &mut display, args.timeout, args.poll_interval).await;
    display.stop();
    match outcome {
        Ok(Followed { rows, runs, timed_out }) => {
            let code = progress::exit_code(&rows, timed_out);
            if args.json {
                print_json(&json!({"trigger_id": trigger_id, "runs": runs, "timed_out": timed_out}));
            } else {
                println!();
                print!("{}", progress::summary(&rows, Utc::now()));
                if timed_out && code == 3 {
                    let waiting: Vec<&str> =
                        rows.iter().filter(|r| !r.is_terminal()).map(|r| r.target.as_str()).collect();
                    println!("timed out; still unfinished: {}", waiting.join(", "));
                }
            }
            ExitCode::from(code)
        }
        Err(e) => e.report(),
    }
}

/// The JSON body of `POST /v1/triggers`.
fn request_body(args: &TriggerArgs) -> Result<Value, ClientError> {
    let mut body = json!({"targets": args.targets});
    let mut git_ref = serde_json::Map::new();
    if let Some(b) = &args.branch {
        git_ref.insert("branch".into(), json!(b));
    }
    if let Some(t) = &args.tag {
        git_ref.insert("tag".into(), json!(t));
    }
    if let Some(sha) = &args.sha {
        git_ref.insert("sha".into(), json!(sha));
    }
    if !git_ref.is_empty() {
        body["ref"] = Value::Object(git_ref);
    }
    let params = key_values(&args.params, "-p")?;
    if !params.is_empty() {
        body["parameters"] = Value::Object(params);
    }
    let labels = key_values(&args.labels, "--label")?;
    if !labels.is_empty() {
        body["labels"] = Value::Object(labels);
    }
    Ok(body)
}

fn accepted_text(trigger_id: &str, rows: &[RunRow]) -> String {
    let body: Vec<Vec<String>> =
        rows.iter().map(|r| vec![r.target.clone(), r.provider.clone(), r.state.clone(), r.id.clone()]).collect();
    format!(
        "trigger {trigger_id}: {} run{}\n{}follow with: cigw runs --trigger {trigger_id}\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        table(&["TARGET", "PROVIDER", "STATE", "RUN"], &body)
    )
}

/// After a parameter problem, show what the named targets declare (the API names the bad
/// parameter; a person also wants to see the good ones with their types).
async fn explain_intake_error(client: &Client, e: &ClientError, targets: &[String]) {
    let parameter_problem = match e {
        ClientError::Api { code, details, .. } => {
            code == "invalid_parameters" || details.iter().any(|d| d.field.contains("parameters"))
        }
        _ => false,
    };
    if !parameter_problem {
        return;
    }
    let Ok(listing) = client.get("/v1/targets", &[]).await else { return };
    let known = listing.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
    for name in targets {
        if let Some(t) = known.iter().find(|t| s(t, "name") == name) {
            eprint!("{}", super::targets::parameters_text(t));
        }
    }
}

/// How a wait ended.
struct Followed {
    rows: Vec<RunRow>,
    /// The last full run objects, for `--json`.
    runs: Vec<Value>,
    timed_out: bool,
}

/// Consecutive failed reads tolerated before giving up (with no `--timeout` to end the wait).
const MAX_READ_FAILURES: u32 = 30;

/// Poll the trigger's runs until all of ours finish or the timeout passes.
async fn follow(
    client: &Client,
    trigger_id: &str,
    mut rows: Vec<RunRow>,
    display: &mut Display,
    timeout: Option<Duration>,
    interval: Duration,
) -> Result<Followed, ClientError> {
    let started = Instant::now();
    let mut runs: Vec<Value> = Vec::new();
    let mut failures = 0;
    display.update(&rows, Utc::now());
    loop {
        match client.get("/v1/runs", &[("trigger_id", trigger_id.to_string()), ("limit", "1000".into())]).await {
            Ok(page) => {
                failures = 0;
                let listed = page.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
                // Reruns made meanwhile belong to the trigger too; we follow the runs we started.
                for row in rows.iter_mut() {
                    if let Some(v) = listed.iter().find(|v| s(v, "id") == row.id) {
                        *row = RunRow::from_json(v);
                    }
                }
                runs = rows.iter().filter_map(|r| listed.iter().find(|v| s(v, "id") == r.id).cloned()).collect();
                display.update(&rows, Utc::now());
            }
            Err(e) if e.exit_code() == EXIT_USAGE => {
                let hint = if e.code() == Some("missing_scope") { " (--wait needs the `read` scope)" } else { "" };
                return Err(ClientError::Usage(format!("cannot follow the runs{hint}: {}", e.to_string().trim())));
            }
            Err(e) => {
                failures += 1;
                display.warn(&format!("reading the runs failed ({failures}): {}", e.to_string().trim()));
                if failures >= MAX_READ_FAILURES && timeout.is_none() {
                    return Err(e);
                }
            }
        }
        if rows.iter().all(RunRow::is_terminal) {
            return Ok(Followed { rows, runs, timed_out: false });
        }
        let mut pause = interval;
        if let Some(t) = timeout {
            let left = t.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(Followed { rows, runs, timed_out: true });
            }
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TriggerArgs,
    }

    fn parse(argv: &[&str]) -> Result<TriggerArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("cigw").chain(argv.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn the_body_has_ref_parameters_and_labels_as_strings() {
        let a = parse(&[
            "api",
            "web",
            "--branch",
            "main",
            "--sha",
            "9fceb02",
            "-p",
            "n=3",
            "--param",
            "env=qa",
            "--label",
            "ticket=QA-1",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(
            request_body(&a).unwrap(),
            json!({"targets": ["api", "web"], "ref": {"branch": "main", "sha": "9fceb02"},
                   "parameters": {"n": "3", "env": "qa"}, "labels": {"ticket": "QA-1"}})
        );
        let a = parse(&["api", "--token", "t"]).unwrap();
        assert_eq!(request_body(&a).unwrap(), json!({"targets": ["api"]}));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["api", "--branch", "a", "--tag", "b"]).is_err());
        assert!(parse(&["api", "--timeout", "5m"]).is_err(), "--timeout needs --wait");
        assert!(parse(&["api", "--wait", "--timeout", "soon"]).is_err());
        assert!(parse(&[]).is_err(), "a target is required");
        let a = parse(&["api", "-p", "novalue"]).unwrap();
        assert_eq!(request_body(&a).unwrap_err().exit_code(), EXIT_USAGE);
    }

    #[test]
    fn the_accepted_text_names_the_trigger_and_runs() {
        let rows =
            vec![RunRow::from_json(&json!({"id": "r1", "target": "api", "provider": "circleci", "state": "pending"}))];
        let text = accepted_text("t1", &rows);
        assert!(text.starts_with("trigger t1: 1 run\nTARGET"), "{text}");
        assert!(text.contains("api     circleci  pending  r1"), "{text}");
        assert!(text.ends_with("follow with: cigw runs --trigger t1\n"), "{text}");
    }
}
