//! `report.md` and the self-contained `report.html`.
//!
//! [`write_report`] renders every chart (SVG + PNG) into a folder, saves
//! each scenario's [`ScenarioResult`] as `<name>.result.json`, and writes:
//! * `report.md`: the summary table, the charts (linked as files beside it),
//!   per-round tables, probe details, the environment, and the
//!   microbenchmark table when a [`BenchReport`] is given;
//! * `report.html`: the same document rendered from Markdown
//!   (pulldown-cmark), with the PNG charts embedded as `data:` URIs, so the
//!   one file can be mailed or attached to a CI run. Raw HTML coming from
//!   the inputs is escaped, never passed through.
//!
//! The documents depend only on the results (no clock is read), so
//! [`write_report_from_dir`] (`migbench report DIR`) regenerates the same
//! `report.md` from the raw JSON in a results folder, without rewriting it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use results::bench::BenchReport;
use results::environment::Environment;

use crate::charts::{self, Chart};
use crate::error::ReportError;
use crate::scenario::{ScenarioResult, SummaryRow, PAGE_SIZE};

/// Which chart a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// [`charts::rate_progress`] of one scenario.
    RateProgress,
    /// [`charts::comparison`] of several scenarios.
    Comparison,
    /// [`charts::precopy_rounds`] of one scenario.
    PrecopyRounds,
    /// [`charts::relative::relative_performance`] of the microbenchmarks.
    Relative,
}

/// Where one chart went.
#[derive(Debug, Clone)]
pub struct ChartPaths {
    /// Which chart.
    pub kind: ChartKind,
    /// The scenario it shows (`None` for the comparison).
    pub scenario: Option<String>,
    /// The SVG file.
    pub svg: PathBuf,
    /// The PNG file.
    pub png: PathBuf,
}

/// Everything [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// The folder.
    pub dir: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Every chart, in report order.
    pub charts: Vec<ChartPaths>,
    /// Each scenario's `<name>.result.json`, in input order.
    pub results: Vec<PathBuf>,
}

impl ReportPaths {
    /// Every file written.
    pub fn all(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.markdown, &self.html];
        for c in &self.charts {
            v.push(&c.svg);
            v.push(&c.png);
        }
        v.extend(self.results.iter().map(PathBuf::as_path));
        v
    }
}

/// A chart rendered for the report, with its file stem.
struct Rendered {
    kind: ChartKind,
    scenario: Option<String>,
    /// The result's slug (which scenario of which system).
    slug: Option<String>,
    stem: String,
    alt: String,
    chart: Chart,
}

/// A file-name-safe version of `name` (ASCII letters, digits, `-`, `_`).
pub fn slug(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() {
        "scenario".to_string()
    } else {
        s
    }
}

/// The file slug of a scenario's result on a system: the scenario's name
/// for `vmm-min` (as before systems were recorded), `SYSTEM-NAME` for any
/// other (`qemu-idle`).
pub fn result_slug(system: &str, scenario: &str) -> String {
    if system == crate::scenario::DEFAULT_SYSTEM {
        slug(scenario)
    } else {
        slug(&format!("{system}-{scenario}"))
    }
}

/// A system under test that did not run, and why (`reproduce --systems`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedSystem {
    /// Its name (`qemu`).
    pub system: String,
    /// Why, and what to do (`qemu-system-x86_64 not found: apt-get install qemu-system-x86`).
    pub reason: String,
}

/// The file a results folder lists its skipped systems in.
pub const SKIPPED_FILE: &str = "skipped-systems.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct SkippedFile {
    #[serde(default = "crate::schema::default_version")]
    schema_version: u32,
    skipped: Vec<SkippedSystem>,
}

