//! CircleCI callbacks against the CircleCI simulator through the real adapter: what a callback
//! costs in provider reads (one per burst, one more when it came during a read), what it may
//! change (nothing by itself: the read decides), and the safety net when it never comes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cigw_sim::circleci::{sign_v1, workflow_completed};
use cigw_sim::sandbox::{CIRCLECI_WEBHOOK_SECRET, SandboxProviders};
use cigw_sim::{Fault, ScriptedFault};
use http::Method;
use serde_json::{Value, json};

mod sandbox_support;
use sandbox_support::{Served, get_json, post_json, serve_sandbox};

const TERMINAL: [&str; 5] = ["succeeded", "failed", "canceled", "skipped", "error"];

/// The sandbox configuration (its CircleCI account has a webhook secret, so its runs are paced
/// for callbacks) served against the simulators, with the given `[timings]`.
struct Gw {
    base: String,
    http: reqwest::Client,
    admin: String,
    providers: SandboxProviders,
    /// Dropped with the test's `Gw`, which stops the gateway.
    _served: Served,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn start(speed: f64, run_for: Duration, timings: &[(&str, &str)]) -> Gw {
        cigw_core::telemetry::init_for_tests();
        let providers = SandboxProviders::start(speed, run_for).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let admin = cigw_gateway::auth::generate_token();
        let mut overrides = providers.base_url_overrides();
        overrides.extend([
            ("database.url".to_string(), format!("sqlite://{}", dir.path().join("callbacks.db").display())),
            ("auth.admin_token".to_string(), admin.clone()),
        ]);
        overrides.extend(timings.iter().map(|(k, v)| (format!("timings.{k}"), v.to_string())));
        let served = serve_sandbox(listener, &overrides).await;
        Gw { base, http: reqwest::Client::new(), admin, providers, _served: served, _dir: dir }
    }

