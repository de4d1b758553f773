//! The CI gate: pure checks of a result file against fixed limits or a
//! baseline, for `migbench check`.
//!
//! Accepted inputs ([`Measured::from_value`]):
//! * a scenario result ([`ScenarioResult`], `*.result.json`): top-level
//!   `migration` and `app_downtime_ms`;
//! * the JSON written by `migbench migrate --json`: top-level `config`,
//!   `migration`, `checks`, `failures` (no application-visible downtime);
//! * bare migration statistics (the control socket's `stats`).
//!
//! Every shape may carry `schema_version` ([`crate::schema`]); a version
//! this build does not read is refused ([`CheckError::Schema`]).
//!
//! Each check returns one human-readable line per violated limit; an empty
//! list means the gate passes. The caller prints the lines and exits
//! non-zero when there are any.

use std::path::Path;

use results::{MigrationStats, Outcome};
use serde_json::Value;
use thiserror::Error;

use crate::scenario::{outcome_str, ScenarioResult};

/// What the gate expects to find in a file, for error messages.
const EXPECTED: &str = "expected a JSON object with a `migration` object holding migration statistics \
(as written by `migbench migrate --json` or a scenario's `*.result.json`), or bare migration statistics";

/// A result file could not be used.
#[derive(Debug, Error)]
pub enum CheckError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{source_name}: not valid JSON ({source}); {EXPECTED}")]
    Parse {
        /// The file (or other source) name.
        source_name: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON does not have the expected shape.
    #[error("{source_name}: {what}")]
    Shape {
        /// The file (or other source) name.
        source_name: String,
        /// What was wrong and what was expected.
        what: String,
    },
    /// The file's results schema version is not one this build reads.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// A tolerance string could not be parsed.
    #[error("invalid tolerance `{0}`: expected a percentage such as `25%` or a fraction such as `0.25`")]
    Tolerance(String),
}

/// The numbers the gate looks at, taken from one result file.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Where they came from (file name), for messages.
    pub source: String,
    /// The scenario's name, if the file has one.
    pub scenario: Option<String>,
    /// How the migration ended.
    pub outcome: Outcome,
    /// Why it was cancelled or failed.
    pub reason: Option<String>,
    /// Migration start to end, ms.
    pub total_ms: f64,
    /// VMM downtime, ms.
    pub downtime_ms: Option<f64>,
    /// Application-visible downtime, ms (scenario results only).
    pub app_downtime_ms: Option<f64>,
    /// The system under test, when the file names it (scenario results).
    pub system: Option<String>,
}

impl Measured {
    /// From migration statistics and an optional application downtime.
    pub fn from_stats(source: impl Into<String>, m: &MigrationStats, app_downtime_ms: Option<f64>) -> Self {
        Measured {
            source: source.into(),
            scenario: None,
            outcome: m.outcome,
            reason: m.reason.clone(),
            total_ms: m.total_ms,
            downtime_ms: m.downtime_ms,
            app_downtime_ms,
            system: None,
        }
    }

    /// From parsed JSON of any accepted shape (see the module docs);
    /// `source` names it in errors.
    pub fn from_value(v: &Value, source: &str) -> Result<Self, CheckError> {
        let shape = |what: String| CheckError::Shape { source_name: source.to_string(), what };
        crate::schema::check(v, source)?;
        let obj =
            v.as_object().ok_or_else(|| shape(format!("the top level is {}, not an object; {EXPECTED}", kind(v))))?;
        let (stats_v, top_level) = match obj.get("migration") {
            Some(m) => (m, true),
            None if obj.contains_key("outcome") && obj.contains_key("total_ms") => (v, false),
            None => return Err(shape(format!("no `migration` key; {EXPECTED}"))),
        };
        if !stats_v.is_object() {
            return Err(shape(format!("`migration` is {}, not an object; {EXPECTED}", kind(stats_v))));
        }
        let stats: MigrationStats = serde_json::from_value(stats_v.clone()).map_err(|e| {
            shape(format!(
                "{} is not valid migration statistics: {e}",
                if top_level { "`migration`" } else { "the object" }
            ))
        })?;
        let app = match obj.get("app_downtime_ms") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(other) => {
                return Err(shape(format!(
                    "`app_downtime_ms` is {}, expected a number of milliseconds or null",
                    kind(other)
                )))
            }
        };
        let mut m = Measured::from_stats(source, &stats, app);
        m.scenario = obj.get("scenario").and_then(Value::as_str).map(str::to_string);
        m.system = match obj.get("system") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(shape(format!("`system` is {}, expected a name such as \"qemu\" or null", kind(other))))
            }
        };
        Ok(m)
    }

    /// From JSON text; `source` names it in errors.
    pub fn from_json_str(text: &str, source: &str) -> Result<Self, CheckError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| CheckError::Parse { source_name: source.to_string(), source: e })?;
        Self::from_value(&v, source)
    }

    /// Read and parse a result file.
    pub fn load(path: &Path) -> Result<Self, CheckError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CheckError::Io { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text, &path.display().to_string())
    }
}

