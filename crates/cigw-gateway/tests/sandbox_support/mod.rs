//! A gateway on the sandbox configuration (`config/sandbox.toml`) with the three real adapters,
//! served in-process, for tests that run it against the simulators.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;

use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings, load_raw_from_str};
use cigw_core::provider::ProviderFactory;
use cigw_gateway::state::AppState;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SANDBOX_TOML: &str = include_str!("../../../../config/sandbox.toml");

/// A gateway being served; dropping it starts a graceful shutdown.
pub(crate) struct Served {
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Shut the gateway down and wait until it has stopped (at most 20 s).
    pub(crate) async fn shut_down(self) {
        self.stop.send(()).expect("the gateway is still serving");
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), self.server).await;
        stopped.expect("stopped within 20 s").unwrap().unwrap();
    }
}

/// Serve the sandbox configuration with `overrides` (dotted keys, e.g. `timings.poll_max`) on
/// `listener`, its database migrated first; a configuration error fails the test.
pub(crate) async fn serve_sandbox(listener: TcpListener, overrides: &[(String, String)]) -> Served {
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let raw = load_raw_from_str(SANDBOX_TOML, &overrides).unwrap();
    let mut problems = Problems::default();
    let settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![
        Arc::new(cigw_circleci::CircleciFactory),
        Arc::new(cigw_codefresh::CodefreshFactory),
        Arc::new(cigw_codeship::CodeshipFactory),
    ];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{:?}", problems.all());
    let store = cigw_store::open(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::new(store, catalog, settings);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(cigw_gateway::serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Served { stop, server }
}

/// POST `body` as JSON to `url` with the bearer `token`; the answer's JSON.
pub(crate) async fn post_json(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    http.post(url).bearer_auth(token).json(body).send().await.unwrap().json().await.unwrap()
}

/// GET `url` with the bearer `token`; the answer's JSON.
pub(crate) async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Everything the process-wide subscriber [`capture_logs`] installs writes, kept to be read back.
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// What was written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).expect("log lines are UTF-8")
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Install the production JSON log format (`CIGW_LOG_FORMAT=json`, span fields included) at
/// `filter` as the process-wide subscriber, writing into the returned capture. Once per test
/// binary.
pub(crate) fn capture_logs(filter: &str) -> CapturedLogs {
    let captured = CapturedLogs::default();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(captured.clone())
        .init();
    captured
}

/// The overrides of a quick flow against `providers`: a database in `dir`, `admin` as the
/// admin token, status reads every 50–200 ms and a 2 s CircleCI setup grace.
pub(crate) fn quick_flow_overrides(
    providers: &cigw_sim::sandbox::SandboxProviders,
    dir: &std::path::Path,
    admin: &str,
) -> Vec<(String, String)> {
    let mut overrides = providers.base_url_overrides();
    overrides.extend([
        ("database.url".to_string(), format!("sqlite://{}", dir.join("flow.db").display())),
        ("auth.admin_token".to_string(), admin.to_string()),
        ("timings.poll_initial".to_string(), "50ms".to_string()),
        ("timings.poll_max".to_string(), "200ms".to_string()),
        ("timings.sweep_interval".to_string(), "50ms".to_string()),
        ("providers.circleci.sandbox.setup_grace".to_string(), "2s".to_string()),
    ]);
    overrides
}