/// Writes `skipped` to `dir/`[`SKIPPED_FILE`] (removes the file when it
/// is empty), so that the report, and `migbench report DIR` later, list them.
pub fn save_skipped(dir: &Path, skipped: &[SkippedSystem]) -> Result<(), ReportError> {
    if skipped.is_empty() {
        let _ = std::fs::remove_file(dir.join(SKIPPED_FILE));
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let f = SkippedFile { schema_version: crate::schema::SCHEMA_VERSION, skipped: skipped.to_vec() };
    let json = serde_json::to_string_pretty(&f)
        .map_err(|source| ReportError::Json { what: "the skipped systems".into(), source })?;
    write_file(&dir.join(SKIPPED_FILE), json.as_bytes())
}

/// The skipped systems recorded in `dir` (none when the file is absent).
pub fn load_skipped(dir: &Path) -> Result<Vec<SkippedSystem>, ReportError> {
    let path = dir.join(SKIPPED_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Io { path: path.clone(), source })?;
    let what = || format!("{} (expected the skipped systems)", path.display());
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ReportError::Json { what: what(), source })?;
    crate::schema::check(&v, &path.display().to_string())?;
    let f: SkippedFile = serde_json::from_value(v).map_err(|source| ReportError::Json { what: what(), source })?;
    Ok(f.skipped)
}

/// The systems of `scenarios`, in order of first appearance.
pub fn systems_of(scenarios: &[ScenarioResult]) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for s in scenarios {
        if !v.contains(&s.system_name()) {
            v.push(s.system_name());
        }
    }
    v
}

/// The rows of the comparison figure: per system (in order of first
/// appearance), the panels [`comparison_panels`] picks from its scenarios;
/// systems with fewer than two scenarios with a probe have no row.
pub fn comparison_rows(scenarios: &[ScenarioResult]) -> Vec<Vec<&ScenarioResult>> {
    systems_of(scenarios)
        .into_iter()
        .map(|sys| {
            let own: Vec<&ScenarioResult> = scenarios.iter().filter(|s| s.system_name() == sys).collect();
            pick_panels(&own)
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The scenarios the comparison figure shows: "idle" and "loaded" when both
/// have probe series, else the first two that have one; empty when fewer
/// than two have one.
pub fn comparison_panels(scenarios: &[ScenarioResult]) -> Vec<&ScenarioResult> {
    pick_panels(&scenarios.iter().collect::<Vec<_>>())
}

fn pick_panels<'a>(scenarios: &[&'a ScenarioResult]) -> Vec<&'a ScenarioResult> {
    let with_probe: Vec<&ScenarioResult> = scenarios.iter().copied().filter(|s| s.probe.is_some()).collect();
    let find = |n: &str| with_probe.iter().copied().find(|s| s.scenario == n);
    if let (Some(i), Some(l)) = (find("idle"), find("loaded")) {
        return vec![i, l];
    }
    if with_probe.len() >= 2 {
        with_probe[..2].to_vec()
    } else {
        Vec::new()
    }
}

/// Write the whole report into `dir` (created if missing): charts, result
/// JSON files, `report.md` and `report.html`. `bench` adds the
/// microbenchmark table (save it with [`save_bench`] beside the results so
/// that [`write_report_from_dir`] finds it).
pub fn write_report(
    dir: &Path,
    scenarios: &[ScenarioResult],
    bench: Option<&BenchReport>,
) -> Result<ReportPaths, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let slugs = unique_slugs(scenarios);
    let mut results = Vec::new();
    for (s, sl) in scenarios.iter().zip(&slugs) {
        let p = dir.join(format!("{sl}.result.json"));
        s.save_json(&p)?;
        results.push(p);
    }
    write_documents(dir, scenarios, &slugs, bench, results)
}

/// The file a results folder keeps the microbenchmarks in.
pub const BENCH_FILE: &str = "bench.json";
/// The suffix of a scenario result's file name.
pub const RESULT_SUFFIX: &str = ".result.json";

/// Write `bench` as JSON (with `schema_version`) to `path`.
pub fn save_bench(path: &Path, bench: &BenchReport) -> Result<(), ReportError> {
    let json = serde_json::to_value(bench)
        .and_then(|v| serde_json::to_string_pretty(&crate::schema::stamp(v)))
        .map_err(|source| ReportError::Json { what: "the microbenchmark report".into(), source })?;
    write_file(path, json.as_bytes())
}

/// Read microbenchmarks written by [`save_bench`] (or by `migbench bench
/// --json`); a schema version this build does not read is refused.
pub fn load_bench(path: &Path) -> Result<BenchReport, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
    let what = || format!("{} (expected microbenchmark results)", path.display());
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ReportError::Json { what: what(), source })?;
    crate::schema::check(&v, &path.display().to_string())?;
    serde_json::from_value(v).map_err(|source| ReportError::Json { what: what(), source })
}

