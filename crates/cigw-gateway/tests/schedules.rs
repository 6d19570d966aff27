//! Schedules fired on a controlled clock: each slot once (also over a restart and with two
//! schedulers on one store), DST days in Europe/Berlin, both missed-slot policies, and bad
//! schedules refused with their key paths.

mod api_support;

use api_support::{App, catalog};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cigw_core::config::{Problems, Settings};
use cigw_core::schedule::Schedule;
use cigw_gateway::schedules::{Firing, Scheduler};
use serde_json::{Value, json};

fn schedule(name: &str, table: Value) -> Schedule {
    let mut problems = Problems::default();
    let parsed = Schedule::parse(name, &table, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    parsed.unwrap()
}

async fn app_with(schedules: Vec<Schedule>) -> App {
    App::with_settings(move |s: &mut Settings| {
        s.schedules = schedules.into_iter().map(|s| (s.name.clone(), s)).collect();
    })
    .await
}

fn every_two_minutes(missed: &str) -> Schedule {
    schedule(
        "lint",
        json!({
            "cron": "*/2 * * * *",
            "targets": ["web-e2e"],
            "ref": {"branch": "main"},
            "parameters": {"env": "staging", "retries": 2},
            "labels": {"why": "nightly"},
            "missed": missed,
        }),
    )
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap()
}

fn fired(firings: &[(String, Firing)]) -> Vec<(String, DateTime<Utc>)> {
    firings
        .iter()
        .filter_map(|(name, f)| match f {
            Firing::Fired { slot, .. } => Some((name.clone(), *slot)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_slot_fires_once_through_intake() {
    let app = app_with(vec![every_two_minutes("skip")]).await;
    let mut scheduler = Scheduler::start(app.state.clone(), at(10, 0, 30)).await.unwrap();
    assert!(scheduler.tick(at(10, 1, 59)).await.is_empty(), "no slot yet");
    assert_eq!(scheduler.next_look(at(10, 1, 0)), at(10, 1, 30), "never sleeps longer than the cap");
    assert_eq!(scheduler.next_look(at(10, 1, 50)), at(10, 2, 0), "wakes at the slot");
    let firings = scheduler.tick(at(10, 2, 1)).await;
    assert_eq!(fired(&firings), [("lint".to_string(), at(10, 2, 0))]);
    assert!(scheduler.tick(at(10, 2, 30)).await.is_empty(), "a slot fires once");

    let Firing::Fired { trigger_id, .. } = &firings[0].1 else { unreachable!() };
    let trigger = app.store().get_trigger(trigger_id).await.unwrap();
    assert_eq!(trigger.source, "schedule");
    assert_eq!(trigger.requested_by, "schedule:lint");
    assert_eq!(trigger.labels, json!({"why": "nightly"}));
    assert_eq!(trigger.runs.len(), 1);
    let run = &trigger.runs[0];
    assert_eq!(run.target, "web-e2e");
    assert_eq!(run.git_ref.branch.as_deref(), Some("main"));
    assert_eq!(app.run_count().await, 1);

    assert_eq!(fired(&scheduler.tick(at(10, 4, 0)).await), [("lint".to_string(), at(10, 4, 0))]);
    assert_eq!(app.run_count().await, 2);
}

#[tokio::test]
async fn a_restart_over_a_slot_fires_it_once() {
    let app = app_with(vec![every_two_minutes("run-once")]).await;
    // The old process started before the slot; it fires it and "crashes".
    let mut before = Scheduler::start(app.state.clone(), at(10, 1, 0)).await.unwrap();
    let mut stale = Scheduler::start(app.state.clone(), at(10, 1, 0)).await.unwrap();
    let first = before.tick(at(10, 2, 5)).await;
    assert_eq!(fired(&first), [("lint".to_string(), at(10, 2, 0))]);
    // The new process starts from the stored firing: nothing is due again.
    let mut after = Scheduler::start(app.state.clone(), at(10, 2, 10)).await.unwrap();
    assert!(after.tick(at(10, 2, 20)).await.is_empty());
    // A scheduler that had not seen the firing finds it stored: no second trigger.
    let again = stale.tick(at(10, 2, 30)).await;
    let (Firing::Fired { trigger_id: a, .. }, Firing::AlreadyFired { trigger_id: b, .. }) = (&first[0].1, &again[0].1)
    else {
        panic!("{first:?} {again:?}")
    };
    assert_eq!(a, b);
    assert_eq!(app.run_count().await, 1);
    assert_eq!(fired(&after.tick(at(10, 4, 1)).await), [("lint".to_string(), at(10, 4, 0))]);
}

#[tokio::test]
async fn two_schedulers_on_one_store_fire_each_slot_once() {
    let app = app_with(vec![every_two_minutes("skip")]).await;
    let mut a = Scheduler::start(app.state.clone(), at(10, 0, 0)).await.unwrap();
    let mut b = Scheduler::start(app.state.clone(), at(10, 0, 0)).await.unwrap();
    for minute in (2..=20).step_by(2) {
        let now = at(10, minute, 1);
        let (fa, fb) = tokio::join!(a.tick(now), b.tick(now));
        assert_eq!(fired(&fa).len() + fired(&fb).len(), 1, "{fa:?} {fb:?}");
    }
    assert_eq!(app.run_count().await, 10);
}

#[tokio::test]
async fn missed_slots_are_skipped_by_default() {
    let app = app_with(vec![every_two_minutes("skip")]).await;
    let mut scheduler = Scheduler::start(app.state.clone(), at(10, 0, 0)).await.unwrap();
    assert_eq!(fired(&scheduler.tick(at(10, 2, 0)).await).len(), 1);
    // Down from 10:03 to 10:31:30: fourteen slots passed, the latest more than a minute ago.
    let mut restarted = Scheduler::start(app.state.clone(), at(10, 31, 30)).await.unwrap();
    let firings = restarted.tick(at(10, 31, 30)).await;
    assert_eq!(firings, [("lint".to_string(), Firing::Skipped { slot: at(10, 30, 0) })]);
    assert_eq!(app.run_count().await, 1);
    assert_eq!(fired(&restarted.tick(at(10, 32, 2)).await), [("lint".to_string(), at(10, 32, 0))]);
    // Back within a minute of a slot after missing others: that slot still fires.
    let mut quick = Scheduler::start(app.state.clone(), at(10, 40, 30)).await.unwrap();
    assert_eq!(fired(&quick.tick(at(10, 40, 30)).await), [("lint".to_string(), at(10, 40, 0))]);
    assert_eq!(app.run_count().await, 3);
}

#[tokio::test]
async fn run_once_fires_one_catch_up_for_all_missed_slots() {
    let app = app_with(vec![every_two_minutes("run-once")]).await;
    let mut scheduler = Scheduler::start(app.state.clone(), at(10, 0, 0)).await.unwrap();
    assert_eq!(fired(&scheduler.tick(at(10, 2, 0)).await).len(), 1);
    let mut restarted = Scheduler::start(app.state.clone(), at(11, 31, 0)).await.unwrap();
    assert_eq!(fired(&restarted.tick(at(11, 31, 0)).await), [("lint".to_string(), at(11, 30, 0))]);
    assert!(restarted.tick(at(11, 31, 30)).await.is_empty());
    // Restarting again before the next slot does not catch up twice.
    let mut again = Scheduler::start(app.state.clone(), at(11, 31, 40)).await.unwrap();
    assert!(again.tick(at(11, 31, 50)).await.is_empty());
    assert_eq!(app.run_count().await, 2);
}

/// Tick every five minutes over a day and return the slots fired.
async fn fire_over_a_day(app: &App, from: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut scheduler = Scheduler::start(app.state.clone(), from).await.unwrap();
    let mut slots = Vec::new();
    let mut now = from;
    while now < from + Duration::days(1) {
        now += Duration::minutes(5);
        slots.extend(fired(&scheduler.tick(now).await).into_iter().map(|(_, slot)| slot));
    }
    slots
}

#[tokio::test]
async fn dst_days_in_berlin_fire_each_slot_once() {
    let nightly = schedule(
        "nightly",
        json!({"cron": "30 2 * * *", "zone": "Europe/Berlin", "targets": ["circle-build"], "missed": "skip"}),
    );
    let app = app_with(vec![nightly]).await;
    // Spring forward on 2026-03-29: 02:30 does not exist; it fires at 03:00 CEST (01:00 UTC).
    let spring = fire_over_a_day(&app, Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap()).await;
    assert_eq!(spring, [Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()]);
    // Fall back on 2026-10-25: 02:30 happens twice; it fires at the first (00:30 UTC) only.
    let autumn = fire_over_a_day(&app, Utc.with_ymd_and_hms(2026, 10, 24, 22, 0, 0).unwrap()).await;
    assert_eq!(autumn, [Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap()]);
    assert_eq!(app.run_count().await, 2);
}

#[test]
fn schedules_with_bad_targets_refs_or_parameters_are_refused_with_key_paths() {
    let harness = cigw_sim::harness::Harness::new();
    let (catalog, _) = catalog(&harness);
    let bad = schedule(
        "broken",
        json!({
            "cron": "0 3 * * *",
            "targets": ["web-e2e", "nope"],
            "ref": {"branch": "main", "tag": "v1"},
            "parameters": {"retries": "many", "colour": "red"},
        }),
    );
    let mut problems = Problems::default();
    bad.check(&catalog, &mut problems);
    let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
    for key in [
        "schedules.broken.targets[1]: unknown target `nope`",
        "schedules.broken.ref: ",
        "schedules.broken.parameters.retries: target `web-e2e`",
        "schedules.broken.parameters.colour: target `web-e2e`",
    ] {
        assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
    }
    let mut problems = Problems::default();
    every_two_minutes("skip").check(&catalog, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
}

#[tokio::test]
async fn the_api_lists_schedules_with_their_slots() {
    let app = app_with(vec![every_two_minutes("skip")]).await;
    let reader = app.token("reader", &["read"]).await;
    let before = app.get("/v1/schedules", &reader).await;
    assert_eq!(before.status, axum::http::StatusCode::OK, "{}", before.text);
    let view = &before.body["schedules"][0];
    assert_eq!(view["name"], "lint");
    assert_eq!(view["cron"], "*/2 * * * *");
    assert_eq!(view["zone"], "UTC");
    assert_eq!(view["targets"], json!(["web-e2e"]));
    assert_eq!(view["missed"], "skip");
    assert_eq!(view["last_slot"], Value::Null);
    let next: DateTime<Utc> = serde_json::from_value(view["next_slot"].clone()).unwrap();
    assert!(next > Utc::now() && next <= Utc::now() + Duration::minutes(2), "{next}");

    let mut scheduler = Scheduler::start(app.state.clone(), at(10, 0, 0)).await.unwrap();
    let firings = scheduler.tick(at(10, 2, 0)).await;
    let Firing::Fired { trigger_id, .. } = &firings[0].1 else { panic!("{firings:?}") };
    let after = app.get("/v1/schedules", &reader).await;
    let view = &after.body["schedules"][0];
    assert_eq!(view["last_slot"], "2026-06-01T10:02:00Z");
    assert_eq!(view["last_trigger_id"], trigger_id.as_str());

    let unauthenticated = app.call(axum::http::Method::GET, "/v1/schedules", None, None).await;
    assert_eq!(unauthenticated.status, axum::http::StatusCode::UNAUTHORIZED);
}

/// Two gateways (own store handles, own schedulers) on one fresh PostgreSQL database
/// (`CIGW_TEST_DATABASE_URL`, by default `postgres://postgres@127.0.0.1:5432/test`; never skipped).
#[tokio::test]
async fn two_gateways_on_postgres_fire_each_slot_once() {
    use sqlx::Connection;
    let admin =
        std::env::var("CIGW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL at CIGW_TEST_DATABASE_URL");
    let name = format!("cigw_sched_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let db = cigw_core::config::DatabaseSettings { url: format!("{base}/{name}"), ..Default::default() };
    let harness = cigw_sim::harness::Harness::new();
    let mut schedulers = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = cigw_store::open(&db).await.unwrap();
        store.migrate().await.unwrap();
        let settings =
            Settings { schedules: [("lint".to_string(), every_two_minutes("skip"))].into(), ..Default::default() };
        let state = cigw_gateway::state::AppState::new(store.clone(), catalog(&harness).0, settings);
        schedulers.push(Scheduler::start(state, at(10, 0, 0)).await.unwrap());
        stores.push(store);
    }
    let [mut a, mut b] = <[Scheduler; 2]>::try_from(schedulers).unwrap();
    for minute in (2..=12).step_by(2) {
        let now = at(10, minute, 1);
        let (fa, fb) = tokio::join!(a.tick(now), b.tick(now));
        assert_eq!(fired(&fa).len() + fired(&fb).len(), 1, "{fa:?} {fb:?}");
        assert_eq!(fa.len() + fb.len(), 2, "the other one found the slot fired: {fa:?} {fb:?}");
    }
    let filter = cigw_store::RunFilter { limit: 100, ..Default::default() };
    assert_eq!(stores[0].list_runs(&filter, None).await.unwrap().runs.len(), 6);
    drop((a, b, stores));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok();
}
