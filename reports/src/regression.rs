//! The regression view: a baseline run and a new one side by side, for a
//! CI job to publish as an artifact.
//!
//! For each scenario present in both, [`write_regression`] draws
//! [`charts::overlay`] (both runs on the same axes) and writes the table of
//! both runs' numbers with the deltas, into `regression.md` and a
//! self-contained `regression.html` (charts as `data:` URIs). The verdict of
//! the CI gate (`migbench check --baseline … --html OUT`), when given, heads
//! the page. Results without a probe series (the JSON of `migbench migrate
//! --json`) get the table and say why there is no overlay.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::charts;
use crate::check::Measured;
use crate::error::ReportError;
use crate::report::{html_page, md_escape, png_data_uri, slug, write_file};
use crate::scenario::ScenarioResult;

/// One side of a comparison: a full scenario result, or only the numbers
/// the gate reads (for files that are not scenario results).
#[derive(Debug, Clone)]
pub enum Side {
    /// A scenario result (with its probe series, if one ran).
    Scenario(Box<ScenarioResult>),
    /// The gate's numbers only.
    Measured(Measured),
}

impl Side {
    /// Where it came from, for the table header.
    fn label(&self) -> String {
        match self {
            Side::Scenario(s) => s.date.clone(),
            Side::Measured(m) => m.source.clone(),
        }
    }

    /// (metric, value, unit) rows; `None` where the result lacks one.
    fn metrics(&self) -> Vec<(&'static str, Option<f64>, &'static str)> {
        match self {
            Side::Scenario(s) => {
                let r = s.summary_row();
                let b = r.downtime_breakdown.as_ref();
                vec![
                    ("VMM downtime", r.downtime_ms, "ms"),
                    ("… final copy", b.map(|b| b.final_copy_ms), "ms"),
                    ("… restore on destination", b.map(|b| b.restore_ms), "ms"),
                    ("application-visible downtime", r.app_downtime_ms, "ms"),
                    ("total migration time", Some(r.total_ms), "ms"),
                    ("bytes transferred", Some(r.transferred_bytes as f64 / 1e6), "MB"),
                    ("pre-copy rounds", Some(r.rounds as f64), ""),
                    ("probe throughput before", r.before_mbps, "Mbit/s"),
                    ("probe throughput during", r.during_mbps, "Mbit/s"),
                    ("probe throughput after", r.after_mbps, "Mbit/s"),
                ]
            }
            Side::Measured(m) => vec![
                ("VMM downtime", m.downtime_ms, "ms"),
                ("application-visible downtime", m.app_downtime_ms, "ms"),
                ("total migration time", Some(m.total_ms), "ms"),
            ],
        }
    }

    fn scenario(&self) -> Option<&ScenarioResult> {
        match self {
            Side::Scenario(s) => Some(s),
            Side::Measured(_) => None,
        }
    }
}

/// One scenario's baseline and new run.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The scenario's name.
    pub name: String,
    /// The baseline.
    pub base: Side,
    /// The new run.
    pub new: Side,
}

/// Everything [`write_regression`] wrote.
#[derive(Debug, Clone)]
pub struct RegressionPaths {
    /// `regression.md` (charts linked as files beside it).
    pub markdown: PathBuf,
    /// The self-contained HTML page.
    pub html: PathBuf,
    /// Each overlay's (SVG, PNG).
    pub overlays: Vec<(PathBuf, PathBuf)>,
}

fn num(v: f64, unit: &str) -> String {
    let s = if unit.is_empty() { format!("{v:.0}") } else { format!("{v:.2} {unit}") };
    s.trim_end().to_string()
}

/// The table of both runs with the deltas, as Markdown.
pub fn delta_table(p: &Pair) -> String {
    let mut out = format!(
        "| metric | baseline ({}) | new ({}) | change | change % |\n|---|---:|---:|---:|---:|\n",
        md_escape(&p.base.label()),
        md_escape(&p.new.label())
    );
    let base = p.base.metrics();
    for (name, v, unit) in p.new.metrics() {
        let b = base.iter().find(|m| m.0 == name).and_then(|m| m.1);
        let cell = |x: Option<f64>| x.filter(|x| x.is_finite()).map_or_else(|| "n/a".to_string(), |x| num(x, unit));
        let (d, pct) = match (b.filter(|b| b.is_finite()), v.filter(|v| v.is_finite())) {
            (Some(b), Some(v)) => (
                format!("{}{}", if v >= b { "+" } else { "" }, num(v - b, unit)),
                if b != 0.0 { format!("{:+.1}%", (v / b - 1.0) * 100.0) } else { "n/a (baseline 0)".into() },
            ),
            _ => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            md_escape(&cell(b)),
            md_escape(&cell(v)),
            md_escape(&d),
            md_escape(&pct)
        );
    }
    out
}