/// The scenario results in a results folder (`*.result.json`), ordered by
/// when they ran (then by name), each with its file's slug.
pub fn load_results_dir(dir: &Path) -> Result<Vec<(String, ScenarioResult)>, ReportError> {
    let io = |source| ReportError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(slug) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(RESULT_SUFFIX)) else {
            continue;
        };
        let slug = slug.to_string();
        out.push((slug, ScenarioResult::load_json(&path)?));
    }
    out.sort_by(|a, b| (&a.1.date, &a.1.scenario, &a.0).cmp(&(&b.1.date, &b.1.scenario, &b.0)));
    Ok(out)
}

/// `migbench report DIR`: regenerate `report.md`, `report.html` and the
/// charts in `dir` from the raw JSON there (`*.result.json` and, if present,
/// `bench.json`), without running anything and without rewriting the JSON.
pub fn write_report_from_dir(dir: &Path) -> Result<ReportPaths, ReportError> {
    let loaded = load_results_dir(dir)?;
    let bench_path = dir.join(BENCH_FILE);
    let bench = bench_path.exists().then(|| load_bench(&bench_path)).transpose()?;
    if loaded.is_empty() && bench.is_none() {
        return Err(ReportError::NoResults {
            dir: dir.to_path_buf(),
            what: format!(
                "no `*{RESULT_SUFFIX}` and no `{BENCH_FILE}` here: give the folder a `migbench reproduce` or \
                 `migbench scenario` run wrote"
            ),
        });
    }
    let results = loaded.iter().map(|(sl, _)| dir.join(format!("{sl}{RESULT_SUFFIX}"))).collect();
    let (slugs, scenarios): (Vec<String>, Vec<ScenarioResult>) = loaded.into_iter().unzip();
    write_documents(dir, &scenarios, &slugs, bench.as_ref(), results)
}

/// File-name-safe, unique slugs for `scenarios`, even for equal (or equally
/// sanitized) names.
fn unique_slugs(scenarios: &[ScenarioResult]) -> Vec<String> {
    let mut slugs: Vec<String> = Vec::new();
    for s in scenarios {
        let base = result_slug(s.system_name(), &s.scenario);
        let mut cand = base.clone();
        let mut k = 2;
        while slugs.contains(&cand) {
            cand = format!("{base}-{k}");
            k += 1;
        }
        slugs.push(cand);
    }
    slugs
}

