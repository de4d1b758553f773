//! The report end to end on synthetic results: every file is written, the
//! PNGs decode (with readable-looking text), the SVGs parse and carry their
//! titles, report.md names the downtime, report.html is self-contained.

mod common;

use std::path::Path;

use reports::{charts, write_report, ChartKind, ScenarioResult};

/// Decode a PNG; returns (width, height, RGB(A) pixels, channels).
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>, usize) {
    let f = std::fs::File::open(path).expect("open png");
    let dec = png::Decoder::new(std::io::BufReader::new(f));
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    (info.width, info.height, buf, channels)
}

/// Dark pixels (all channels < 100) in rows `rows` of an image.
fn dark_pixels(w: u32, px: &[u8], ch: usize, rows: std::ops::Range<u32>) -> usize {
    let mut n = 0;
    for y in rows {
        for x in 0..w {
            let i = (y * w + x) as usize * ch;
            if px[i] < 100 && px[i + 1] < 100 && px[i + 2] < 100 {
                n += 1;
            }
        }
    }
    n
}

fn check_png(path: &Path) {
    let size = std::fs::metadata(path).expect("png exists").len();
    assert!(size > 20_000, "{} is only {size} bytes", path.display());
    let (w, h, px, ch) = decode_png(path);
    assert!(w >= 1000 && h >= 600, "{}: {w}x{h}", path.display());
    // The heading (top 80 px) holds the title in dark text: the embedded
    // font rendered. Without a font it would be blank.
    let title_ink = dark_pixels(w, &px, ch, 0..80);
    assert!(title_ink > 800, "{}: title has {title_ink} dark pixels", path.display());
    // The picture is not mostly blank.
    let non_white = px.chunks(ch).filter(|p| p[0] < 245 || p[1] < 245 || p[2] < 245).count();
    assert!(non_white > (w * h / 20) as usize, "{}: {non_white} non-white px", path.display());
}

/// Parse an SVG and return all of its text content.
fn svg_text(path: &Path) -> String {
    let s = std::fs::read_to_string(path).expect("svg");
    let doc = roxmltree::Document::parse(&s).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect::<Vec<_>>().join("\n")
}

#[test]
fn derived_numbers_use_one_timeline() {
    let s = common::idle();
    let tl = s.timeline();
    assert!((tl.migration_start_s - 4.0).abs() < 1e-9);
    let paused = tl.paused_s.expect("paused");
    let resumed = tl.resumed_s.expect("resumed");
    assert!((resumed - paused - common::IDLE_DOWNTIME_MS / 1e3).abs() < 1e-9);
    assert_eq!(tl.rounds.len(), 2);
    assert!((tl.rounds[1].1 - 6.0).abs() < 1e-9);

    // The probe saw nothing from the pause to resume + 20 ms: about 61 ms,
    // measured between sample timestamps (upper bound, ≤ 1 interval more).
    let app = s.app_downtime_ms.expect("app downtime");
    let expected = common::IDLE_DOWNTIME_MS + 20.0;
    assert!(app >= expected - 1.0 && app <= expected + 21.0, "app downtime {app}");
    let sw = s.app_switchover_gap.expect("switchover gap");
    assert!(sw.zero_samples >= 4, "{sw:?}");

    let t = s.throughput.expect("throughput");
    assert!((t.before.mean_mbps - 900.0).abs() < 15.0, "{t:?}");
    assert!(t.during.mean_mbps < 880.0 && t.during.mean_mbps > 700.0, "{t:?}");
    assert!((t.after.mean_mbps - 900.0).abs() < 15.0, "{t:?}");
    assert!(t.before.samples > 350 && t.after.samples > 300);

    let row = s.summary_row();
    assert_eq!(row.scenario, "idle");
    assert_eq!(row.outcome, "completed");
    assert_eq!(row.rounds, 2);
    assert_eq!(row.downtime_ms, Some(common::IDLE_DOWNTIME_MS));
    assert_eq!(row.corruptions, Some(0));
    assert_eq!(row.app_downtime_ms, s.app_downtime_ms);

    // JSON round trip keeps everything.
    let j = s.to_json().expect("json");
    let back: ScenarioResult = serde_json::from_str(&j).expect("parse back");
    assert_eq!(back.app_downtime_ms, s.app_downtime_ms);
    assert_eq!(back.probe.as_ref().map(|p| p.samples.len()), Some(1000));
}

#[test]
fn migration_started_before_the_probe_is_clamped() {
    let mut s = common::idle();
    if let Some(p) = s.probe.as_mut() {
        p.start_monotonic_ns += 6_000_000_000; // probe started 2 s after the migration
    }
    s.recompute();
    let tl = s.timeline();
    assert!((tl.migration_start_s + 2.0).abs() < 1e-9);
    let t = s.throughput.expect("throughput");
    assert_eq!(t.before.samples, 0);
    // Charts still draw (x axis extends to the negative start).
    charts::rate_progress(&s).expect("chart");
}

