//! `cigw cancel`, `cigw rerun` and `cigw approve`: one POST each, the answer shown briefly.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::{connect, finish, s, table};
use crate::client::{ConnectArgs, segment};

/// Flags of `cigw cancel`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Run id.
    #[arg(required_unless_present = "trigger", conflicts_with = "trigger")]
    run: Option<String>,
    /// Cancel every unfinished run of this trigger instead.
    #[arg(long, value_name = "TRIGGER_ID")]
    trigger: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw cancel`.
pub(crate) async fn cancel(args: CancelArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match (&args.run, &args.trigger) {
        (_, Some(trigger)) => {
            let answer = client.post(&format!("/v1/triggers/{}/cancel", segment(trigger)), &json!({}), &[]).await;
            finish(answer, args.json, trigger_cancel_text)
        }
        (Some(run), None) => {
            let answer = client.post(&format!("/v1/runs/{}/cancel", segment(run)), &json!({}), &[]).await;
            finish(answer, args.json, |r| {
                format!("cancel requested: run {} ({}) is {}\n", s(r, "id"), s(r, "target"), s(r, "state"))
            })
        }
        (None, None) => unreachable!("clap requires a run or --trigger"),
    }
}

fn trigger_cancel_text(trigger: &Value) -> String {
    let runs = trigger.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> =
        runs.iter().map(|r| vec![s(r, "target").into(), s(r, "state").into(), s(r, "id").into()]).collect();
    format!("cancel requested for trigger {}\n{}", s(trigger, "id"), table(&["TARGET", "STATE", "RUN"], &rows))
}

/// Flags of `cigw rerun`.
#[derive(Debug, Args)]
pub(crate) struct RerunArgs {
    /// The finished run to run again.
    run: String,
    /// Rerun only the failed parts (where the provider can).
    #[arg(long)]
    failed_only: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw rerun`.
pub(crate) async fn rerun(args: RerunArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let body = json!({"failed_only": args.failed_only});
    let answer = client.post(&format!("/v1/runs/{}/rerun", segment(&args.run)), &body, &[]).await;
    finish(answer, args.json, |r| {
        format!(
            "rerun of {}: run {} ({}, {}){}\n",
            args.run,
            s(r, "id"),
            s(r, "target"),
            s(r, "state"),
            if args.failed_only { ", failed parts only" } else { "" }
        )
    })
}

/// Flags of `cigw approve`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// A blocked run.
    run: String,
    /// Deny instead of approving.
    #[arg(long)]
    deny: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw approve`.
pub(crate) async fn approve(args: ApproveArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let verb = if args.deny { "deny" } else { "approve" };
    let answer = client.post(&format!("/v1/runs/{}/{verb}", segment(&args.run)), &json!({}), &[]).await;
    finish(answer, args.json, |r| {
        let done = if args.deny { "denied" } else { "approved" };
        format!("{done}: run {} ({}) is {}\n", s(r, "id"), s(r, "target"), s(r, "state"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_cancel_text_lists_its_runs() {
        let t = json!({"id": "t1", "runs": [{"id": "r1", "target": "api", "state": "canceling"},
                                             {"id": "r2", "target": "web", "state": "canceled"}]});
        assert_eq!(
            trigger_cancel_text(&t),
            "cancel requested for trigger t1\nTARGET  STATE      RUN\napi     canceling  r1\nweb     canceled   r2\n"
        );
    }
}
