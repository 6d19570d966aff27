//! Following the runs of one trigger: the state model, the exit code, the line and table
//! rendering (pure, unit-tested) and the two displays (live indicatif lines on a terminal,
//! one plain line per state change otherwise).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{s, table, time};

/// What `--wait` reports about one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRow {
    /// Run id.
    pub(crate) id: String,
    /// Target name.
    pub(crate) target: String,
    /// Provider kind.
    pub(crate) provider: String,
    /// cigw state.
    pub(crate) state: String,
    /// When the run was created.
    pub(crate) created_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// The last message (error text).
    pub(crate) message: Option<String>,
    /// The build at the provider.
    pub(crate) url: Option<String>,
}

impl RunRow {
    /// From a run object of the API (the 202 summary or a full run).
    pub(crate) fn from_json(v: &Value) -> RunRow {
        RunRow {
            id: s(v, "id").to_string(),
            target: s(v, "target").to_string(),
            provider: s(v, "provider").to_string(),
            state: s(v, "state").to_string(),
            created_at: time(v, "created_at"),
            finished_at: time(v, "finished_at"),
            message: v.get("message").and_then(Value::as_str).map(String::from),
            url: v.pointer("/provider_ref/url").and_then(Value::as_str).map(String::from),
        }
    }

    /// Whether the run has finished.
    pub(crate) fn is_terminal(&self) -> bool {
        is_terminal(&self.state)
    }

    /// Time since creation, up to `now` or to the end.
    pub(crate) fn elapsed(&self, now: DateTime<Utc>) -> Option<Duration> {
        let start = self.created_at?;
        let end = self.finished_at.filter(|_| self.is_terminal()).unwrap_or(now);
        (end - start).to_std().ok()
    }
}

/// Finished states.
pub(crate) fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "canceled" | "skipped" | "error")
}

/// The exit code of `--wait` (DESIGN §4): 1 if any run failed or errored, else 2 if any was
/// canceled, else 3 if the wait timed out with runs unfinished, else 0.
pub(crate) fn exit_code(rows: &[RunRow], timed_out: bool) -> u8 {
    if rows.iter().any(|r| matches!(r.state.as_str(), "failed" | "error")) {
        1
    } else if rows.iter().any(|r| r.state == "canceled") {
        2
    } else if timed_out && rows.iter().any(|r| !r.is_terminal()) {
        3
    } else {
        0
    }
}

/// `4s`, `1m05s`, `2h03m`.
pub(crate) fn format_elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

fn elapsed_text(row: &RunRow, now: DateTime<Utc>) -> String {
    row.elapsed(now).map(format_elapsed).unwrap_or_else(|| "-".into())
}

/// Column widths shared by the live lines so they line up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Widths {
    target: usize,
    provider: usize,
}

impl Widths {
    /// Widths that fit every row.
    pub(crate) fn of(rows: &[RunRow]) -> Widths {
        Widths {
            target: rows.iter().map(|r| r.target.chars().count()).max().unwrap_or(0),
            provider: rows.iter().map(|r| r.provider.chars().count()).max().unwrap_or(0),
        }
    }
}

/// The text of one live line (the spinner or mark is drawn in front of it).
pub(crate) fn live_line(row: &RunRow, w: Widths, now: DateTime<Utc>) -> String {
    let mut line = format!(
        "{:tw$}  {:pw$}  {:9}  {:>6}",
        row.target,
        row.provider,
        row.state,
        elapsed_text(row, now),
        tw = w.target,
        pw = w.provider
    );
    if let Some(m) = row.message.as_deref().filter(|_| matches!(row.state.as_str(), "failed" | "error")) {
        line.push_str("  ");
        line.push_str(m);
    }
    line
}

/// One line of the plain display, printed when a run's state changes.
pub(crate) fn plain_line(row: &RunRow, now: DateTime<Utc>) -> String {
    let mut line = format!("{} ({}) {}", row.target, row.provider, row.state);
    if let Some(d) = row.elapsed(now) {
        line.push_str(&format!(" after {}", format_elapsed(d)));
    }
    if let Some(m) = row.message.as_deref().filter(|_| matches!(row.state.as_str(), "failed" | "error")) {
        line.push_str(": ");
        line.push_str(m);
    }
    line
}

