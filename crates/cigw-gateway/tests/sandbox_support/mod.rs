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