impl From<&ScenarioResult> for Measured {
    fn from(s: &ScenarioResult) -> Self {
        let mut m = Measured::from_stats(format!("scenario {}", s.scenario), &s.migration, s.app_downtime_ms);
        m.scenario = Some(s.scenario.clone());
        m.system = s.system.clone();
        m
    }
}

/// A JSON value's kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn not_completed(r: &Measured) -> Option<String> {
    (r.outcome != Outcome::Completed).then(|| {
        format!(
            "{}: migration {} ({}), so the guest never switched over",
            r.source,
            outcome_str(r.outcome),
            r.reason.as_deref().unwrap_or("no reason given")
        )
    })
}

/// Check fixed limits. One reason per violated limit: a value above its
/// limit, a value the result lacks, or a migration that did not complete
/// (when any limit is set).
pub fn limits(r: &Measured, max_downtime_ms: Option<f64>, max_app_downtime_ms: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if max_downtime_ms.is_none() && max_app_downtime_ms.is_none() {
        return out;
    }
    let failed = not_completed(r);
    let completed = failed.is_none();
    out.extend(failed);
    let checks = [
        ("VMM downtime", "downtime_ms", "--max-downtime-ms", r.downtime_ms, max_downtime_ms),
        (
            "application-visible downtime",
            "app_downtime_ms",
            "--max-app-downtime-ms",
            r.app_downtime_ms,
            max_app_downtime_ms,
        ),
    ];
    for (what, key, flag, value, limit) in checks {
        let Some(limit) = limit else { continue };
        match value {
            Some(v) if !v.is_finite() => out.push(format!("{what} is not a number ({v}) in {}", r.source)),
            Some(v) if v > limit => out.push(format!("{what} {v:.2} ms exceeds {flag} {limit}")),
            Some(_) => {}
            None if completed => out.push(format!(
                "{} has no {what} (`{key}`) to check against {flag}{}",
                r.source,
                if key == "app_downtime_ms" { "; only scenario results (with a probe) have it" } else { "" }
            )),
            None => {}
        }
    }
    out
}

/// Compare with a baseline: a metric regresses when
/// `result > baseline × (1 + tolerance)`. Compared: VMM downtime,
/// application-visible downtime and total migration time, each where the
/// baseline has it. One reason per regression, plus one for a migration
/// that did not complete and one for each metric the baseline has and the
/// result lacks.
pub fn against_baseline(r: &Measured, base: &Measured, tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    if !tolerance.is_finite() || tolerance < 0.0 {
        out.push(format!("tolerance {tolerance} is invalid: it must be a non-negative fraction"));
        return out;
    }
    out.extend(not_completed(r));
    let sys = |m: &Measured| m.system.clone().unwrap_or_else(|| crate::scenario::DEFAULT_SYSTEM.to_string());
    if r.system.is_some() && base.system.is_some() && sys(r) != sys(base) {
        out.push(format!(
            "{} ran on {} but the baseline {} on {}: compare a system with its own baseline",
            r.source,
            sys(r),
            base.source,
            sys(base)
        ));
    }
    let metrics = [
        ("VMM downtime", "downtime_ms", r.downtime_ms, base.downtime_ms),
        ("application-visible downtime", "app_downtime_ms", r.app_downtime_ms, base.app_downtime_ms),
        ("total migration time", "total_ms", Some(r.total_ms), Some(base.total_ms)),
    ];
    for (what, key, value, baseline) in metrics {
        let Some(b) = baseline.filter(|b| b.is_finite()) else {
            continue;
        };
        match value {
            Some(v) if !v.is_finite() => out.push(format!("{what} is not a number ({v}) in {}", r.source)),
            Some(v) if v > b * (1.0 + tolerance) => {
                let change =
                    if b > 0.0 { format!("{:+.1}%", (v / b - 1.0) * 100.0) } else { "up from zero".to_string() };
                out.push(format!(
                    "{what} regressed: {v:.2} ms against the baseline's {b:.2} ms ({change}; tolerance {:.0}%)",
                    tolerance * 100.0
                ));
            }
            Some(_) => {}
            None if r.outcome == Outcome::Completed => out
                .push(format!("{} has no {what} (`{key}`), but the baseline {} has {b:.2} ms", r.source, base.source)),
            None => {}
        }
    }
    out
}

/// Parse a tolerance: `25%` → 0.25, `0.25` → 0.25. A bare number above 1
/// is refused as ambiguous (write `150%`).
pub fn parse_tolerance(s: &str) -> Result<f64, CheckError> {
    let t = s.trim();
    let bad = || CheckError::Tolerance(s.to_string());
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map_err(|_| bad())? / 100.0
    } else {
        let v = t.parse::<f64>().map_err(|_| bad())?;
        if v > 1.0 {
            return Err(bad());
        }
        v
    };
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad())
    }
}