/// Write `regression.md`, `regression.html` and one overlay chart per pair
/// into `dir`. `verdict`: the gate's violations (empty: it passed), or
/// `None` when no gate ran.
pub fn write_regression(
    dir: &Path,
    pairs: &[Pair],
    verdict: Option<&[String]>,
) -> Result<RegressionPaths, ReportError> {
    write_regression_as(dir, "regression", pairs, verdict)
}

/// [`write_regression`] with the documents named `<stem>.md` and
/// `<stem>.html` (the overlays are `<stem>-<scenario>.svg/png`).
pub fn write_regression_as(
    dir: &Path,
    stem: &str,
    pairs: &[Pair],
    verdict: Option<&[String]>,
) -> Result<RegressionPaths, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let mut md_files = String::new();
    let mut md_inline = String::new();
    let head = header(pairs, verdict);
    md_files.push_str(&head);
    md_inline.push_str(&head);
    let mut overlays = Vec::new();
    for p in pairs {
        let section = format!("## Scenario: {}\n\n", md_escape(&p.name));
        md_files.push_str(&section);
        md_inline.push_str(&section);
        match (p.base.scenario(), p.new.scenario()) {
            (Some(b), Some(n)) if b.probe.is_some() && n.probe.is_some() => {
                let chart = charts::overlay(b, n)?;
                let chart_stem = format!("{stem}-{}", slug(&p.name));
                let paths = chart.write(dir, &chart_stem)?;
                let alt = format!("{}: {}", charts::OVERLAY_TITLE, md_escape(&p.name));
                let _ = writeln!(
                    md_files,
                    "![{alt}]({chart_stem}.png)\n\nVector version: [{chart_stem}.svg]({chart_stem}.svg)\n"
                );
                let _ = writeln!(md_inline, "![{alt}]({})\n", png_data_uri(&chart.png));
                overlays.push(paths);
            }
            _ => {
                let why = "No overlay: it needs both runs' probe series, and at least one of these files is not a \
                           scenario result with one (e.g. the JSON of `migbench migrate --json`).\n\n";
                md_files.push_str(why);
                md_inline.push_str(why);
            }
        }
        let table = delta_table(p);
        md_files.push_str(&table);
        md_inline.push_str(&table);
        md_files.push('\n');
        md_inline.push('\n');
    }
    let markdown = dir.join(format!("{stem}.md"));
    write_file(&markdown, md_files.as_bytes())?;
    let html = dir.join(format!("{stem}.html"));
    write_file(&html, html_page("migbench regression view", &md_inline).as_bytes())?;
    Ok(RegressionPaths { markdown, html, overlays })
}

fn header(pairs: &[Pair], verdict: Option<&[String]>) -> String {
    let mut out = String::from("# migbench regression view\n\n");
    let _ = writeln!(
        out,
        "Baseline against new run for {}. Change = new − baseline; for downtimes and times, lower is better.\n",
        if pairs.is_empty() {
            "no scenario".to_string()
        } else {
            pairs.iter().map(|p| md_escape(&p.name)).collect::<Vec<_>>().join(", ")
        }
    );
    match verdict {
        Some([]) => out.push_str("**Gate: PASS** (no regression beyond the tolerance).\n\n"),
        Some(v) => {
            out.push_str("**Gate: FAIL**\n\n");
            for l in v {
                let _ = writeln!(out, "- {}", md_escape(l));
            }
            out.push('\n');
        }
        None => {}
    }
    out
}

/// Pair the scenarios of two results folders by name: (pairs, names found
/// only in the new folder, names found only in the baseline).
pub fn pair_folders(base: Vec<ScenarioResult>, new: Vec<ScenarioResult>) -> (Vec<Pair>, Vec<String>, Vec<String>) {
    let mut base: Vec<Option<ScenarioResult>> = base.into_iter().map(Some).collect();
    let mut pairs = Vec::new();
    let mut only_new = Vec::new();
    for n in new {
        match base.iter_mut().find(|b| b.as_ref().is_some_and(|b| b.scenario == n.scenario)).and_then(Option::take) {
            Some(b) => pairs.push(Pair {
                name: n.scenario.clone(),
                base: Side::Scenario(Box::new(b)),
                new: Side::Scenario(Box::new(n)),
            }),
            None => only_new.push(n.scenario),
        }
    }
    let only_base = base.into_iter().flatten().map(|b| b.scenario).collect();
    (pairs, only_new, only_base)
}