/// The data URI of a PNG.
pub(crate) fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// Charts, `report.md` and `report.html` for `scenarios` (files named by
/// `slugs`) into `dir`.
fn write_documents(
    dir: &Path,
    scenarios: &[ScenarioResult],
    slugs: &[String],
    bench: Option<&BenchReport>,
    results: Vec<PathBuf>,
) -> Result<ReportPaths, ReportError> {
    let mut rendered: Vec<Rendered> = Vec::new();
    let rows = comparison_rows(scenarios);
    if !rows.is_empty() {
        let multi = rows.len() > 1;
        rendered.push(Rendered {
            kind: ChartKind::Comparison,
            scenario: None,
            slug: None,
            stem: "rate-comparison".into(),
            alt: format!(
                "{}: {}",
                charts::RATE_TITLE,
                rows.iter()
                    .flatten()
                    .map(|s| if multi { format!("{} {}", s.system_name(), s.scenario) } else { s.scenario.clone() })
                    .collect::<Vec<_>>()
                    .join(" vs ")
            ),
            chart: charts::comparison_grid(&rows)?,
        });
    }
    for (s, sl) in scenarios.iter().zip(slugs) {
        if s.probe.is_some() {
            rendered.push(Rendered {
                kind: ChartKind::RateProgress,
                scenario: Some(s.scenario.clone()),
                slug: Some(sl.clone()),
                stem: format!("rate-{sl}"),
                alt: format!("{}: {}", charts::RATE_TITLE, s.scenario),
                chart: charts::rate_progress(s)?,
            });
        }
        rendered.push(Rendered {
            kind: ChartKind::PrecopyRounds,
            scenario: Some(s.scenario.clone()),
            slug: Some(sl.clone()),
            stem: format!("rounds-{sl}"),
            alt: format!("{}: {}", charts::ROUNDS_TITLE, s.scenario),
            chart: charts::precopy_rounds(s)?,
        });
    }
    if let Some(m) = bench.and_then(|b| b.macro_bench.as_ref()) {
        rendered.push(Rendered {
            kind: ChartKind::Relative,
            scenario: None,
            slug: None,
            stem: "relative".into(),
            alt: charts::relative::RELATIVE_TITLE.into(),
            chart: charts::relative::relative_performance(m)?,
        });
    }

    let mut chart_paths = Vec::new();
    for r in &rendered {
        let (svg, png) = r.chart.write(dir, &r.stem)?;
        chart_paths.push(ChartPaths { kind: r.kind, scenario: r.scenario.clone(), svg, png });
    }

    // A cross-check saved beside the results (`migbench bench crosscheck
    // --json DIR/crosscheck.json`) gets its own section; empty otherwise.
    let crosscheck = bench_suites::crosscheck::section_for_dir(dir);
    let skipped = load_skipped(dir)?;
    let doc = Doc { scenarios, slugs, skipped: &skipped, bench, rendered: &rendered };
    let md = markdown(&doc, &|r: &Rendered| format!("{}.png", r.stem), true) + &crosscheck;
    let md_path = dir.join("report.md");
    write_file(&md_path, md.as_bytes())?;

    let md_inline = markdown(&doc, &|r: &Rendered| png_data_uri(&r.chart.png), false) + &crosscheck;
    let html = html_page("migbench report", &md_inline);
    let html_path = dir.join("report.html");
    write_file(&html_path, html.as_bytes())?;

    Ok(ReportPaths { dir: dir.to_path_buf(), markdown: md_path, html: html_path, charts: chart_paths, results })
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

/// Escape text for Markdown (inline text and table cells).
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2} ms"))
}

fn opt_mbps(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} Mbit/s"))
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

/// The summary table, one column per scenario (and system, when the rows
/// come from more than one or from another than vmm-min), one row per metric.
pub fn summary_table(rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    let by_system = rows.iter().any(|r| !r.system.is_empty() && r.system != crate::scenario::DEFAULT_SYSTEM);
    out.push_str("| metric |");
    for r in rows {
        let head = if by_system { format!("{} ({})", r.scenario, r.system) } else { r.scenario.clone() };
        let _ = write!(out, " {} |", md_escape(&head));
    }
    out.push_str("\n|---|");
    for _ in rows {
        out.push_str("---:|");
    }
    out.push('\n');
    type Cell = fn(&SummaryRow) -> String;
    let mut metrics: Vec<(&str, Cell)> = vec![
        ("outcome", |r| r.outcome.clone()),
        ("boot to first HTTP 200", |r| opt_ms(r.boot_to_http_ms)),
        ("total migration time", |r| format!("{:.2} ms", r.total_ms)),
        ("setup (start to the first page sent)", |r| opt_ms(r.setup_ms)),
        ("auto-converge: most throttled round", |r| {
            r.max_throttle_pct.map_or_else(|| "off".to_string(), |p| format!("{p:.0}% held off"))
        }),
        ("VMM downtime", |r| opt_ms(r.downtime_ms)),
        ("… pause vCPUs", |r| opt_ms(r.downtime_breakdown.as_ref().map(|b| b.pause_ms))),
        ("… final copy", |r| opt_ms(r.downtime_breakdown.as_ref().map(|b| b.final_copy_ms))),
        ("… send state", |r| opt_ms(r.downtime_breakdown.as_ref().map(|b| b.state_ms))),
        ("… restore on destination", |r| opt_ms(r.downtime_breakdown.as_ref().map(|b| b.restore_ms))),
        ("… resume on destination", |r| opt_ms(r.downtime_breakdown.as_ref().map(|b| b.resume_ms))),
        ("application-visible downtime", |r| opt_ms(r.app_downtime_ms)),
        ("bytes transferred", |r| {
            format!("{:.1} MB ({} bytes)", r.transferred_bytes as f64 / 1e6, r.transferred_bytes)
        }),
        ("pre-copy rounds", |r| r.rounds.to_string()),
        ("probe throughput before", |r| opt_mbps(r.before_mbps)),
        ("probe throughput during", |r| opt_mbps(r.during_mbps)),
        ("probe throughput after", |r| opt_mbps(r.after_mbps)),
        ("data corruptions (ETag mismatches)", |r| opt_u64(r.corruptions)),
        ("probe request errors", |r| opt_u64(r.probe_errors)),
        ("memory verification", |r| {
            match r.verified {
                Some(true) => "identical",
                Some(false) => "MISMATCH",
                None => "not run",
            }
            .to_string()
        }),
    ];
    if by_system {
        metrics.insert(0, ("system", |r| r.system.clone()));
    }
    for (name, f) in metrics {
        let _ = write!(out, "| {name} |");
        for r in rows {
            let _ = write!(out, " {} |", md_escape(&f(r)));
        }
        out.push('\n');
    }
    out
}