    /// Trigger `api-build` on `branch`; returns the run id once it is dispatched, with its pipeline id.
    async fn dispatched(&self, branch: &str) -> (String, String) {
        let body = json!({"targets": ["api-build"], "ref": {"branch": branch}});
        let accepted = post_json(&self.http, &format!("{}/v1/triggers", self.base), &self.admin, &body).await;
        let run = accepted["runs"][0]["id"].as_str().expect("a run").to_string();
        for _ in 0..200 {
            if let Some(pipeline) = self.run(&run).await["provider_ref"]["id"].as_str() {
                return (run, pipeline.to_string());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {run} was never dispatched");
    }

    /// A run of a long build, dispatched 2 s ago and not read yet: with `poll_initial` = 1 s its
    /// first poll is 8 s after dispatch, and a read now schedules the next one about 16 s later,
    /// so every read the test sees within a few seconds is one a callback asked for.
    async fn older_than_its_next_gap(&self, branch: &str) -> (String, String) {
        let (run, pipeline) = self.dispatched(branch).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(self.reads(&pipeline).is_empty());
        (run, pipeline)
    }

    async fn run(&self, id: &str) -> Value {
        get_json(&self.http, &format!("{}/v1/runs/{id}", self.base), &self.admin).await
    }

    async fn finished(&self, id: &str, within: Duration) -> Value {
        let end = tokio::time::Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if TERMINAL.contains(&run["state"].as_str().unwrap_or("")) {
                return run;
            }
            assert!(tokio::time::Instant::now() < end, "not finished after {within:?}: {run:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When the gateway read the pipeline's status (each read lists its workflows once).
    fn reads(&self, pipeline: &str) -> Vec<DateTime<Utc>> {
        let path = format!("/pipeline/{pipeline}/workflow");
        let requests = self.providers.harness.recorder().requests();
        requests.iter().filter(|r| r.method == Method::GET && r.path.ends_with(&path)).map(|r| r.received_at).collect()
    }

    /// The reads once there are `n` of them, waiting up to `within`.
    async fn reads_reach(&self, pipeline: &str, n: usize, within: Duration) -> Vec<DateTime<Utc>> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let reads = self.reads(pipeline);
            if reads.len() >= n || tokio::time::Instant::now() >= end {
                return reads;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deliver a `workflow-completed` event about `pipeline` claiming `status`, signed with
    /// `secret` (unsigned when `None`); returns the HTTP status.
    async fn callback(&self, event_id: &str, pipeline: &str, status: &str, secret: Option<&str>) -> u16 {
        let body = workflow_completed(event_id, pipeline, &format!("w-{event_id}"), status);
        let mut request = self
            .http
            .post(format!("{}/callbacks/circleci/sandbox", self.base))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(secret) = secret {
            request = request.header("circleci-signature", sign_v1(secret, &body));
        }
        request.send().await.unwrap().status().as_u16()
    }
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_callback_is_lost_is_ended_by_the_safety_net() {
    // The account expects callbacks, but the simulator sends none: only the polls, sparse
    // (the first 8 × 50 ms after dispatch) but at most 5 × `poll_max` = 1 s apart, see the end.
    // The build: 0.5 s of config processing, 0.5 s queued, 3 s running (clock at real speed).
    let gw = Gw::start(1.0, Duration::from_secs(3), &[("poll_initial", "50ms"), ("poll_max", "200ms")]).await;
    let (run, pipeline) = gw.dispatched("main").await;
    let done = gw.finished(&run, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    let reads = gw.reads(&pipeline);
    let finished_at: DateTime<Utc> = done["finished_at"].as_str().unwrap().parse().unwrap();
    let slack = 0.5;
    let gaps: Vec<f64> = reads.windows(2).map(|w| secs(w[1] - w[0])).collect();
    assert!(gaps.iter().all(|g| *g <= 1.0 + slack), "reads more than 5 × poll_max apart: {gaps:?}");
    let seen_after = secs(*reads.last().unwrap() - finished_at);
    assert!((0.0..=1.0 + slack).contains(&seen_after), "the end was read {seen_after} s after it happened");
    // Polling alone would have read it every 200 ms or so: about 20 reads.
    assert!(reads.len() <= 8, "{} reads: {gaps:?}", reads.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_callbacks_costs_one_read_per_poll_initial() {
    let gw = Gw::start(1.0, Duration::from_secs(3600), &[("poll_initial", "1s"), ("poll_max", "60s")]).await;
    let (_run, pipeline) = gw.older_than_its_next_gap("main").await;

    // Three workflows calling back 200 ms apart, each after the previous read has ended.
    for event in ["burst-1", "burst-2", "burst-3"] {
        assert_eq!(gw.callback(event, &pipeline, "success", Some(CIRCLECI_WEBHOOK_SECRET)).await, 202, "{event}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.reads(&pipeline).len(), 1, "the first callback is read at once, the others wait");
    // (The next scheduled poll is some 13–19 s away.)
    let reads = gw.reads_reach(&pipeline, 2, Duration::from_secs(5)).await;
    assert_eq!(reads.len(), 2, "the rest of the burst costs one more read, `poll_initial` after the first");
    assert!(secs(reads[1] - reads[0]) >= 0.9, "{reads:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.reads(&pipeline).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_during_a_read_is_read_again_after_it() {
    let gw = Gw::start(1.0, Duration::from_secs(3600), &[("poll_initial", "1s"), ("poll_max", "60s")]).await;
    let (_run, pipeline) = gw.older_than_its_next_gap("main").await;
    // The next workflow list is answered only after 800 ms: a callback comes meanwhile, about a
    // workflow that may have ended after the simulator took that list.
    gw.providers.harness.faults().push(
        ScriptedFault::new(Fault::Latency(Duration::from_millis(800))).method(Method::GET).path_contains("/workflow"),
    );
    assert_eq!(gw.callback("during-1", &pipeline, "success", Some(CIRCLECI_WEBHOOK_SECRET)).await, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.reads(&pipeline).len(), 1, "the first read is under way");
    assert_eq!(gw.callback("during-2", &pipeline, "success", Some(CIRCLECI_WEBHOOK_SECRET)).await, 202);
    // Without it, the first read's answer would schedule the next some 13–19 s later.
    let reads = gw.reads_reach(&pipeline, 2, Duration::from_secs(5)).await;
    assert_eq!(reads.len(), 2, "the callback that came during the read is read after it: {reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_claiming_the_end_changes_nothing_and_an_unsigned_one_is_not_even_read() {
    let gw = Gw::start(1.0, Duration::from_secs(3600), &[("poll_initial", "1s"), ("poll_max", "60s")]).await;
    let (run, pipeline) = gw.dispatched("main").await;

    // Unsigned, or signed with another secret: refused, and no read.
    assert_eq!(gw.callback("forged-1", &pipeline, "success", None).await, 401);
    assert_eq!(gw.callback("forged-2", &pipeline, "failed", Some("not-the-secret")).await, 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.reads(&pipeline).is_empty());
    assert_eq!(gw.run(&run).await["state"], "queued");

    // Signed: the run is read at once, and the read (still running at CircleCI) decides.
    assert_eq!(gw.callback("signed-1", &pipeline, "success", Some(CIRCLECI_WEBHOOK_SECRET)).await, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.reads(&pipeline).len(), 1);
    let state = gw.run(&run).await["state"].as_str().unwrap().to_string();
    assert!(!TERMINAL.contains(&state.as_str()), "a callback ended a running build: {state}");
}
