//! The microbenchmark results: what every suite produces and the table,
//! the report and `check` read.
//!
//! This module owns [`Row`] (one measurement, or "n/a" with a reason, and
//! always the exact method) and [`BenchReport`] (the environment and the
//! native and guest rows of one run, and the rows of further systems'
//! guests, [`SystemRows`]), with their JSON form. The guest side
//! produces rows with the same ids and units as the native side.

use serde::{Deserialize, Serialize};

use crate::environment::Environment;

/// Unit of latency rows: microseconds.
pub const UNIT_US: &str = "µs";
/// Unit of bandwidth rows: megabytes per second, MB = 10^6 bytes.
pub const UNIT_MBS: &str = "MB/s";
/// Unit of the ttcp rows: mebibits per second, 2^20 bits per second, the
/// unit of ttcp's `-f m` output and (we conclude) of the Xen paper's Table 6.
pub const UNIT_MIBITS: &str = "Mibit/s";
/// Unit of a relative-performance bar: the score divided by native's.
pub const UNIT_RELATIVE: &str = "× native";

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Stable snake_case id ("null_call", "ctx_2p_0k", "mem_lat_1m", ...).
    pub id: String,
    /// Human label for the table.
    pub label: String,
    /// Unit of `value` ([`UNIT_US`] or [`UNIT_MBS`]).
    pub unit: String,
    /// The value, or `None` when not measured.
    pub value: Option<f64>,
    /// Why there is no value (set exactly when `value` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub na_reason: Option<String>,
    /// Exactly what was measured, and how.
    pub method: String,
}

impl Row {
    /// A measured row.
    pub fn measured(id: &str, label: &str, unit: &str, value: f64, method: String) -> Self {
        Row {
            id: id.to_string(),
            label: label.to_string(),
            unit: unit.to_string(),
            value: Some(value),
            na_reason: None,
            method,
        }
    }

    /// A row that could not be measured.
    pub fn na(id: &str, label: &str, unit: &str, reason: String, method: String) -> Self {
        Row {
            id: id.to_string(),
            label: label.to_string(),
            unit: unit.to_string(),
            value: None,
            na_reason: Some(reason),
            method,
        }
    }

    /// True when the row is either a finite, positive measurement or "n/a"
    /// with a non-empty reason.
    pub fn is_well_formed(&self) -> bool {
        match (self.value, &self.na_reason) {
            (Some(v), None) => v.is_finite() && v > 0.0,
            (None, Some(r)) => !r.trim().is_empty(),
            _ => false,
        }
    }
}

/// A whole result set: where it ran, and the native and guest rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine the native rows ran on (and the VMM's findings).
    pub env: Environment,
    /// Rows measured in a host process.
    #[serde(default)]
    pub native: Vec<Row>,
    /// Rows measured in the built-in guest's ring 3, the vmm-min column
    /// (empty when that guest did not run).
    #[serde(default)]
    pub guest: Vec<Row>,
    /// The native suite run inside other systems' guests, one column each,
    /// with the same row ids as `native`: today the QEMU Linux guest
    /// (`system: "qemu"`, its label naming the accelerator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<SystemRows>,
    /// The ttcp table (the Xen paper's Table 6): one entry per system,
    /// rows `ttcp_{tx,rx}_{1500,500}` in [`UNIT_MIBITS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ttcp: Vec<SystemRows>,
    /// The relative-performance figure (the Xen paper's Figure 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_bench: Option<MacroReport>,
}

/// The rows one system under test produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemRows {
    /// Stable id: `native`, `vmm-min`, `qemu`.
    pub system: String,
    /// Column heading, naming the accelerator where there is one.
    pub label: String,
    /// The rows.
    pub rows: Vec<Row>,
}

/// One bar of the relative-performance figure: a workload on a system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MacroBar {
    /// The system (`native`, `vmm-min`, `qemu`).
    pub system: String,
    /// The raw score (higher is better), in `unit`; `None` when n/a.
    pub score: Option<f64>,
    /// Unit of `score`, e.g. "bogo ops/s".
    pub unit: String,
    /// `score` divided by the native score of the same workload
    /// ([`UNIT_RELATIVE`]); 1.0 for native itself.
    pub relative: Option<f64>,
    /// Why there is no score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub na_reason: Option<String>,
    /// Exactly what ran.
    pub method: String,
}

/// One group of bars: a stand-in workload and what it replaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MacroWorkload {
    /// Stable id (`cpu`, `build`, `fs`, `web`).
    pub id: String,
    /// Label under the group.
    pub label: String,
    /// The paper's workload this stands in for, e.g. "SPEC INT2000".
    pub stands_for: String,
    /// One bar per system, native first.
    pub bars: Vec<MacroBar>,
}

/// The relative-performance figure's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MacroReport {
    /// The systems, in bar order, with their labels.
    pub systems: Vec<(String, String)>,
    /// The workload groups, in the paper's order.
    pub workloads: Vec<MacroWorkload>,
}

impl BenchReport {
    /// Pretty JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// Parse JSON written by [`BenchReport::to_json`].
    pub fn from_json(s: &str) -> serde_json::Result<Self> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_well_formedness() {
        assert!(Row::measured("a", "A", UNIT_US, 1.0, "m".into()).is_well_formed());
        assert!(!Row::measured("a", "A", UNIT_US, 0.0, "m".into()).is_well_formed());
        assert!(!Row::measured("a", "A", UNIT_US, f64::NAN, "m".into()).is_well_formed());
        assert!(Row::na("a", "A", UNIT_US, "why".into(), "m".into()).is_well_formed());
        assert!(!Row::na("a", "A", UNIT_US, " ".into(), "m".into()).is_well_formed());
    }

    #[test]
    fn report_json_round_trip() {
        let r = BenchReport {
            env: Environment::default(),
            native: vec![
                Row::measured("null_call", "null call", UNIT_US, 0.05, "getppid".into()),
                Row::na("fork_sh", "sh", UNIT_US, "no /bin/sh".into(), "fork+exec sh".into()),
            ],
            ..Default::default()
        };
        let j = r.to_json().unwrap();
        assert_eq!(BenchReport::from_json(&j).unwrap(), r);
        // A report without a guest section parses too.
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let mut obj = v.as_object().unwrap().clone();
        obj.remove("guest");
        let back: BenchReport = serde_json::from_value(serde_json::Value::Object(obj)).unwrap();
        assert!(back.guest.is_empty());
    }
}
