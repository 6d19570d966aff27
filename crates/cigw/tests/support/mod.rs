//! Shared set-up of end-to-end tests: the three simulators, a configuration pointing at them,
//! and the debug `cigw` binary serving on an ephemeral port with a fresh SQLite database
//! ([`Gateway`]), or several such processes on one database ([`Serve`], [`sandbox_config`]).
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cigw_sim::sandbox::SandboxProviders;

/// The admin token every test gateway accepts.
pub const ADMIN_TOKEN: &str = "cigw_e2e-admin-token-0123456789abcdefghijklmnopqrstuv";

/// The sandbox targets, with fast timings, plus what a test adds.
const SANDBOX_TOML: &str = include_str!("../../../../config/sandbox.toml");
/// The line that starts the sandbox's chains, notifications and schedules (the last sections),
/// which end-to-end tests leave out: chains would add runs of their own (the chain tests bring
/// theirs), and the sandbox's notification receiver is not running here.
const SANDBOX_SCHEDULES: &str = "# ---------------------------------------------------------------- Chains";

/// A running gateway process with its simulators.
pub struct Gateway {
    /// The `cigw serve` process; first, so it is killed before the rest is dropped.
    process: Serve,
    /// The simulators (their harness counts builds and injects faults).
    pub providers: SandboxProviders,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The configuration file the process runs with.
    pub config: PathBuf,
    /// Temporary directory holding the config and the database.
    pub dir: tempfile::TempDir,
}

/// Fast timings so runs finish in seconds.
const FAST_TIMINGS: &str = r#"
[timings]
poll_initial = "100ms"
poll_max = "500ms"
lease = "3s"
reconcile_grace = "2s"
unconfirmed_deadline = "20s"
sweep_interval = "200ms"
retry_max_delay = "500ms"
"#;

/// Fast retries of provider calls in every sandbox account (`[providers.<kind>.sandbox]`).
const FAST_ACCOUNT: [(&str, &str); 2] = [("retry_max_delay", "500ms"), ("retry_deadline", "10s")];

/// The end-to-end configuration: the sandbox's accounts (pointed at `providers`), targets and hook,
/// the fast timings (some replaced by `timings`, see [`Gateway::start_custom`]), `listen` on
/// `port`, the database at `database_url`, the admin token, then `extra_toml`.
pub fn sandbox_config(
    providers: &SandboxProviders,
    port: u16,
    database_url: &str,
    timings: &[(&str, &str)],
    extra_toml: &str,
) -> String {
    let mut timings_toml = String::from("\n[timings]\n");
    for line in FAST_TIMINGS.lines().filter(|l| l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap_or_default();
        if !timings.iter().any(|(k, _)| *k == key) {
            timings_toml.push_str(line);
            timings_toml.push('\n');
        }
    }
    for (key, value) in timings.iter().filter(|(k, _)| !k.contains('.')) {
        timings_toml.push_str(&format!("{key} = \"{value}\"\n"));
    }
    // The sandbox's chains and schedule would add runs of their own mid-test.
    let targets_only = SANDBOX_TOML.split(SANDBOX_SCHEDULES).next().unwrap_or(SANDBOX_TOML);
    let mut config = String::from(targets_only);
    for (key, value) in providers.base_url_overrides() {
        let account = key.trim_start_matches("providers.").trim_end_matches(".base_url");
        let placeholder_line = config
            .lines()
            .skip_while(|l| l.trim() != format!("[providers.{account}]"))
            .find(|l| l.starts_with("base_url"))
            .expect("a base_url line")
            .to_string();
        let kind = account.trim_end_matches(".sandbox");
        let mut lines = format!("base_url = \"{value}\"\n");
        for (key, fast) in FAST_ACCOUNT {
            if !timings.iter().any(|(k, _)| *k == format!("{kind}.{key}")) {
                lines.push_str(&format!("{key} = \"{fast}\"\n"));
            }
        }
        // Codeship's real budget (60/min, enforced one request a second) would starve tests
        // that poll every 100 ms; the simulator runs 20 times faster anyway.
        if kind == "codeship" && !timings.iter().any(|(k, _)| *k == "codeship.rate_limit") {
            lines.push_str("rate_limit = \"10/s\"\n");
        }
        for (key, value) in timings.iter().filter_map(|(k, v)| Some((k.strip_prefix(kind)?.strip_prefix('.')?, v))) {
            lines.push_str(&format!("{key} = \"{value}\"\n"));
        }
        config = config.replacen(&format!("{placeholder_line}\n"), &lines, 1);
    }
    config.push_str(&format!(
        "\n[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"{database_url}\"\n[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n{timings_toml}\n{extra_toml}\n"
    ));
    config
}

