//! Reading results back: `report DIR` regenerates the same documents from
//! the same JSON, the regression overlay of a baseline and a new run is
//! written with both runs on it, and a file of an unknown schema version is
//! refused by the report and by the gate.

mod common;

use std::path::Path;

use reports::check::{CheckError, Measured};
use reports::regression::{self, Side};
use reports::report::{load_bench, save_bench, BENCH_FILE};
use reports::{write_report, write_report_from_dir, ReportError, ScenarioResult};

fn bench() -> bench_suites::BenchReport {
    bench_suites::BenchReport {
        env: common::env(),
        native: vec![bench_suites::Row::measured(
            "null_call",
            "null call",
            bench_suites::UNIT_US,
            0.1,
            "getppid".into(),
        )],
        guest: vec![bench_suites::Row::na(
            "null_call",
            "null call",
            bench_suites::UNIT_US,
            "no guest".into(),
            "-".into(),
        )],
        ..Default::default()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_dir_reproduces_the_same_markdown_from_the_same_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let scenarios = vec![common::idle(), common::loaded()];
    save_bench(&d.join(BENCH_FILE), &bench()).expect("bench.json");
    let first = write_report(d, &scenarios, Some(&bench())).expect("report");
    let md = read(&first.markdown);
    let html = read(&first.html);
    let json_before: Vec<String> = first.results.iter().map(|p| read(p)).collect();
    assert!(md.contains("## Microbenchmarks"), "{md}");

    // Remove every generated file; only the raw JSON stays.
    std::fs::remove_file(&first.markdown).expect("rm");
    std::fs::remove_file(&first.html).expect("rm");
    for c in &first.charts {
        std::fs::remove_file(&c.svg).expect("rm");
        std::fs::remove_file(&c.png).expect("rm");
    }
    let again = write_report_from_dir(d).expect("report from dir");
    assert_eq!(read(&again.markdown), md, "report.md differs when regenerated from the JSON");
    assert_eq!(read(&again.html), html, "report.html differs when regenerated from the JSON");
    assert_eq!(again.charts.len(), first.charts.len());
    for (a, b) in again.charts.iter().zip(&first.charts) {
        assert_eq!(a.png, b.png);
        assert!(std::fs::metadata(&a.png).expect("png").len() > 20_000);
    }
    // The raw JSON is read, not rewritten.
    let json_after: Vec<String> = again.results.iter().map(|p| read(p)).collect();
    assert_eq!(json_after, json_before);
    // And it carries the schema version.
    for j in &json_after {
        let v: serde_json::Value = serde_json::from_str(j).expect("json");
        assert_eq!(v["schema_version"], serde_json::json!(reports::schema::SCHEMA_VERSION));
    }
    assert_eq!(load_bench(&d.join(BENCH_FILE)).expect("bench"), bench());
}

#[test]
fn report_dir_without_results_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = write_report_from_dir(dir.path()).expect_err("empty folder");
    assert!(matches!(e, ReportError::NoResults { .. }), "{e}");
    assert!(e.to_string().contains(".result.json"), "{e}");
}

