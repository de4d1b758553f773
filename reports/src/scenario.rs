//! One scenario's result: the migration statistics and the probe's series on
//! one timeline, plus the numbers derived from both.
//!
//! Timelines: the VMM reports its events in ms since the migration's start,
//! and the start itself as an absolute `CLOCK_MONOTONIC` time
//! ([`MigrationStats::start_mono_ns`]); the probe reports samples in ns since
//! its own start, also given as an absolute `CLOCK_MONOTONIC` time
//! ([`ProbeResult::start_monotonic_ns`]). So an event at `e` ms after the
//! migration start lies at
//! `start_mono_ns + e·10^6 − start_monotonic_ns` ns on the probe's timeline.
//! [`ScenarioResult::timeline`] does that conversion for every event.
//!
//! Derived numbers ([`ScenarioResult::new`] computes them):
//! * **application-visible downtime**, `app_downtime_ms`: the larger of the
//!   probe's longest run of zero-byte samples ([`ProbeResult::app_downtime`])
//!   and the gap from the last byte before the guest was paused to the first
//!   byte after it ([`ProbeResult::gap_around`]). Both are measured between
//!   sample timestamps, so they are upper bounds, accurate to about one
//!   sampling interval; with traffic flowing throughout, the switchover gap
//!   is about one interval.
//! * **throughput before / during / after** the migration, the window being
//!   `[start, start + total_ms]` on the probe's timeline
//!   ([`ProbeResult::phase_rates`]).

use std::path::Path;

use results::environment::Environment;
use results::{DowntimeBreakdown, MigrationStats, Outcome};
use results::{Gap, PhaseRates, ProbeResult};
use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::schema::{self, SCHEMA_VERSION};

/// Guest page size, bytes (dirty page counts are converted with it).
pub const PAGE_SIZE: u64 = 4096;

/// A scenario's result, as written to `<scenario>.result.json` and read by
/// the report and by `migbench check`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// The results schema's version ([`crate::schema`]); always
    /// [`SCHEMA_VERSION`] when written by this build.
    #[serde(default = "crate::schema::default_version")]
    pub schema_version: u32,
    /// The scenario's name ("idle", "loaded", ...).
    pub scenario: String,
    /// A human description of the load, e.g. "minimal load" (chart panels
    /// show it beside the name).
    #[serde(default)]
    pub description: Option<String>,
    /// When the scenario ran, RFC 3339 (e.g. from [`crate::now_rfc3339`]).
    pub date: String,
    /// The machine it ran on.
    pub environment: Environment,
    /// The VMM's migration statistics.
    pub migration: MigrationStats,
    /// The HTTP probe's series, if a probe ran.
    #[serde(default)]
    pub probe: Option<ProbeResult>,
    /// Application-visible downtime, ms (see the module docs); `None`
    /// without a probe or when the probe never received a byte.
    #[serde(default)]
    pub app_downtime_ms: Option<f64>,
    /// The probe's longest run of zero-byte samples.
    #[serde(default)]
    pub app_longest_gap: Option<Gap>,
    /// The gap around the moment the guest was paused.
    #[serde(default)]
    pub app_switchover_gap: Option<Gap>,
    /// Mean probe throughput before, during and after the migration.
    #[serde(default)]
    pub throughput: Option<PhaseRates>,
    /// The system under test (`vmm-min`, `qemu`); absent in files written
    /// before systems were recorded, which all ran `vmm-min`.
    #[serde(default)]
    pub system: Option<String>,
    /// How the system ran, in words (version, accelerator and why).
    #[serde(default)]
    pub system_note: Option<String>,
    /// Launch of the source to the guest's first HTTP 200, ms.
    #[serde(default)]
    pub boot_to_http_ms: Option<f64>,
    /// The shaped link the migration crossed between simulated hosts, if any.
    #[serde(default)]
    pub link: Option<results::Link>,
}

/// The system of results that do not name one.
pub const DEFAULT_SYSTEM: &str = "vmm-min";

/// The migration's events on the probe's timeline, in seconds since the
/// probe's start (seconds since the migration's start when there is no
/// probe). Values may be negative if the migration started first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The migration's start.
    pub migration_start_s: f64,
    /// Each pre-copy round: (round number, start, end).
    pub rounds: Vec<(u32, f64, f64)>,
    /// The guest paused on the source (stop-and-copy begins).
    pub paused_s: Option<f64>,
    /// The guest resumed on the destination.
    pub resumed_s: Option<f64>,
    /// The migration's end (acknowledgement or failure).
    pub end_s: f64,
}

