//! `cigw check-config`: load the layered configuration, build every account and target, and
//! report every problem with its key path.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings, redact_url};

use crate::providers::factories;

/// Run the check and print the report; exit 0 when there are no errors.
pub(crate) async fn run(file: Option<&Path>, online: bool) -> ExitCode {
    let (report, ok) = check(file, online).await;
    print!("{report}");
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The report text and whether the configuration is usable.
pub(crate) async fn check(file: Option<&Path>, online: bool) -> (String, bool) {
    let mut out = String::new();
    let mut problems = Problems::default();
    let source = file.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults only".into());
    let _ = writeln!(out, "configuration: {source}");
    let settings = match Settings::load(file, &mut problems) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return (out, false);
        }
    };
    let catalog = Catalog::build(&settings, &factories(), &mut problems);
    let _ = writeln!(out, "database: {}", redact_url(&settings.database.url));
    let _ = writeln!(out, "listen: {}", settings.server.listen);

    let _ = writeln!(out, "accounts ({}):", catalog.accounts.len());
    for ((kind, name), account) in &catalog.accounts {
        let _ = writeln!(out, "  {kind}/{name}: {}", account.describe());
        if online {
            match account.check_online().await {
                Ok(()) => {
                    let _ = writeln!(out, "    online check: ok");
                }
                Err(e) => problems.error(format!("providers.{kind}.{name}"), format!("online check failed: {e}")),
            }
        }
    }
    let _ = writeln!(out, "targets ({}):", catalog.targets.len());
    for (name, t) in &catalog.targets {
        let spec = &t.spec;
        let _ = writeln!(
            out,
            "  {name}: {}/{} {} (default branch {}, concurrency {:?})",
            spec.provider,
            spec.account,
            t.target.locator(),
            spec.default_branch,
            spec.concurrency
        );
        for p in &spec.parameters {
            let mut traits = vec![p.kind.to_string()];
            if p.required {
                traits.push("required".into());
            }
            if p.secret {
                traits.push("secret".into());
            }
            if let Some(d) = &p.default {
                traits.push(if p.secret { "default ***".into() } else { format!("default {}", d.to_json()) });
            }
            if let Some(a) = &p.allowed {
                let values: Vec<String> = a.iter().map(|v| v.to_json().to_string()).collect();
                traits.push(format!("one of {}", values.join(", ")));
            }
            let _ = writeln!(out, "    parameter {}: {}", p.name, traits.join(", "));
        }
    }
    let _ = writeln!(out, "schedules ({}):", settings.schedules.len());
    for (name, s) in &settings.schedules {
        let _ = writeln!(
            out,
            "  {name}: {} ({}) → {}, missed slots: {}",
            s.cron_text,
            s.zone.name(),
            s.targets.join(", "),
            s.missed.as_str()
        );
    }
    let _ = writeln!(out, "hooks ({}):", settings.hooks.len());
    for (name, h) in &settings.hooks {
        let _ = writeln!(
            out,
            "  {name}: POST /hooks/{name}, scheme {}, {} secret(s), rules {} → {}",
            h.scheme.as_str(),
            h.keys().len(),
            h.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
            h.targets().join(", "),
        );
    }
    let _ = writeln!(out, "chains ({}):", settings.chains.len());
    for (name, c) in &settings.chains {
        let when = match &c.upstream {
            cigw_core::chain::Upstream::AnyOf(t) => format!("any of {}", t.join(", ")),
            cigw_core::chain::Upstream::AllOf { targets, key, ttl } => format!(
                "all of {} (join by {}, expires after {})",
                targets.join(", "),
                key.as_str(),
                humantime::format_duration(*ttl)
            ),
        };
        let states: Vec<&str> = c.states.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(out, "  {name}: {when} {} → {}", states.join("|"), c.targets.join(", "));
    }
    let _ = writeln!(out, "notifications ({}):", settings.notifications.len());
    for (name, n) in &settings.notifications {
        let all = |v: Vec<String>| if v.is_empty() { "all".to_string() } else { v.join(", ") };
        let _ = writeln!(
            out,
            "  {name}: → {} (targets: {}, states: {}, providers: {}), {} secret(s), gives up after {} attempts",
            n.url.split(['?', '#']).next().unwrap_or_default(),
            all(n.filter.targets.clone()),
            all(n.filter.states.iter().map(|s| s.to_string()).collect()),
            all(n.filter.providers.iter().map(|p| p.to_string()).collect()),
            n.keys.len(),
            n.delivery.max_attempts
        );
    }
    for w in problems.warnings() {
        let _ = writeln!(out, "warning: {w}");
    }
    let errors: Vec<_> = problems.errors().collect();
    for e in &errors {
        let _ = writeln!(out, "error: {e}");
    }
    if errors.is_empty() {
        let _ = writeln!(out, "configuration OK");
    } else {
        let _ = writeln!(out, "{} problem(s) found", errors.len());
    }
    (out, errors.is_empty())
}