/// The environment as a Markdown bullet list.
pub fn environment_list(e: &Environment) -> String {
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not measured",
    };
    let mut out = String::new();
    let items = [
        ("CPU", if e.cpu_model.is_empty() { "unknown".to_string() } else { e.cpu_model.clone() }),
        (
            "CPUs",
            format!(
                "{} logical{}{}",
                e.logical_cpus,
                e.physical_cores.map(|c| format!(", {c} physical cores")).unwrap_or_default(),
                e.usable_cpus.map(|c| format!(", {c} usable by this process")).unwrap_or_default()
            ),
        ),
        ("memory", format!("{:.1} GiB", e.memory_bytes as f64 / (1u64 << 30) as f64)),
        (
            "kernel",
            match (e.kernel_version.as_str(), e.kernel_long_version.as_str()) {
                ("", "") => "unknown".to_string(),
                (v, "") => v.to_string(),
                (v, l) => format!("{v} ({l})"),
            },
        ),
        (
            "OS",
            match format!("{} {}", e.os, e.arch).trim() {
                "" => "unknown".to_string(),
                t => t.to_string(),
            },
        ),
        ("host is itself a VM", yn(e.host_is_virtualized).to_string()),
        (
            "KVM",
            format!(
                "{}; /dev/kvm {}{}",
                if e.kvm.flavour.is_empty() { "unknown" } else { &e.kvm.flavour },
                if e.kvm.dev_kvm {
                    if e.kvm.dev_kvm_accessible {
                        "present and accessible"
                    } else {
                        "present, not accessible"
                    }
                } else {
                    "absent"
                },
                e.kvm.nested.as_ref().map(|n| format!("; nested={n}")).unwrap_or_default()
            ),
        ),
        ("guest ring 0 emulated", yn(e.guest_ring0_emulated).to_string()),
    ];
    for (k, v) in items {
        let _ = writeln!(out, "- **{k}:** {}", md_escape(&v));
    }
    out
}

/// The per-round table of one scenario.
fn rounds_table(s: &ScenarioResult) -> String {
    let m = &s.migration;
    let mut out = String::from(
        "| round | start (ms) | duration (ms) | pages sent | zero pages | MB sent | MB dirtied | rate (Mbit/s) | rate limit (Mbit/s) | dirty rate (pages/s) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &m.rounds {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.0} |",
            r.round,
            r.start_ms,
            r.duration_ms,
            r.pages_sent,
            r.zero_pages,
            r.bytes as f64 / 1e6,
            (r.dirty_pages * PAGE_SIZE) as f64 / 1e6,
            r.rate_mbps,
            r.rate_limit_mbps.map_or_else(|| "none".to_string(), |l| format!("{l:.0}")),
            r.dirty_rate_pages_s
        );
    }
    let _ = writeln!(
        out,
        "| stop-and-copy | {} | | {} | | | | | | |",
        m.paused_at_ms.map_or_else(|| "n/a".to_string(), |p| format!("{p:.1}")),
        m.final_pages
    );
    out
}

