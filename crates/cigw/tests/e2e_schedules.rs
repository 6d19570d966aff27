//! A schedule end to end: the real gateway fires its slots through intake on the wall clock,
//! `GET /v1/schedules` and `cigw schedules` show the last slot and trigger, and a restart
//! fires no slot twice.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{ADMIN_TOKEN, Gateway};

const SCHEDULE: &str = r#"
[schedules.tick]
cron = "*/2 * * * * *"
targets = ["api-build"]
labels = { why = "e2e" }
"#;

/// Wait until the schedule's last trigger differs from `seen` and return it.
async fn next_trigger(gw: &Gateway, seen: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listing = gw.get_json("/v1/schedules").await;
        let last = listing["schedules"][0]["last_trigger_id"].as_str().map(str::to_string);
        if let Some(id) = last.filter(|id| Some(id.as_str()) != seen) {
            return id;
        }
        assert!(Instant::now() < deadline, "no new firing: {listing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_schedule_fires_through_intake_and_the_cli_shows_it() {
    let mut gw = Gateway::start_with(20.0, Duration::from_secs(10), SCHEDULE).await;
    let first = next_trigger(&gw, None).await;
    let trigger = gw.get_json(&format!("/v1/triggers/{first}")).await;
    assert_eq!(trigger["source"], "schedule", "{trigger}");
    assert_eq!(trigger["requested_by"], "schedule:tick", "{trigger}");
    assert_eq!(trigger["runs"][0]["target"], "api-build", "{trigger}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cigw"))
        .arg("schedules")
        .env("CIGW_URL", &gw.url)
        .env("CIGW_TOKEN", ADMIN_TOKEN)
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("SCHEDULE  CRON"), "{text}");
    assert!(text.contains("tick      */2 * * * * * (UTC)  api-build  skip"), "{text}");

    // After a restart the schedule goes on firing, one trigger with one run per slot.
    gw.terminate().await;
    gw.spawn().await;
    let after = next_trigger(&gw, Some(&first)).await;
    let runs = gw.all_runs().await;
    let triggers: BTreeSet<&str> = runs.iter().filter_map(|r| r["trigger_id"].as_str()).collect();
    assert!(triggers.contains(after.as_str()), "{runs:?}");
    assert_eq!(triggers.len(), runs.len(), "one run per firing");
    let listing = gw.get_json("/v1/schedules").await;
    let last_slot = listing["schedules"][0]["last_slot"].as_str().unwrap().to_string();
    let next_slot = listing["schedules"][0]["next_slot"].as_str().unwrap().to_string();
    assert!(next_slot > last_slot, "{listing}");
}
