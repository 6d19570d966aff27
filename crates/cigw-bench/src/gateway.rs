//! A `cigw serve` process configured for one benchmark scenario.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{Proc, free_port, wait_ready};

/// The admin token every benchmark gateway accepts (well-formed, never used outside the bench).
pub(crate) const TOKEN: &str = "cigw_benchbenchbenchbenchbenchbenchbenchbenchbench0";

/// How one gateway is set up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Setup {
    /// Base URLs of the stand-in's simulators (`providers.<kind>.sandbox.base_url` → URL).
    pub(crate) overrides: BTreeMap<String, String>,
    /// `[timings]` keys to set (e.g. `dispatch_delay = "1h"` holds dispatch back).
    pub(crate) timings: Vec<(&'static str, String)>,
    /// Extra CircleCI targets `fan-000`…, for the fan-out figure.
    pub(crate) fan_out: usize,
    /// Whether each `fan-…` target has an account of its own (else they share `bench`, and its
    /// limit of in-flight requests).
    pub(crate) fan_out_accounts: bool,
    /// Whether the CircleCI account accepts the stand-in's signed webhooks.
    pub(crate) callbacks: bool,
    /// The `bench` account's limit of calls in flight (the default, 8, when unset).
    pub(crate) concurrency: Option<u32>,
}

/// A running gateway.
pub(crate) struct Gateway {
    /// The process.
    pub(crate) proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// From spawn to the first `/readyz` 200.
    pub(crate) ready_after: Duration,
}

impl Setup {
    fn base_url(&self, kind: &str) -> String {
        self.overrides
            .get(&format!("providers.{kind}.sandbox.base_url"))
            .cloned()
            .unwrap_or_else(|| format!("http://{kind}.bench.invalid"))
    }

    /// The configuration file's text.
    pub(crate) fn toml(&self, port: u16, db: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 4096\n");
        let _ = writeln!(t, "[database]\nurl = \"sqlite://{}\"\n", db.display());
        let _ = writeln!(t, "[auth]\nadmin_token = \"{TOKEN}\"\n");
        let _ = writeln!(t, "[timings]");
        for (k, v) in &self.timings {
            let _ = writeln!(t, "{k} = \"{v}\"");
        }
        let _ = writeln!(
            t,
            "\n[providers.circleci.bench]\nbase_url = \"{}\"\ntoken = \"sim-circleci-token\"",
            self.base_url("circleci")
        );
        if self.callbacks {
            let _ = writeln!(t, "webhook_secrets = [\"{}\"]", cigw_sim::sandbox::CIRCLECI_WEBHOOK_SECRET);
        }
        if let Some(n) = self.concurrency {
            let _ = writeln!(t, "concurrency = {n}");
        }
        let project = cigw_sim::sandbox::CIRCLECI_PROJECT;
        let names = std::iter::once("api-build".to_string()).chain((0..self.fan_out).map(|i| format!("fan-{i:03}")));
        for name in names {
            let account = if self.fan_out_accounts && name.starts_with("fan-") { name.as_str() } else { "bench" };
            if account != "bench" {
                let _ = writeln!(
                    t,
                    "\n[providers.circleci.{account}]\nbase_url = \"{}\"\ntoken = \"sim-circleci-token\"",
                    self.base_url("circleci")
                );
            }
            let _ = writeln!(
                t,
                "\n[targets.{name}]\nprovider = \"circleci\"\naccount = \"{account}\"\nproject_slug = \"{project}\"\n\
                 [targets.{name}.parameters.cigw_run_id]\ntype = \"string\""
            );
        }
        t
    }
}

impl Gateway {
    /// Write the configuration into `dir`, start `cigw serve`, wait for `/readyz`.
    pub(crate) async fn start(cigw: &Path, setup: &Setup, dir: &Path, label: &str) -> anyhow::Result<Gateway> {
        let db = dir.join(format!("{label}.db"));
        Self::start_on(cigw, setup, dir, label, db).await
    }

    /// The same on an existing database file.
    pub(crate) async fn start_on(
        cigw: &Path,
        setup: &Setup,
        dir: &Path,
        label: &str,
        db: PathBuf,
    ) -> anyhow::Result<Gateway> {
        let port = free_port()?;
        let config = dir.join(format!("{label}.toml"));
        std::fs::write(&config, setup.toml(port, &db))?;
        let config_arg = config.display().to_string();
        let log = dir.join(format!("{label}.log"));
        let started = Instant::now();
        let mut proc = Proc::spawn(&format!("cigw ({label})"), cigw, &["serve", "--config", &config_arg], &[], &log)?;
        let url = format!("http://127.0.0.1:{port}");
        let ready_after = wait_ready(&mut proc, &format!("{url}/readyz"), started, Duration::from_secs(60)).await?;
        Ok(Gateway { proc, url, ready_after })
    }
}
