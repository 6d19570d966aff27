//! Crashes under load: clients post triggers continuously while `cigw serve` (the debug binary)
//! is SIGKILLed three times at random moments and restarted on the same database.
//!
//! Invariant 1 from outside: every trigger answered 202 has all its runs after the restarts and
//! each one ends `succeeded` (at least once). Duplicates are counted from the simulators' build
//! counter (target 0); a duplicate is acceptable only when its run carries a
//! `possible_duplicate` event.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Gateway};

/// Kills of the process under load.
const KILLS: usize = 3;
/// Concurrent clients posting triggers.
const CLIENTS: usize = 3;
/// Every accepted run ends within this after the last restart.
const SETTLE: Duration = Duration::from_secs(120);

/// What one client saw of one trigger it posted.
#[derive(Debug)]
struct Posted {
    body: Value,
    /// `None`: no answer (the process died or was down); else status and body.
    answer: Option<(u16, Value)>,
}

/// Post triggers until `stop`, each to a random non-empty set of targets (at most one Codeship
/// target, whose builds are counted by branch), on a branch of its own.
async fn load_client(url: String, client_no: usize, seed: u64, stop: Arc<AtomicBool>) -> Vec<Posted> {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
    let mut posted = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut targets = Vec::new();
        if rng.random_bool(0.5) {
            targets.push("api-build");
        }
        if rng.random_bool(0.5) {
            targets.push("web-e2e");
        }
        if targets.is_empty() || rng.random_bool(0.3) {
            targets.push(if rng.random_bool(0.5) { "legacy-basic" } else { "legacy-pro" });
        }
        let body = json!({"targets": targets, "ref": {"branch": format!("load-{client_no}-{n:04}")}});
        let answer = match http.post(format!("{url}/v1/triggers")).bearer_auth(ADMIN_TOKEN).json(&body).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                Some((status, r.json().await.unwrap_or(Value::Null)))
            }
            Err(_) => None,
        };
        let down = answer.is_none();
        posted.push(Posted { body, answer });
        // About five triggers a second per client; back off briefly while the process is down.
        let pause = if down { 100 } else { rng.random_range(100..300) };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    posted
}

/// The key the simulators count a run's builds under.
fn build_key(run: &Value) -> String {
    let target = run["target"].as_str().unwrap_or_default();
    if target.starts_with("legacy-") {
        format!("heads/{}", run["ref"]["branch"].as_str().unwrap_or_default())
    } else {
        // api-build declares `cigw_run_id`; Codefresh counts by `reqId`: both are the run id.
        run["id"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sigkills_under_load_lose_no_accepted_trigger_and_report_every_duplicate() {
    let seed: u64 = std::env::var("CIGW_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash seed {seed} (set CIGW_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gw = Gateway::start(20.0, Duration::from_secs(2)).await;
    let harness = gw.providers.harness.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(load_client(gw.url.clone(), c, seed.wrapping_add(c as u64), stop.clone())))
        .collect();
    let started = Instant::now();
    let mut kill_times = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..6000))).await;
        kill_times.push(started.elapsed());
        gw.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        gw.spawn().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut posted = Vec::new();
    for c in clients {
        posted.extend(c.await.expect("client"));
    }
    let load_for = started.elapsed();

    // Every run of every 202.
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut refused = Vec::new();
    let mut unanswered = 0;
    for p in &posted {
        match &p.answer {
            Some((202, body)) => {
                let runs = body["runs"].as_array().expect("runs");
                assert_eq!(runs.len(), p.body["targets"].as_array().expect("targets").len(), "{body}");
                for r in runs {
                    accepted.push((r["id"].as_str().expect("id").to_string(), r["target"].to_string()));
                }
            }
            Some((status, body)) => refused.push(format!("{status}: {body} for {}", p.body)),
            None => unanswered += 1,
        }
    }
    // Only 202s and no answer at all (the process was down) are expected.
    assert!(refused.is_empty(), "triggers refused under load: {refused:?}");
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let runs = gw.wait_all_terminal(&ids, SETTLE).await;
    let settled_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut problems = Vec::new();
    for (id, target) in &accepted {
        let run = &runs[id];
        if run["state"] != "succeeded" {
            problems.push(format!("accepted run {id} ({target}) ended {}: {}", run["state"], run["message"]));
        }
    }
    // Duplicates, over every run the database holds (runs of triggers whose answer was lost in a
    // kill may exist too, and must not duplicate either).
    let all = gw.runs_by_id().await;
    let mut per_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for run in all.values() {
        per_key.entry(build_key(run)).or_default().push(run);
    }
    let builds = harness.builds();
    let mut duplicates = 0;
    let mut reported = 0;
    for (key, runs_of_key) in &per_key {
        assert_eq!(runs_of_key.len(), 1, "one run per build key: {key}");
        let run = runs_of_key[0];
        let id = run["id"].as_str().unwrap_or_default();
        let n = builds.count(key);
        if n > 1 {
            duplicates += n - 1;
            let events = gw.count_events(id, "possible_duplicate").await;
            reported += events.min(n - 1);
            if events < n - 1 {
                problems.push(format!("run {id} ({}) has {n} builds and {events} possible_duplicate event(s)", key));
            }
        }
    }
    // How many runs a kill caught between their claim and the end of their dispatch.
    let reclaimed = all.values().filter(|r| r["dispatch_attempts"].as_u64().unwrap_or(0) > 1).count();
    let unknown_builds: Vec<_> = builds.all().into_keys().filter(|k| !per_key.contains_key(k)).collect();
    let report = format!(
        "seed {seed}: {} triggers posted in {load_for:?} ({unanswered} unanswered while down), {} accepted runs, \
         {} runs in the database, kills at {kill_times:?}; all terminal after {settled_in:?}; {} provider builds, \
         {duplicates} duplicate(s), {reported} reported; {reclaimed} run(s) claimed more than once",
        posted.len(),
        accepted.len(),
        all.len(),
        builds.total()
    );
    eprintln!("{report}");
    assert!(unknown_builds.is_empty(), "{report}\nbuilds of no run: {unknown_builds:?}");
    assert!(problems.is_empty(), "{report}\n{}", problems.join("\n"));
    assert!(accepted.len() >= 50, "{report}\nthe load was too light to mean anything");
}