/// One row of the summary table: the headline numbers of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Scenario name.
    pub scenario: String,
    /// "completed", "cancelled" or "failed".
    pub outcome: String,
    /// Migration start to end, ms.
    pub total_ms: f64,
    /// Setup: migration start to the first page sent, ms.
    #[serde(default)]
    pub setup_ms: Option<f64>,
    /// The most auto-converge held the worker vCPUs off in a round, percent
    /// (`None`: not throttled).
    #[serde(default)]
    pub max_throttle_pct: Option<f64>,
    /// VMM-measured downtime, ms.
    pub downtime_ms: Option<f64>,
    /// Where the downtime went.
    pub downtime_breakdown: Option<DowntimeBreakdown>,
    /// Application-visible downtime, ms.
    pub app_downtime_ms: Option<f64>,
    /// Bytes written to the migration stream.
    pub transferred_bytes: u64,
    /// Number of pre-copy rounds.
    pub rounds: usize,
    /// Mean probe rate before the migration, Mbit/s.
    pub before_mbps: Option<f64>,
    /// Mean probe rate during the migration, Mbit/s.
    pub during_mbps: Option<f64>,
    /// Mean probe rate after the migration, Mbit/s.
    pub after_mbps: Option<f64>,
    /// Responses whose body did not match their ETag.
    pub corruptions: Option<u64>,
    /// Failed probe requests.
    pub probe_errors: Option<u64>,
    /// The system under test.
    #[serde(default)]
    pub system: String,
    /// Launch of the source to the guest's first HTTP 200, ms.
    #[serde(default)]
    pub boot_to_http_ms: Option<f64>,
    /// Memory verification: `Some(true)` identical, `Some(false)` a mismatch, `None` not run.
    #[serde(default)]
    pub verified: Option<bool>,
}

/// The outcome as the JSON spells it.
pub fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::Cancelled => "cancelled",
        Outcome::Indeterminate => "indeterminate",
        Outcome::Failed => "failed",
    }
}

/// `b − a` in ns as f64 seconds, exact for any two u64 timestamps.
fn diff_s(a: u64, b: u64) -> f64 {
    (b as i128 - a as i128) as f64 / 1e9
}

impl ScenarioResult {
    /// Build a result and compute the derived numbers from `migration` and
    /// `probe` (see the module docs). `date` is RFC 3339.
    pub fn new(
        scenario: impl Into<String>,
        date: impl Into<String>,
        environment: Environment,
        migration: MigrationStats,
        probe: Option<ProbeResult>,
    ) -> Self {
        let mut r = ScenarioResult {
            schema_version: SCHEMA_VERSION,
            scenario: scenario.into(),
            description: None,
            date: date.into(),
            environment,
            migration,
            probe,
            app_downtime_ms: None,
            app_longest_gap: None,
            app_switchover_gap: None,
            throughput: None,
            system: None,
            system_note: None,
            boot_to_http_ms: None,
            link: None,
        };
        r.recompute();
        r
    }

    /// Set the human description of the load.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Set the system under test, what to say about how it ran, and its
    /// boot time to the first HTTP 200.
    pub fn with_system(
        mut self,
        system: impl Into<String>,
        note: Option<String>,
        boot_to_http_ms: Option<f64>,
    ) -> Self {
        self.system = Some(system.into());
        self.system_note = note;
        self.boot_to_http_ms = boot_to_http_ms;
        self
    }

    /// The system under test ([`DEFAULT_SYSTEM`] when the file names none).
    pub fn system_name(&self) -> &str {
        self.system.as_deref().unwrap_or(DEFAULT_SYSTEM)
    }

    /// The same result, recording the shaped link it ran over.
    pub fn with_link(mut self, link: Option<results::Link>) -> Self {
        self.link = link;
        self
    }