impl Gateway {
    /// Simulators at `speed` × real time (builds take about `run_for` simulated), and a gateway.
    pub async fn start(speed: f64, run_for: Duration) -> Gateway {
        Self::start_with(speed, run_for, "").await
    }

    /// As [`Gateway::start`], with extra TOML appended to the configuration.
    pub async fn start_with(speed: f64, run_for: Duration, extra_toml: &str) -> Gateway {
        Self::start_custom(speed, run_for, &[], extra_toml).await
    }

    /// As [`Gateway::start_with`], replacing some of the fast timings (key, humantime value):
    /// `poll_max` is `[timings].poll_max`, `codefresh.retry_deadline` is the sandbox Codefresh
    /// account's `retry_deadline`. Tables cannot be given twice in one TOML file, so these
    /// cannot go in `extra_toml`.
    pub async fn start_custom(speed: f64, run_for: Duration, timings: &[(&str, &str)], extra_toml: &str) -> Gateway {
        let providers = SandboxProviders::start(speed, run_for).await.expect("simulators");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        providers.send_circleci_webhooks_to(format!("{url}/callbacks/circleci/sandbox"));
        let database_url = format!("sqlite://{}", dir.path().join("cigw.db").display());
        let config = sandbox_config(&providers, port, &database_url, timings, extra_toml);
        let path = dir.path().join("cigw.toml");
        std::fs::write(&path, config).expect("write config");
        let process = Serve::new(path.clone(), dir.path().join("cigw.log"), port, Vec::new());
        let mut gw = Gateway { providers, url, config: path, dir, process };
        gw.spawn().await;
        gw
    }

    /// Start (or restart) the process and wait until it answers `/healthz`.
    pub async fn spawn(&mut self) {
        self.process.spawn().await;
    }