#[test]
fn full_report_has_every_file_and_they_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenarios = vec![common::idle(), common::loaded()];
    let bench = bench_suites::BenchReport {
        env: common::env(),
        native: vec![bench_suites::Row::measured(
            "null_call",
            "null call",
            bench_suites::UNIT_US,
            0.1,
            "getppid".into(),
        )],
        ..Default::default()
    };
    // REPORTS_KEEP_DIR=/some/dir keeps the sample report for a person to look at.
    let out = match std::env::var_os("REPORTS_KEEP_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => dir.path().join("nested/report"),
    };
    let paths = write_report(&out, &scenarios, Some(&bench)).expect("report");

    for p in paths.all() {
        assert!(p.is_file(), "missing {}", p.display());
        assert!(p.starts_with(&out));
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "report.md",
        "report.html",
        "rate-comparison.svg",
        "rate-comparison.png",
        "rate-idle.svg",
        "rate-idle.png",
        "rate-loaded.svg",
        "rate-loaded.png",
        "rounds-idle.svg",
        "rounds-idle.png",
        "rounds-loaded.svg",
        "rounds-loaded.png",
        "idle.result.json",
        "loaded.result.json",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert_eq!(paths.charts.len(), 5);
    assert_eq!(paths.charts.iter().filter(|c| c.kind == ChartKind::RateProgress).count(), 2);

    for c in &paths.charts {
        check_png(&c.png);
        let text = svg_text(&c.svg);
        match c.kind {
            ChartKind::RateProgress | ChartKind::Comparison => {
                assert!(text.contains(charts::RATE_TITLE), "{}: {text}", c.svg.display());
                assert!(text.contains("transfer rate (Mbit/s)"));
                assert!(text.contains("time since probe start (s)"));
                assert!(text.contains("stop-and-copy"));
                assert!(text.contains("migration start"));
            }
            ChartKind::PrecopyRounds => {
                assert!(text.contains(charts::ROUNDS_TITLE), "{text}");
                assert!(text.contains("MB sent"));
                assert!(text.contains("rate (Mbit/s)"));
            }
            ChartKind::Relative => panic!("no relative-performance chart without macro results"),
        }
        if let Some(name) = &c.scenario {
            assert!(text.contains(name.as_str()));
            assert!(text.contains("2026-11-26"), "the date is in the title");
        }
    }
    let cmp = paths.charts.iter().find(|c| c.kind == ChartKind::Comparison).expect("comparison");
    let text = svg_text(&cmp.svg);
    assert!(text.contains("minimal load") && text.contains("heavily loaded"));

    // report.md names the downtimes and the other summary numbers.
    let md = std::fs::read_to_string(&paths.markdown).expect("md");
    assert!(md.contains("| VMM downtime | 41.25 ms | 387.50 ms |"), "{md}");
    let app = scenarios[0].app_downtime_ms.expect("app");
    assert!(md.contains(&format!("{app:.2} ms")));
    for s in [
        "application-visible downtime",
        "… final copy",
        "bytes transferred",
        "pre-copy rounds",
        "probe throughput before",
        "probe throughput during",
        "probe throughput after",
        "data corruptions",
        "![Live migration – transmission rate progress: idle](rate-idle.png)",
        "rounds-loaded.png",
        "## Environment",
        "Synthetic CPU @ 2.4GHz",
        "## Microbenchmarks",
        "| null_call | null call |",
    ] {
        assert!(md.contains(s), "report.md lacks {s:?}");
    }

    // report.html is self-contained: every src= is a data: URI.
    let html = std::fs::read_to_string(&paths.html).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<table>"));
    assert!(html.contains("41.25 ms"));
    let srcs: Vec<&str> = html.split("src=\"").skip(1).collect();
    assert_eq!(srcs.len(), 5, "one image per chart");
    for s in srcs {
        assert!(s.starts_with("data:image/png;base64,"), "external src: {}", &s[..40.min(s.len())]);
    }
    assert!(!html.contains("href=\"http"));
    assert!(!html.contains("<link"));
    assert!(!html.contains("<script"));

    // The result files feed `check`.
    let m = reports::check::Measured::load(&paths.results[1]).expect("check input");
    assert_eq!(m.scenario.as_deref(), Some("loaded"));
    assert_eq!(m.downtime_ms, Some(common::LOADED_DOWNTIME_MS));
    assert_eq!(m.app_downtime_ms, scenarios[1].app_downtime_ms);
    let back = ScenarioResult::load_json(&paths.results[0]).expect("load");
    assert_eq!(back.scenario, "idle");
}