    /// Recompute the derived fields from `migration` and `probe`.
    pub fn recompute(&mut self) {
        let Some(probe) = &self.probe else {
            self.app_downtime_ms = None;
            self.app_longest_gap = None;
            self.app_switchover_gap = None;
            self.throughput = None;
            return;
        };
        let m = &self.migration;
        let to_probe_ns = |ms: f64| -> u64 {
            let abs = m.start_mono_ns.saturating_add((finite(ms).max(0.0) * 1e6).round() as u64);
            // Clamp events before the probe's start to its start.
            probe.probe_time_ns(abs).unwrap_or_default()
        };
        let start = probe.probe_time_ns(m.start_mono_ns).unwrap_or_default();
        let end = to_probe_ns(m.total_ms).max(start);
        self.throughput = Some(probe.phase_rates(start, end));
        self.app_longest_gap = probe.app_downtime();
        self.app_switchover_gap = m.paused_at_ms.and_then(|p| probe.gap_around(to_probe_ns(p)));
        self.app_downtime_ms =
            [self.app_longest_gap, self.app_switchover_gap].iter().flatten().map(Gap::duration_ms).reduce(f64::max);
    }

    /// The migration's events on the probe's timeline (see [`Timeline`]).
    pub fn timeline(&self) -> Timeline {
        let m = &self.migration;
        let offset = self.probe.as_ref().map_or(0.0, |p| diff_s(p.start_monotonic_ns, m.start_mono_ns));
        let at = |ms: f64| offset + finite(ms) / 1e3;
        Timeline {
            migration_start_s: offset,
            rounds: m
                .rounds
                .iter()
                .map(|r| (r.round, at(r.start_ms), at(r.start_ms + finite(r.duration_ms).max(0.0))))
                .collect(),
            paused_s: m.paused_at_ms.map(at),
            resumed_s: m.resumed_at_ms.map(at),
            end_s: at(m.total_ms),
        }
    }

    /// The headline numbers for the summary table.
    pub fn summary_row(&self) -> SummaryRow {
        let m = &self.migration;
        let t = self.throughput.as_ref();
        SummaryRow {
            scenario: self.scenario.clone(),
            outcome: outcome_str(m.outcome).to_string(),
            total_ms: m.total_ms,
            setup_ms: m.setup_ms,
            max_throttle_pct: m.rounds.iter().filter_map(|r| r.throttle_pct).reduce(f64::max),
            downtime_ms: m.downtime_ms,
            downtime_breakdown: m.downtime_breakdown.clone(),
            app_downtime_ms: self.app_downtime_ms,
            transferred_bytes: m.transferred_bytes,
            rounds: m.rounds.len(),
            before_mbps: t.map(|t| t.before.mean_mbps),
            during_mbps: t.map(|t| t.during.mean_mbps),
            after_mbps: t.map(|t| t.after.mean_mbps),
            corruptions: self.probe.as_ref().map(|p| p.summary.corruptions),
            probe_errors: self.probe.as_ref().map(|p| p.summary.errors),
            system: self.system_name().to_string(),
            boot_to_http_ms: self.boot_to_http_ms,
            verified: m.verify.as_ref().map(|v| v.ok),
        }
    }

    /// The load description to show: [`Self::description`], or a default
    /// for the two classic scenarios ("idle", "loaded").
    pub fn load_label(&self) -> Option<String> {
        self.description.clone().or_else(|| match self.scenario.as_str() {
            "idle" => Some("minimal load".to_string()),
            "loaded" => Some("heavily loaded".to_string()),
            _ => None,
        })
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self)
            .map_err(|source| ReportError::Json { what: format!("scenario `{}`", self.scenario), source })
    }

    /// Read a result written by [`Self::save_json`]; a file of a schema
    /// version this build does not read is refused ([`ReportError::Schema`]).
    pub fn load_json(path: &Path) -> Result<Self, ReportError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
        let what = || format!("{} (expected a scenario result)", path.display());
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ReportError::Json { what: what(), source })?;
        schema::check(&v, &path.display().to_string())?;
        let mut r: Self = serde_json::from_value(v).map_err(|source| ReportError::Json { what: what(), source })?;
        // Read as this version from here on (an older one was upgraded above).
        r.schema_version = SCHEMA_VERSION;
        Ok(r)
    }

    /// Write [`Self::to_json`] to `path`.
    pub fn save_json(&self, path: &Path) -> Result<(), ReportError> {
        std::fs::write(path, self.to_json()?).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
    }
}

/// `v` if finite, else 0.
pub(crate) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}
