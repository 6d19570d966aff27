//! Schedules (`[schedules.<name>]`): a cron expression in an IANA time zone that triggers targets
//! at every slot. Slots are instants: a wall-clock time skipped by a DST change fires once right
//! after the gap, one repeated by it fires once (croner's handling, see docs/schedules.md).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::GitRef;
use crate::catalog::Catalog;
use crate::config::Problems;
use crate::params;

/// What to do with slots that passed while no gateway was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedSlots {
    /// Fire nothing for them; wait for the next slot.
    #[default]
    Skip,
    /// Fire once for all of them, keyed by the latest missed slot.
    RunOnce,
}

impl MissedSlots {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedSlots::Skip => "skip",
            MissedSlots::RunOnce => "run-once",
        }
    }
}

/// `[schedules.<name>]` as written (unknown keys are collected by [`Problems::parse`]).
#[derive(Debug, Clone, Deserialize)]
struct RawSchedule {
    cron: String,
    #[serde(default = "utc")]
    zone: String,
    targets: Vec<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<GitRef>,
    #[serde(default)]
    parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    missed: MissedSlots,
    #[serde(default)]
    description: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// One configured schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name (the table key).
    pub name: String,
    /// The cron expression as written (5 fields, or 6 with seconds first).
    pub cron_text: String,
    cron: Cron,
    /// The zone the expression is read in.
    pub zone: Tz,
    /// Targets to trigger at each slot.
    pub targets: Vec<String>,
    /// What to build (none → each target's default branch).
    pub git_ref: Option<GitRef>,
    /// Parameters for every target, checked against each target's declarations.
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Labels on each trigger.
    pub labels: BTreeMap<String, String>,
    /// The missed-slot policy.
    pub missed: MissedSlots,
    /// Free text for people.
    pub description: Option<String>,
}

impl Schedule {
    /// Parse `[schedules.<name>]`, recording problems at their key paths.
    pub fn parse(name: &str, value: &serde_json::Value, problems: &mut Problems) -> Option<Schedule> {
        let path = format!("schedules.{name}");
        let raw: RawSchedule = problems.parse(&path, value)?;
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser
            .parse(&raw.cron)
            .map_err(|e| {
                problems.error(format!("{path}.cron"), format!("`{}` is not a cron expression: {e}", raw.cron))
            })
            .ok();
        let zone = raw
            .zone
            .parse::<Tz>()
            .map_err(|_| {
                problems.error(
                    format!("{path}.zone"),
                    format!("`{}` is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")", raw.zone),
                )
            })
            .ok();
        if raw.targets.is_empty() {
            problems.error(format!("{path}.targets"), "give at least one target");
        }
        Some(Schedule {
            name: name.to_string(),
            cron_text: raw.cron,
            cron: cron?,
            zone: zone?,
            targets: raw.targets,
            git_ref: raw.git_ref,
            parameters: raw.parameters,
            labels: raw.labels,
            missed: raw.missed,
            description: raw.description,
        })
    }

    /// The first slot strictly after `after`, if the expression has one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The latest slot at or before `at`, if the expression has one.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The slots in `(after, until]`, oldest first.
    pub fn slots_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> SlotsBetween<'_> {
        SlotsBetween { schedule: self, cursor: after, until }
    }

    /// Check the targets, ref and parameters against the configured targets, at this
    /// schedule's key paths.
    pub fn check(&self, catalog: &Catalog, problems: &mut Problems) {
        let path = format!("schedules.{}", self.name);
        let git_ref = self.git_ref.clone().unwrap_or_default();
        let ref_ok = match git_ref.check() {
            Ok(()) => true,
            Err(p) => {
                let at = p.field.map(|f| format!("{path}.ref.{f}")).unwrap_or(format!("{path}.ref"));
                problems.error(at, p.message);
                false
            }
        };
        for (i, name) in self.targets.iter().enumerate() {
            let Some(target) = catalog.targets.get(name) else {
                let known: Vec<&str> = catalog.targets.keys().map(String::as_str).collect();
                problems.error(
                    format!("{path}.targets[{i}]"),
                    format!("unknown target `{name}` (known targets: {})", known.join(", ")),
                );
                continue;
            };
            if ref_ok
                && let Err(why) =
                    target.target.check_ref(&git_ref.clone().or_default_branch(&target.spec.default_branch))
            {
                problems.error(format!("{path}.ref"), format!("target `{name}`: {why}"));
            }
            match params::validate(&target.spec.parameters, &self.parameters) {
                Ok(_) => {}
                Err(errors) if errors.too_many.is_some() => problems
                    .error(format!("{path}.parameters"), params::too_many_message(errors.too_many.unwrap_or_default())),
                Err(errors) => {
                    for p in errors.problems {
                        problems
                            .error(format!("{path}.parameters.{}", p.name), format!("target `{name}`: {}", p.message));
                    }
                }
            }
        }
    }
}