#[test]
fn scenario_without_probe_and_hostile_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = common::loaded();
    s.probe = None;
    s.recompute();
    s.scenario = "<script>alert(1)</script> | x".into();
    assert_eq!(s.app_downtime_ms, None);
    assert!(charts::rate_progress(&s).is_err());
    let mut twin = s.clone();
    twin.migration.reason = Some("<img src=http://evil/>".into());
    let paths = write_report(dir.path(), &[s, twin], None).expect("report");
    // No probe: only the rounds charts, no comparison.
    assert_eq!(paths.charts.len(), 2);
    assert!(paths.charts.iter().all(|c| c.kind == ChartKind::PrecopyRounds));
    // Slugs are file-name safe and unique.
    let stems: Vec<String> =
        paths.charts.iter().map(|c| c.png.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_ne!(stems[0], stems[1]);
    for st in &stems {
        assert!(st.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{st}");
    }
    let md = std::fs::read_to_string(&paths.markdown).expect("md");
    assert!(md.contains("none ran"));
    assert!(md.contains("| application-visible downtime | n/a | n/a |"), "{md}");
    let html = std::fs::read_to_string(&paths.html).expect("html");
    assert!(!html.contains("<script>"), "raw HTML from a name must be escaped");
    assert!(!html.contains("<img src=http"));
    for s in html.split("src=\"").skip(1) {
        assert!(s.starts_with("data:image/png;base64,"));
    }
    for c in &paths.charts {
        check_png(&c.png);
        svg_text(&c.svg);
    }
}

#[test]
fn rounds_chart_without_rounds() {
    let mut s = common::idle();
    s.migration.rounds.clear();
    s.migration.paused_at_ms = None;
    s.migration.final_pages = 0;
    let c = charts::precopy_rounds(&s).expect("chart");
    assert!(c.svg.contains("no pre-copy rounds recorded"));
    assert!(c.png.len() > 1000);
}

/// Two systems in one report: results filed per system, the 2×2 grid, a
/// column per system and scenario, each scenario's charts under its own
/// heading, the skipped system with its reason, and `report DIR` gives the
/// same document again.
#[test]
fn two_systems_side_by_side_and_a_skipped_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    // Ran after the vmm-min ones, as `reproduce` runs them (a results
    // folder is read back in the order the scenarios ran).
    let q = |mut s: ScenarioResult, date: &str| {
        s.date = date.into();
        s.with_system("qemu", Some("QEMU 7.2.22; accelerator tcg: asked for".into()), Some(4321.0))
    };
    let scenarios = vec![
        common::idle(),
        common::loaded(),
        q(common::idle(), "2026-11-26T09:00:00Z"),
        q(common::loaded(), "2026-11-26T09:01:00Z"),
    ];
    let skipped = [reports::report::SkippedSystem { system: "xen".into(), reason: "not built here".into() }];
    reports::report::save_skipped(out, &skipped).expect("skipped");
    let paths = write_report(out, &scenarios, None).expect("report");
    for f in ["idle", "loaded", "qemu-idle", "qemu-loaded"] {
        assert!(out.join(format!("{f}.result.json")).is_file(), "{f}");
        assert!(out.join(format!("rounds-{f}.png")).is_file(), "{f}");
    }
    let rows = reports::report::comparison_rows(&scenarios);
    assert_eq!(rows.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    assert_eq!((rows[0][0].system_name(), rows[1][1].system_name()), ("vmm-min", "qemu"));
    let grid = paths.charts.iter().find(|c| c.kind == ChartKind::Comparison).expect("grid");
    let (w, h, _, _) = decode_png(&grid.png);
    assert!(w >= 2000 && h >= 1900, "{w}x{h}");
    let svg = svg_text(&grid.svg);
    assert!(svg.contains("vmm-min · idle") && svg.contains("qemu · loaded"));

    let md = std::fs::read_to_string(&paths.markdown).expect("md");
    assert!(md.contains("| metric | idle (vmm-min) | loaded (vmm-min) | idle (qemu) | loaded (qemu) |"), "{md}");
    assert!(md.contains("| boot to first HTTP 200 | n/a | n/a | 4321.00 ms | 4321.00 ms |"), "{md}");
    assert!(md.contains("- **xen:** skipped: not built here"), "{md}");
    assert!(md.contains("- **qemu:** ran idle, loaded; QEMU 7.2.22; accelerator tcg: asked for"), "{md}");
    // Each scenario heading is followed by its own system's charts.
    let sec = md.split("## Scenario: idle (qemu)").nth(1).expect("qemu idle section");
    let sec = sec.split("## ").next().unwrap_or_default();
    assert!(sec.contains("(rate-qemu-idle.png)") && !sec.contains("(rate-idle.png)"), "{sec}");
    assert!(
        sec.contains(
            "- **thread priority:** n/a: migbench sets no priority on qemu's threads; they run at the default"
        ),
        "{sec}"
    );

    let again = reports::write_report_from_dir(out).expect("from dir");
    assert_eq!(std::fs::read_to_string(again.markdown).expect("md"), md);
    assert_eq!(reports::report::load_skipped(out).expect("load"), skipped);
    reports::report::save_skipped(out, &[]).expect("empty");
    assert!(!out.join(reports::report::SKIPPED_FILE).exists(), "an empty list leaves no stale file");
}