fn scenario_section(s: &ScenarioResult) -> String {
    let m = &s.migration;
    let mut out = String::new();
    let policy = serde_json::to_string(&m.policy).unwrap_or_else(|_| "?".into());
    let _ = writeln!(
        out,
        "- **date:** {}\n- **outcome:** {}{}\n- **policy:** `{}`\n- **stop reason:** {}\n- **guest RAM:** {:.0} MiB\n- **switchover:** paused at {}, resumed at {} (ms after the migration start)",
        md_escape(&s.date),
        crate::scenario::outcome_str(m.outcome),
        m.reason
            .as_ref()
            .map(|r| format!(" ({})", md_escape(r)))
            .unwrap_or_default(),
        policy.replace('`', "'"),
        md_escape(m.stop_reason.as_deref().unwrap_or("n/a")),
        m.ram_bytes as f64 / (1u64 << 20) as f64,
        m.paused_at_ms
            .map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}")),
        m.resumed_at_ms
            .map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}")),
    );
    if s.system.is_some() {
        let _ = writeln!(
            out,
            "- **system:** {}{}",
            md_escape(s.system_name()),
            s.system_note.as_ref().map(|n| format!(" ({})", md_escape(n))).unwrap_or_default()
        );
    }
    let _ = writeln!(out, "- **thread priority:** {}", md_escape(&thread_priority_text(s)));
    if let Some(b) = s.boot_to_http_ms {
        let _ = writeln!(out, "- **boot:** launch of the source to the guest's first HTTP 200 in {b:.0} ms");
    }
    if let Some(v) = &m.verify {
        let _ = writeln!(
            out,
            "- **memory verification:** {} (source {:.1} ms, destination {:.1} ms, outside the downtime)",
            if v.ok { "identical" } else { "MISMATCH" },
            v.source_ms,
            v.destination_ms
        );
    }
    if let Some(p) = &s.probe {
        let sm = &p.summary;
        let _ = writeln!(
            out,
            "- **probe:** {} connections to {}, one sample every {:.1} ms, {} samples over {:.2} s; {} requests ({} verified, {} corrupted, {} unverified), {} errors ({} timeouts), {} reconnects; request latency p50 {:.2} ms, p99 {:.2} ms; sampler jitter p99 {} µs, {} late ticks",
            p.connections,
            md_escape(&p.url),
            p.interval_ns as f64 / 1e6,
            sm.samples,
            sm.duration_ns as f64 / 1e9,
            sm.requests,
            sm.verified,
            sm.corruptions,
            sm.unverified,
            sm.errors,
            sm.timeouts,
            sm.reconnects,
            sm.latency_us.p50 as f64 / 1e3,
            sm.latency_us.p99 as f64 / 1e3,
            sm.jitter_us.p99_abs,
            sm.jitter_us.late_ticks
        );
        let gap = |g: Option<results::Gap>| {
            g.map_or_else(
                || "none".to_string(),
                |g| {
                    format!(
                        "{:.1} ms ({} zero samples{})",
                        g.duration_ms(),
                        g.zero_samples,
                        if g.recovered() { "" } else { ", never recovered" }
                    )
                },
            )
        };
        let _ = writeln!(
            out,
            "- **application-visible gaps:** longest zero-byte run {}; around the switchover {}",
            gap(s.app_longest_gap),
            gap(s.app_switchover_gap)
        );
    } else {
        out.push_str("- **probe:** none ran, so there is no transfer-rate chart for this scenario\n");
    }
    if let Some(l) = &s.link {
        link_lines(&mut out, s, l);
    }
    out.push('\n');
    out.push_str(&rounds_table(s));
    out
}

/// The priorities the system under test set on its threads, as the
/// migration recorded them; for a system that sets none, what its threads
/// run at.
pub fn thread_priority_text(s: &ScenarioResult) -> String {
    match &s.migration.thread_priorities {
        Some(p) => format!("{} (set by the VMM itself; the threads not listed, worker vCPUs included, keep the process's nice)", p.describe()),
        None if s.system_name() == crate::scenario::DEFAULT_SYSTEM => "not recorded in this result".to_owned(),
        None => format!(
            "n/a: migbench sets no priority on {}'s threads; they run at the default, the nice they inherit (0 unless migbench was started niced)",
            s.system_name()
        ),
    }
}

/// What the Markdown document is made of.
struct Doc<'a> {
    scenarios: &'a [ScenarioResult],
    slugs: &'a [String],
    skipped: &'a [SkippedSystem],
    bench: Option<&'a BenchReport>,
    rendered: &'a [Rendered],
}