/// Iterator over the slots of a schedule in a time range.
#[derive(Debug)]
pub struct SlotsBetween<'a> {
    schedule: &'a Schedule,
    cursor: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Iterator for SlotsBetween<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let next = self.schedule.next_after(self.cursor).filter(|t| *t <= self.until)?;
        self.cursor = next;
        Some(next)
    }
}

/// Parse every `[schedules.<name>]` table.
pub fn parse_all(tables: &BTreeMap<String, serde_json::Value>, problems: &mut Problems) -> BTreeMap<String, Schedule> {
    tables.iter().filter_map(|(name, v)| Schedule::parse(name, v, problems).map(|s| (name.clone(), s))).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        let mut problems = Problems::default();
        let value = serde_json::json!({"cron": cron, "zone": zone, "targets": ["a"]});
        let s = Schedule::parse("s", &value, &mut problems);
        assert!(!problems.has_errors(), "{problems:?}");
        s.unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn day(s: &Schedule, from: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        s.slots_between(from, from + chrono::Duration::days(1)).collect()
    }

    #[test]
    fn a_skipped_time_fires_once_right_after_the_gap() {
        // 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = schedule("30 2 * * *", "Europe/Berlin");
        let slots = day(&s, utc(2026, 3, 28, 23, 0, 0));
        assert_eq!(slots, [utc(2026, 3, 29, 1, 0, 0)], "03:00 CEST, once");
        let next = s.next_after(slots[0]).unwrap();
        assert_eq!(next, utc(2026, 3, 30, 0, 30, 0), "02:30 CEST the next day");
    }

    #[test]
    fn a_repeated_time_fires_once() {
        // 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(day(&s, utc(2026, 10, 24, 22, 0, 0)), [utc(2026, 10, 25, 0, 30, 0)]);
        // An hourly job fires at each real hour, the repeated one included.
        let hourly = schedule("0 * * * *", "Europe/Berlin");
        let slots: Vec<_> = hourly.slots_between(utc(2026, 10, 24, 23, 30, 0), utc(2026, 10, 25, 2, 30, 0)).collect();
        assert_eq!(slots, [utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 1, 0, 0), utc(2026, 10, 25, 2, 0, 0)]);
    }

    #[test]
    fn seconds_are_optional() {
        let s = schedule("*/20 * * * * *", "UTC");
        let slots: Vec<_> = s.slots_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0)).collect();
        assert_eq!(slots, [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1, 0)]);
    }

    #[test]
    fn bad_expressions_zones_and_keys_are_reported_at_their_paths() {
        let mut problems = Problems::default();
        let value = serde_json::json!({"cron": "61 * * * *", "zone": "Mars/Olympus", "targets": [], "colour": 1});
        assert!(Schedule::parse("nightly", &value, &mut problems).is_none());
        let shown: Vec<String> = problems.errors().map(ToString::to_string).collect();
        for key in [
            "schedules.nightly.cron: ",
            "schedules.nightly.zone: ",
            "schedules.nightly.targets: ",
            "schedules.nightly.colour: unknown key",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(key)), "{key}: {shown:?}");
        }
        let mut problems = Problems::default();
        let value = serde_json::json!({"cron": "0 2 * * *", "targets": ["a"], "missed": "all"});
        assert!(Schedule::parse("x", &value, &mut problems).is_none());
        assert!(problems.errors().any(|p| p.to_string().starts_with("schedules.x.missed: ")), "{problems:?}");
    }
}
