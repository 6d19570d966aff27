//! `cigw schedules`: the configured schedules with their next and last slots.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{connect, print_json, s, table};
use crate::client::ConnectArgs;

/// Flags of `cigw schedules`.
#[derive(Debug, Args)]
pub(crate) struct SchedulesArgs {
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw schedules`.
pub(crate) async fn run(args: SchedulesArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listing = match client.get("/v1/schedules", &[]).await {
        Ok(v) => v,
        Err(e) => return e.report(),
    };
    if args.json {
        print_json(&listing);
    } else {
        let schedules = listing.get("schedules").and_then(Value::as_array).cloned().unwrap_or_default();
        print!("{}", list_text(&schedules));
    }
    ExitCode::SUCCESS
}

fn or_dash(v: &Value, key: &str) -> String {
    match s(v, key) {
        "" => "-".into(),
        text => text.into(),
    }
}

fn list_text(schedules: &[Value]) -> String {
    if schedules.is_empty() {
        return "no schedules configured\n".into();
    }
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|v| {
            let targets: Vec<&str> =
                v.get("targets").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            vec![
                s(v, "name").into(),
                format!("{} ({})", s(v, "cron"), s(v, "zone")),
                targets.join(","),
                s(v, "missed").into(),
                or_dash(v, "next_slot"),
                or_dash(v, "last_slot"),
                or_dash(v, "last_trigger_id"),
            ]
        })
        .collect();
    table(&["SCHEDULE", "CRON", "TARGETS", "MISSED", "NEXT SLOT", "LAST SLOT", "LAST TRIGGER"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_shows_next_and_last_slots() {
        let fired = json!({"name": "lint", "cron": "*/2 * * * *", "zone": "UTC", "targets": ["api-lint"],
            "missed": "skip", "next_slot": "2026-06-01T10:04:00Z", "last_slot": "2026-06-01T10:02:00Z",
            "last_fired_at": "2026-06-01T10:02:00Z", "last_trigger_id": "t-1", "description": null});
        let never = json!({"name": "nightly", "cron": "30 2 * * *", "zone": "Europe/Berlin",
            "targets": ["a", "b"], "missed": "run-once", "next_slot": "2026-06-02T00:30:00Z",
            "last_slot": null, "last_fired_at": null, "last_trigger_id": null, "description": null});
        assert_eq!(
            list_text(&[fired, never]),
            "SCHEDULE  CRON                        TARGETS   MISSED    NEXT SLOT             LAST SLOT             LAST TRIGGER\n\
             lint      */2 * * * * (UTC)           api-lint  skip      2026-06-01T10:04:00Z  2026-06-01T10:02:00Z  t-1\n\
             nightly   30 2 * * * (Europe/Berlin)  a,b       run-once  2026-06-02T00:30:00Z  -                     -\n"
        );
        assert_eq!(list_text(&[]), "no schedules configured\n");
    }
}
