//! The figures of one benchmark run: printed as a table as they come, written as JSON at the end.

use serde::Serialize;
use serde_json::Value;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Which measurement (stable key for the JSON).
    pub(crate) key: String,
    /// What it is, for people.
    pub(crate) what: String,
    /// cigw's figure.
    pub(crate) cigw: Value,
    /// The reference measured in the same run, if there is one.
    pub(crate) reference: Option<Value>,
    /// The target for it, as text.
    pub(crate) target: Option<String>,
}

/// Every figure of the run, with the machine it ran on.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// `nproc`, kernel, date.
    pub(crate) machine: Value,
    /// The figures in the order measured.
    pub(crate) figures: Vec<Figure>,
}

impl Report {
    /// Add a figure and print it at once (a long run shows progress).
    pub(crate) fn add(&mut self, key: &str, what: &str, cigw: Value, reference: Option<Value>, target: Option<&str>) {
        let figure = Figure { key: key.into(), what: what.into(), cigw, reference, target: target.map(str::to_string) };
        println!(
            "  {:<58} {:<34} {}{}",
            figure.what,
            show(&figure.cigw),
            figure.reference.as_ref().map(|r| format!("ref: {}", show(r))).unwrap_or_default(),
            figure.target.as_ref().map(|t| format!("  [target: {t}]")).unwrap_or_default()
        );
        self.figures.push(figure);
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join(" "),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 && f.abs() >= 100.0 => format!("{f:.0}"),
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