/// The "Systems under test" list: each system that ran, with its note, and
/// each skipped one with the reason.
fn systems_section(doc: &Doc) -> String {
    let mut out = String::from("## Systems under test\n\n");
    for sys in systems_of(doc.scenarios) {
        let runs: Vec<&ScenarioResult> = doc.scenarios.iter().filter(|s| s.system_name() == sys).collect();
        let mut notes: Vec<&str> = runs.iter().filter_map(|s| s.system_note.as_deref()).collect();
        notes.dedup();
        let _ = writeln!(
            out,
            "- **{}:** ran {}{}",
            md_escape(sys),
            runs.iter().map(|s| md_escape(&s.scenario)).collect::<Vec<_>>().join(", "),
            if notes.is_empty() { String::new() } else { format!("; {}", md_escape(&notes.join("; "))) }
        );
    }
    for k in doc.skipped {
        let _ = writeln!(out, "- **{}:** skipped: {}", md_escape(&k.system), md_escape(&k.reason));
    }
    out.push('\n');
    out
}

/// The link's lines: what it was, the time its rate needs for the bytes
/// sent beside the migration's, and the 2006 talk's time scale.
fn link_lines(out: &mut String, s: &ScenarioResult, l: &results::Link) {
    let m = &s.migration;
    let _ = writeln!(out, "- **link:** {} between simulated source and destination hosts", md_escape(&l.describe()));
    match l.time_ms(m.transferred_bytes) {
        Some(link_ms) => {
            let _ = writeln!(
                out,
                "- **transport limit:** the {:.1} MB sent take {:.0} ms at the link's rate; the migration took {:.0} ms, {:.2} × the link time",
                m.transferred_bytes as f64 / 1e6,
                link_ms,
                m.total_ms,
                m.total_ms / link_ms.max(1e-9)
            );
            if let Some(ram_ms) = l.time_ms(m.ram_bytes) {
                let _ = writeln!(
                    out,
                    "- **against the 2006 talk** (Xen 2.0.7, 512 MB guest, gigabit Ethernet; as read there, the idle migration is barely visible in the rate and the loaded one is a longer dip): here the migration took {:.2} s, the guest was paused {} and the application saw {}; all {:.0} MiB of RAM at this rate would take {:.2} s, the talk's time scale (Xen 2.0.7 sent every page, our round 0 sends never-touched pages as zero markers)",
                    m.total_ms / 1e3,
                    m.downtime_ms.map_or_else(|| "n/a".to_string(), |d| format!("{d:.0} ms")),
                    s.app_downtime_ms.map_or_else(|| "no gap measured (n/a: no probe)".to_string(), |d| format!("a gap of {d:.0} ms")),
                    m.ram_bytes as f64 / (1u64 << 20) as f64,
                    ram_ms / 1e3
                );
            }
        }
        None => out.push_str("- **transport limit:** n/a (the link sets no bandwidth)\n"),
    }
}