#[test]
fn baseline_overlay_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = vec![common::idle(), common::loaded()];
    let mut slower = common::loaded();
    slower.date = "2026-11-27T09:00:00Z".into();
    let m = &mut slower.migration;
    m.resumed_at_ms = m.resumed_at_ms.map(|r| r + 100.0);
    m.downtime_ms = m.downtime_ms.map(|d| d + 100.0);
    m.total_ms += 100.0;
    slower.recompute();
    let (pairs, only_new, only_base) = regression::pair_folders(base, vec![slower]);
    assert_eq!(pairs.len(), 1);
    assert!(only_new.is_empty());
    assert_eq!(only_base, vec!["idle".to_string()]);

    let paths = regression::write_regression(dir.path(), &pairs, Some(&["VMM downtime regressed".to_string()]))
        .expect("regression view");
    assert_eq!(paths.overlays.len(), 1);
    let (svg, png) = &paths.overlays[0];
    let f = std::fs::File::open(png).expect("overlay png");
    let info = png::Decoder::new(std::io::BufReader::new(f)).read_info().expect("png").info().clone();
    assert_eq!((info.width, info.height), (1400, 1100));
    // Both runs are on it, each with its VMM pause value.
    let s = read(svg);
    let doc = roxmltree::Document::parse(&s).expect("svg is XML");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
    let base_pause = format!("baseline: VMM pause {:.1} ms", common::LOADED_DOWNTIME_MS);
    let new_pause = format!("new: VMM pause {:.1} ms", common::LOADED_DOWNTIME_MS + 100.0);
    for want in [base_pause.as_str(), new_pause.as_str()] {
        assert!(texts.contains(&want), "overlay lacks `{want}`: {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("baseline: HTTP transfer rate")), "{texts:?}");
    assert!(texts.iter().any(|t| t.starts_with("new: HTTP transfer rate")), "{texts:?}");

    // The table has both runs and the delta; the verdict heads the page.
    let md = read(&paths.markdown);
    assert!(md.contains("**Gate: FAIL**") && md.contains("VMM downtime regressed"), "{md}");
    let row = md.lines().find(|l| l.starts_with("| VMM downtime |")).expect("downtime row");
    assert!(row.contains("387.50 ms") && row.contains("487.50 ms") && row.contains("+100.00 ms"), "{row}");
    assert!(row.contains("+25.8%"), "{row}");
    assert!(md.contains("(regression-loaded.png)"), "{md}");
    // The HTML is self-contained: the overlay inline, nothing else loaded.
    let html = read(&paths.html);
    assert!(html.contains("src=\"data:image/png;base64,"), "overlay not inline");
    assert!(!html.contains("src=\"regression"), "HTML refers to a file beside it");
}

#[test]
fn overlay_of_results_without_probe_is_the_table_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = serde_json::json!({"migration": common::loaded().migration});
    let m = Measured::from_value(&v, "run.json").expect("measured");
    let pair = regression::Pair {
        name: "run".into(),
        base: Side::Measured(m.clone()),
        new: Side::Scenario(Box::new(common::loaded())),
    };
    let p = regression::write_regression(dir.path(), &[pair], None).expect("regression view");
    assert!(p.overlays.is_empty());
    let md = read(&p.markdown);
    assert!(md.contains("No overlay: it needs both runs' probe series"), "{md}");
    assert!(md.contains("| VMM downtime | 387.50 ms | 387.50 ms | +0.00 ms | +0.0% |"), "{md}");
}

#[test]
fn unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = serde_json::to_value(common::idle()).expect("json");
    v["schema_version"] = serde_json::json!(reports::schema::SCHEMA_VERSION + 1);
    let path = dir.path().join("idle.result.json");
    std::fs::write(&path, serde_json::to_string(&v).expect("json")).expect("write");

    let want = format!(
        "results schema version {} is not supported: this migbench reads versions 1 to {}",
        reports::schema::SCHEMA_VERSION + 1,
        reports::schema::SCHEMA_VERSION
    );
    // The report.
    let e = ScenarioResult::load_json(&path).expect_err("refused");
    assert!(matches!(e, ReportError::Schema(_)), "{e}");
    assert!(e.to_string().contains(&want) && e.to_string().contains("idle.result.json"), "{e}");
    let e = write_report_from_dir(dir.path()).expect_err("refused");
    assert!(e.to_string().contains(&want), "{e}");
    assert!(!dir.path().join("report.md").exists(), "a report was written from a refused file");
    // The gate.
    let e = Measured::load(&path).expect_err("refused");
    assert!(matches!(e, CheckError::Schema(_)), "{e}");
    assert!(e.to_string().contains(&want), "{e}");
    // A file without the field is version 1, read as before.
    v.as_object_mut().expect("object").remove("schema_version");
    std::fs::write(&path, serde_json::to_string(&v).expect("json")).expect("write");
    assert_eq!(ScenarioResult::load_json(&path).expect("version 1").schema_version, reports::schema::SCHEMA_VERSION);
}