    /// Kill the process with SIGKILL (no shutdown at all).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stop the process with SIGTERM and wait (up to a minute) for it to exit. The wait yields,
    /// so the simulators on this runtime keep answering the calls the process finishes.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate().await
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A client request with the admin token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(ADMIN_TOKEN)
    }

    /// GET a JSON document with the admin token.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.request(reqwest::Method::GET, path).send().await.expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    /// POST JSON with the admin token; returns status and body.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.request(reqwest::Method::POST, path).json(&body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A request without any token.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.url))
    }

    /// POST JSON with the admin token and an `Idempotency-Key`; returns the whole response.
    pub async fn post_idempotent(&self, path: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path).header("Idempotency-Key", key).json(body).send().await.expect("POST")
    }

    /// Create a token with `scopes` (and `expires_in`, when given); returns its secret.
    pub async fn create_token(&self, name: &str, scopes: &[&str], expires_in: Option<&str>) -> String {
        let mut body = serde_json::json!({"name": name, "scopes": scopes});
        if let Some(e) = expires_in {
            body["expires_in"] = e.into();
        }
        let (status, created) = self.post_json("/v1/tokens", body).await;
        assert_eq!(status, 201, "{created}");
        created["secret"].as_str().expect("secret").to_string()
    }

    /// Every run the gateway has, newest first (one page of up to 1000).
    pub async fn all_runs(&self) -> Vec<serde_json::Value> {
        let page = self.get_json("/v1/runs?limit=1000").await;
        page["runs"].as_array().expect("runs").clone()
    }

    /// Trigger `body` and return the run ids (asserting a 202).
    pub async fn trigger(&self, body: serde_json::Value) -> Vec<String> {
        let (status, answer) = self.post_json("/v1/triggers", body).await;
        assert_eq!(status, 202, "{answer}");
        answer["runs"].as_array().expect("runs").iter().map(|r| r["id"].as_str().expect("id").to_string()).collect()
    }

    /// The kinds of a run's events, oldest first.
    pub async fn event_kinds(&self, run_id: &str) -> Vec<String> {
        let run = self.get_json(&format!("/v1/runs/{run_id}")).await;
        run["events"].as_array().expect("events").iter().map(|e| e["kind"].as_str().unwrap_or("").to_string()).collect()
    }

    /// Poll a run until `done(state)`, up to `timeout`.
    pub async fn wait_for_run(
        &self,
        run_id: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.get_json(&format!("/v1/runs/{run_id}")).await;
            if done(run["state"].as_str().unwrap_or("")) {
                return run;
            }
            if Instant::now() > deadline {
                panic!("run {run_id} stuck in {}: {run:#}\nlog:\n{}", run["state"], self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Gateway {
    /// POST a trigger without asserting anything: `None` when no answer arrived (the process is
    /// down or died mid-request), else the status and body. For load clients that race kills.
    pub async fn try_trigger(&self, body: &serde_json::Value) -> Option<(u16, serde_json::Value)> {
        let r = self
            .request(reqwest::Method::POST, "/v1/triggers")
            .timeout(Duration::from_secs(20))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// Every run by id (one page of up to 1000).
    pub async fn runs_by_id(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.all_runs().await.into_iter().map(|r| (r["id"].as_str().unwrap_or_default().to_string(), r)).collect()
    }

    /// Wait until every run in `ids` is terminal, reading the run list once a second, up to
    /// `timeout`; returns the runs by id. Panics naming the stragglers (with their states).
    pub async fn wait_all_terminal(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs_by_id().await;
            let open: Vec<String> = ids
                .iter()
                .filter(|id| runs.get(*id).is_none_or(|r| !is_terminal(r["state"].as_str().unwrap_or(""))))
                .map(|id| format!("{id} ({})", runs.get(id).map_or("missing".into(), |r| r["state"].to_string())))
                .collect();
            if open.is_empty() {
                return runs;
            }
            if Instant::now() > deadline {
                panic!("{} of {} runs not terminal after {timeout:?}: {open:?}", open.len(), ids.len());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// How many events of `kind` a run has.
    pub async fn count_events(&self, run_id: &str, kind: &str) -> usize {
        self.event_kinds(run_id).await.iter().filter(|k| *k == kind).count()
    }
}

/// Terminal run states.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "canceled" | "skipped" | "error")
}

/// One `cigw serve` process of the debug binary on a configuration file: started, killed with
/// SIGKILL, stopped with SIGTERM and started again; killed when dropped.
pub struct Serve {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    port: u16,
}

impl Serve {
    /// A process (not started yet) serving `config` on `port` (which the configuration, or a
    /// `CIGW__SERVER__LISTEN` in `env`, must name), appending its log to `log`.
    pub fn new(config: PathBuf, log: PathBuf, port: u16, env: Vec<(String, String)>) -> Serve {
        Serve { url: format!("http://127.0.0.1:{port}"), config, log, env, child: None, port }
    }

    /// Start (or restart) the process and wait until it answers `/healthz`.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cigw"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("CIGW_CONFIG")
            .env("CIGW_LOG", "info,cigw_gateway=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cigw");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cigw did not come up on port {}; log:\n{}", self.port, self.log());
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the process with SIGKILL (no shutdown at all).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the process with SIGTERM and wait (up to a minute) for it to exit. The wait yields,
    /// so the simulators on this runtime keep answering the calls the process finishes.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("cigw did not exit within a minute of SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