/// The mark in front of a finished run.
pub(crate) fn mark(state: &str) -> &'static str {
    match state {
        "succeeded" => "✔",
        "skipped" => "–",
        "canceled" => "⊘",
        _ => "✘",
    }
}

/// The table printed at the end of `--wait`.
pub(crate) fn summary(rows: &[RunRow], now: DateTime<Utc>) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let detail = match (r.state.as_str(), &r.message, &r.url) {
                ("failed" | "error", Some(m), _) => m.clone(),
                (_, _, Some(u)) => u.clone(),
                _ => String::new(),
            };
            vec![r.target.clone(), r.provider.clone(), r.state.clone(), elapsed_text(r, now), r.id.clone(), detail]
        })
        .collect();
    let mut out = table(&["TARGET", "PROVIDER", "STATE", "ELAPSED", "RUN", "DETAIL"], &body);
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in rows {
        match counts.iter_mut().find(|(s, _)| *s == r.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.state.clone(), 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    out.push_str(&format!("{} run{}: {}\n", rows.len(), if rows.len() == 1 { "" } else { "s" }, parts.join(", ")));
    out
}

/// Where progress goes.
pub(crate) enum Display {
    /// A terminal: one redrawn line per run.
    Live {
        /// The bars' container (draws to stdout).
        multi: MultiProgress,
        /// One bar per run id.
        bars: HashMap<String, ProgressBar>,
        /// Shared widths.
        widths: Widths,
    },
    /// Not a terminal: a line per change.
    Plain {
        /// The last state printed per run.
        seen: HashMap<String, String>,
    },
    /// `--json`: nothing until the end.
    Quiet,
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn finished_style(state: &str) -> ProgressStyle {
    let template = match state {
        "succeeded" | "skipped" => "{prefix:.green} {msg}",
        "canceled" => "{prefix:.yellow} {msg}",
        _ => "{prefix:.red} {msg}",
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Display {
    /// A live display drawing on stdout, one line per run in the order given.
    pub(crate) fn live(rows: &[RunRow]) -> Display {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let widths = Widths::of(rows);
        let mut bars = HashMap::new();
        let now = Utc::now();
        for row in rows {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(running_style());
            bar.set_message(live_line(row, widths, now));
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.insert(row.id.clone(), bar);
        }
        Display::Live { multi, bars, widths }
    }

    /// The plain display.
    pub(crate) fn plain() -> Display {
        Display::Plain { seen: HashMap::new() }
    }

    /// Show the latest state of every run.
    pub(crate) fn update(&mut self, rows: &[RunRow], now: DateTime<Utc>) {
        match self {
            Display::Live { bars, widths, .. } => {
                for row in rows {
                    let Some(bar) = bars.get(&row.id) else { continue };
                    if bar.is_finished() {
                        continue;
                    }
                    bar.set_message(live_line(row, *widths, now));
                    if row.is_terminal() {
                        bar.set_style(finished_style(&row.state));
                        bar.set_prefix(mark(&row.state));
                        bar.finish();
                    }
                }
            }
            Display::Plain { seen } => {
                for row in rows {
                    if seen.get(&row.id) != Some(&row.state) {
                        seen.insert(row.id.clone(), row.state.clone());
                        println!("{}", plain_line(row, now));
                    }
                }
            }
            Display::Quiet => {}
        }
    }

    /// A warning that does not tear the live lines.
    pub(crate) fn warn(&self, text: &str) {
        match self {
            Display::Live { multi, .. } => multi.suspend(|| eprintln!("warning: {text}")),
            _ => eprintln!("warning: {text}"),
        }
    }

    /// Stop drawing: unfinished lines freeze with their last text.
    pub(crate) fn stop(&self) {
        if let Display::Live { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn row(target: &str, provider: &str, state: &str) -> RunRow {
        RunRow {
            id: format!("id-{target}"),
            target: target.into(),
            provider: provider.into(),
            state: state.into(),
            created_at: Some(at("2026-01-31T10:00:00Z")),
            finished_at: None,
            message: None,
            url: None,
        }
    }

    #[test]
    fn exit_codes_follow_the_design_order() {
        let ok = [row("a", "p", "succeeded"), row("b", "p", "skipped")];
        assert_eq!(exit_code(&ok, false), 0);
        assert_eq!(exit_code(&[row("a", "p", "succeeded"), row("b", "p", "canceled")], false), 2);
        assert_eq!(exit_code(&[row("a", "p", "canceled"), row("b", "p", "error")], false), 1);
        assert_eq!(exit_code(&[row("a", "p", "failed"), row("b", "p", "running")], true), 1);
        assert_eq!(exit_code(&[row("a", "p", "canceled"), row("b", "p", "running")], true), 2);
        assert_eq!(exit_code(&[row("a", "p", "succeeded"), row("b", "p", "blocked")], true), 3);
        assert_eq!(exit_code(&ok, true), 0, "a timeout after everything ended is not a timeout");
    }

    #[test]
    fn rows_from_api_json_and_elapsed_time() {
        let r = RunRow::from_json(&json!({
            "id": "r1", "target": "web", "provider": "codefresh", "state": "failed", "message": "exit 1",
            "created_at": "2026-01-31T10:00:00Z", "finished_at": "2026-01-31T10:01:05Z",
            "provider_ref": {"id": "b", "url": "https://g/b"}
        }));
        assert_eq!(r.url.as_deref(), Some("https://g/b"));
        assert_eq!(r.elapsed(at("2026-01-31T11:00:00Z")), Some(Duration::from_secs(65)), "ends at finished_at");
        let running = row("a", "p", "running");
        assert_eq!(running.elapsed(at("2026-01-31T10:00:07Z")), Some(Duration::from_secs(7)));
        let summary_only = RunRow::from_json(&json!({"id": "r", "target": "t", "provider": "p", "state": "pending"}));
        assert_eq!(summary_only.elapsed(Utc::now()), None);
        assert_eq!(format_elapsed(Duration::from_secs(4)), "4s");
        assert_eq!(format_elapsed(Duration::from_secs(65)), "1m05s");
        assert_eq!(format_elapsed(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn live_lines_line_up_and_show_failures() {
        let mut rows = vec![row("api-build", "circleci", "running"), row("web", "codefresh", "failed")];
        rows[1].message = Some("step `test` failed".into());
        let w = Widths::of(&rows);
        let now = at("2026-01-31T10:00:12Z");
        assert_eq!(live_line(&rows[0], w, now), "api-build  circleci   running       12s");
        assert_eq!(live_line(&rows[1], w, now), "web        codefresh  failed        12s  step `test` failed");
        assert_eq!(plain_line(&rows[1], now), "web (codefresh) failed after 12s: step `test` failed");
        assert_eq!(plain_line(&rows[0], now), "api-build (circleci) running after 12s");
        let fresh = RunRow { created_at: None, ..rows[0].clone() };
        assert_eq!(plain_line(&fresh, now), "api-build (circleci) running");
    }

    #[test]
    fn the_summary_table_counts_states() {
        let mut rows = vec![row("api-build", "circleci", "succeeded"), row("web", "codefresh", "failed")];
        rows[0].finished_at = Some(at("2026-01-31T10:00:30Z"));
        rows[0].url = Some("https://ci/1".into());
        rows[1].message = Some("boom".into());
        let out = summary(&rows, at("2026-01-31T10:01:00Z"));
        let expected = "TARGET     PROVIDER   STATE      ELAPSED  RUN           DETAIL\n\
                        api-build  circleci   succeeded  30s      id-api-build  https://ci/1\n\
                        web        codefresh  failed     1m00s    id-web        boom\n\
                        2 runs: 1 succeeded, 1 failed\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn the_plain_display_prints_only_changes() {
        // Plain mode prints to stdout; here we only check its bookkeeping.
        let mut d = Display::plain();
        let rows = [row("a", "p", "pending")];
        d.update(&rows, Utc::now());
        d.update(&rows, Utc::now());
        let Display::Plain { seen } = &d else { panic!() };
        assert_eq!(seen.get("id-a").map(String::as_str), Some("pending"));
    }

    #[test]
    fn the_live_display_finishes_bars_of_finished_runs() {
        let rows = vec![row("a", "p", "running"), row("b", "p", "running")];
        let mut d = Display::live(&rows);
        let mut later = rows.clone();
        later[0].state = "succeeded".into();
        d.update(&later, Utc::now());
        let Display::Live { bars, .. } = &d else { panic!() };
        assert!(bars["id-a"].is_finished());
        assert!(!bars["id-b"].is_finished());
        assert!(bars["id-a"].message().contains("succeeded"), "{}", bars["id-a"].message());
        assert_eq!(bars["id-a"].prefix(), "✔");
        d.stop();
    }
}
