//! `cigw notifications deliveries` (the outbox, filtered) and `cigw notifications redeliver ID`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{connect, finish, s, show_time, table, time};
use crate::client::{ClientError, ConnectArgs, segment};

/// Flags of `cigw notifications`.
#[derive(Debug, Args)]
pub(crate) struct NotificationsArgs {
    #[command(subcommand)]
    command: NotificationsCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum NotificationsCommand {
    /// List deliveries (newest first) with their attempts, last error and next attempt (scope admin).
    Deliveries(DeliveriesArgs),
    /// Send a dead-lettered (or delivered) delivery again (scope admin).
    Redeliver {
        /// The delivery id (first column of `cigw notifications deliveries`).
        #[arg(value_name = "ID")]
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DeliveriesArgs {
    /// Only this notification (`[notifications.<name>]`).
    #[arg(long)]
    notification: Option<String>,
    /// Only this status: pending, delivered or dead.
    #[arg(long)]
    status: Option<String>,
    /// Only the deliveries about this run.
    #[arg(long = "run", value_name = "RUN_ID")]
    run: Option<String>,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The `next_cursor` printed under the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// Run `cigw notifications …`.
pub(crate) async fn run(args: NotificationsArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match args.command {
        NotificationsCommand::Deliveries(d) => {
            let mut query: Vec<(&str, String)> = vec![("limit", d.limit.to_string())];
            for (key, value) in
                [("notification", &d.notification), ("status", &d.status), ("run_id", &d.run), ("cursor", &d.cursor)]
            {
                if let Some(v) = value {
                    query.push((key, v.clone()));
                }
            }
            finish(client.get("/v1/notifications/deliveries", &query).await, d.json, deliveries_text)
        }
        NotificationsCommand::Redeliver { id, json } => {
            if id.parse::<u64>().map_or(true, |n| n == 0) {
                return ClientError::Usage(format!("ID `{id}`: expected a delivery id (a positive integer)")).report();
            }
            let path = format!("/v1/notifications/deliveries/{}/redeliver", segment(&id));
            finish(client.post(&path, &json!({}), &[]).await, json, |v| {
                format!("delivery {} of {} is pending again; it is sent shortly\n", v["id"], s(v, "notification"))
            })
        }
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() { "-".into() } else { text.into() }
}

/// The short name of a CDEvents type (`dev.cdevents.pipelinerun.finished.0.3.0` → `finished`).
fn short_type(t: &str) -> &str {
    t.split('.').nth(3).unwrap_or(t)
}

fn deliveries_text(page: &Value) -> String {
    let rows = page.get("deliveries").and_then(Value::as_array).cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no deliveries\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            let attempts = match d.get("max_attempts").and_then(Value::as_u64) {
                Some(max) => format!("{}/{max}", d["attempts"]),
                None => d["attempts"].to_string(),
            };
            let last = match (d.get("last_status").and_then(Value::as_u64), s(d, "last_error")) {
                (_, e) if !e.is_empty() && s(d, "status") != "delivered" => e.to_string(),
                (Some(code), _) => format!("HTTP {code}"),
                _ => String::new(),
            };
            vec![
                d["id"].to_string(),
                s(d, "notification").into(),
                short_type(s(d, "event_type")).into(),
                s(d, "run_id").into(),
                s(d, "status").into(),
                attempts,
                show_time(time(d, "next_attempt_at")),
                or_dash(&last),
            ]
        })
        .collect();
    let mut out = table(&["ID", "NOTIFICATION", "EVENT", "RUN", "STATUS", "ATTEMPTS", "NEXT ATTEMPT", "LAST"], &rows);
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_attempts_errors_and_the_next_page() {
        let dead = json!({"id": 7, "notification": "ops", "event_type": "dev.cdevents.pipelinerun.finished.0.3.0",
            "run_id": "r1", "status": "dead", "attempts": 3, "max_attempts": 3, "next_attempt_at": null,
            "last_status": 500, "last_error": "the receiver answered HTTP 500; gave up after 3 attempts"});
        let pending = json!({"id": 8, "notification": "ops", "event_type": "dev.cdevents.pipelinerun.queued.0.3.0",
            "run_id": "r2", "status": "pending", "attempts": 0, "max_attempts": 3,
            "next_attempt_at": "2026-06-01T10:00:00Z", "last_status": null, "last_error": null});
        let delivered = json!({"id": 9, "notification": "gone", "event_type": "dev.cdevents.pipelinerun.started.0.3.0",
            "run_id": "r3", "status": "delivered", "attempts": 2, "max_attempts": null, "last_status": 204,
            "last_error": "no answer within 10s"});
        let text = deliveries_text(&json!({"deliveries": [dead, pending, delivered], "next_cursor": "7"}));
        assert_eq!(
            text,
            "ID  NOTIFICATION  EVENT     RUN  STATUS     ATTEMPTS  NEXT ATTEMPT          LAST\n\
             7   ops           finished  r1   dead       3/3       -                     the receiver answered HTTP 500; gave up after 3 attempts\n\
             8   ops           queued    r2   pending    0/3       2026-06-01T10:00:00Z  -\n\
             9   gone          started   r3   delivered  2         -                     HTTP 204\n\
             more: --cursor 7\n"
        );
        assert_eq!(deliveries_text(&json!({"deliveries": []})), "no deliveries\n");
    }
}
