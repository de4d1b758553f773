//! Charts (plotters) and tables (Markdown/HTML) from raw migbench results,
//! and the CI downtime gate.
//!
//! * [`scenario`]: [`ScenarioResult`], one scenario's migration statistics
//!   and probe series on one timeline, with the derived numbers
//!   (application-visible downtime, throughput before/during/after) and its
//!   [`SummaryRow`].
//! * [`charts`]: "Live migration – transmission rate progress" per scenario
//!   (with a zoom panel of ±250 ms around the pause), the side-by-side
//!   comparison (idle vs loaded), the pre-copy rounds chart and the
//!   regression overlay; each as SVG and PNG (text drawn with an embedded
//!   font, so no system fonts are needed).
//! * [`report`]: [`write_report`], which writes the charts, `report.md` and
//!   a self-contained `report.html`, and [`write_report_from_dir`], which
//!   regenerates them from a results folder's JSON.
//! * [`regression`]: a baseline and a new run overlaid, with the table of
//!   both and the deltas (`regression.md`, `regression.html`).
//! * [`check`]: limits and baseline comparison for `migbench check`.
//! * [`schema`]: the results schema's version, carried by every result JSON
//!   and checked on reading.
//!
//! ```no_run
//! # fn f(results: Vec<reports::ScenarioResult>) -> Result<(), reports::ReportError> {
//! let paths = reports::write_report(std::path::Path::new("results/x"), &results, None)?;
//! println!("report: {}", paths.html.display());
//! # Ok(()) }
//! ```

pub mod charts;
pub mod check;
pub mod error;
pub mod regression;
pub mod report;
pub mod scenario;
pub mod schema;

use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ReportError;
pub use report::{write_report, write_report_from_dir, ChartKind, ChartPaths, ReportPaths};
pub use scenario::{ScenarioResult, SummaryRow, Timeline};

/// `t` as RFC 3339 in UTC with whole seconds, e.g. `2026-11-26T07:41:23Z`.
/// Times before the Unix epoch print as the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The current time as [`rfc3339_utc`].
pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 12:34:56 UTC
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339_utc(t), "2000-02-29T12:34:56Z");
        // 2026-11-26 07:41:23 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_678_883);
        assert_eq!(rfc3339_utc(t), "2026-11-26T07:41:23Z");
        assert_eq!(now_rfc3339().len(), 20);
    }
}