/// The whole Markdown document. `src` gives each chart's image address;
/// `svg_links` adds links to the SVG files beside the report.
fn markdown(doc: &Doc, src: &dyn Fn(&Rendered) -> String, svg_links: bool) -> String {
    let Doc { scenarios, slugs, bench, rendered, .. } = *doc;
    let mut out = String::new();
    out.push_str("# migbench report\n\n");
    let _ = writeln!(
        out,
        "Scenarios: {}. `migbench report DIR` regenerates this report from the raw JSON beside it \
         (`*{RESULT_SUFFIX}`, `{BENCH_FILE}`; results schema version {}).\n",
        if scenarios.is_empty() {
            "none".to_string()
        } else {
            scenarios
                .iter()
                .map(|s| format!("{} (ran {})", md_escape(&s.scenario), md_escape(&s.date)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        crate::schema::SCHEMA_VERSION
    );
    let image = |out: &mut String, r: &Rendered| {
        let _ = writeln!(out, "![{}]({})\n", md_escape(&r.alt), src(r));
        if svg_links {
            let _ = writeln!(out, "Vector version: [{0}.svg]({0}.svg)\n", r.stem);
        }
    };

    let systems = systems_of(scenarios);
    let several = systems.len() > 1 || systems.iter().any(|s| *s != crate::scenario::DEFAULT_SYSTEM);
    if several || !doc.skipped.is_empty() {
        out.push_str(&systems_section(doc));
    }

    if !scenarios.is_empty() {
        out.push_str("## Summary\n\n");
        let rows: Vec<SummaryRow> = scenarios.iter().map(ScenarioResult::summary_row).collect();
        out.push_str(&summary_table(&rows));
        out.push_str(
            "\nVMM downtime: the guest's last instruction on the source to its first on the destination, \
as the VMM measures it (memory verification excluded). Application-visible downtime: the larger of the \
probe's longest run of zero-byte samples and the gap from the last byte before the pause to the first \
byte after it; both are measured between sample timestamps, so they are upper bounds accurate to about \
one sampling interval. Throughput before/during/after: the probe's mean rate before the migration \
start, between the start and the end (acknowledgement), and after the end. MB = 10^6 bytes; \
Mbit/s = 10^6 bit/s.\n\n",
        );
        if systems.contains(&"qemu") {
            out.push_str(
                "On qemu, VMM downtime is the source's STOP event to the destination's RESUME event, each \
timestamped on receipt with the host's monotonic clock (memory verification excluded); setup and total are \
QEMU's own `setup-time` and `total-time`; the rounds come from `query-migrate` polled every 50 ms (a change \
of `dirty-sync-count` starts one), so the downtime breakdown is n/a.\n\n",
            );
        }
    }

    if let Some(r) = rendered.iter().find(|r| r.kind == ChartKind::Comparison) {
        out.push_str("## Transmission rate progress, side by side\n\n");
        image(&mut out, r);
    }

    for (s, sl) in scenarios.iter().zip(slugs) {
        if several {
            let _ = writeln!(out, "## Scenario: {} ({})\n", md_escape(&s.scenario), md_escape(s.system_name()));
        } else {
            let _ = writeln!(out, "## Scenario: {}\n", md_escape(&s.scenario));
        }
        if let Some(l) = s.load_label() {
            let _ = writeln!(out, "Load: {}\n", md_escape(&l));
        }
        for r in rendered.iter().filter(|r| r.slug.as_deref() == Some(sl.as_str())) {
            image(&mut out, r);
        }
        out.push_str(&scenario_section(s));
        out.push('\n');
    }

    if let Some(first) = scenarios.first() {
        out.push_str("## Environment\n\n");
        out.push_str(&environment_list(&first.environment));
        for s in &scenarios[1..] {
            if s.environment != first.environment {
                let _ = writeln!(out, "\nScenario {} ran on a different machine:\n", md_escape(&s.scenario));
                out.push_str(&environment_list(&s.environment));
            }
        }
        out.push('\n');
    }

    if let Some(b) = bench {
        out.push_str("## Microbenchmarks: native against the guest\n\n");
        out.push_str(&bench_suites::table::markdown(b));
        out.push('\n');
        // Under the relative-performance table, which has the heading.
        if let Some(r) = rendered.iter().find(|r| r.kind == ChartKind::Relative) {
            image(&mut out, r);
        }
        if scenarios.is_empty() {
            out.push_str("## Environment\n\n");
            out.push_str(&environment_list(&b.env));
        }
    }
    out
}

/// Render Markdown to a complete HTML page; raw HTML in the Markdown is
/// shown as text.
pub fn html_page(title: &str, md: &str) -> String {
    use pulldown_cmark::{html, Event, Options, Parser};
    let parser = Parser::new_ext(md, Options::ENABLE_TABLES).map(|e| match e {
        Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
        e => e,
    });
    let mut body = String::new();
    html::push_html(&mut body, parser);
    let mut title_esc = String::new();
    for c in title.chars() {
        match c {
            '<' => title_esc.push_str("&lt;"),
            '>' => title_esc.push_str("&gt;"),
            '&' => title_esc.push_str("&amp;"),
            _ => title_esc.push(c),
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title_esc}</title>\n<style>\n\
body {{ font-family: sans-serif; max-width: 1500px; margin: 2em auto; padding: 0 1em; color: #222; }}\n\
table {{ border-collapse: collapse; margin: 1em 0; }}\n\
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; }}\n\
th {{ background: #eef; }}\n\
tr:nth-child(even) td {{ background: #f8f8f8; }}\n\
img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}\n\
code {{ background: #f2f2f2; padding: 0 0.2em; }}\n\
</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}
