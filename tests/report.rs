//! The report as a person sees it, through the real `migbench` binary:
//! `report DIR` regenerates a results folder's report from its JSON,
//! `report --baseline` and `check --baseline --html` write the regression
//! view, files of an unknown schema version are refused, and the HTML report
//! of a real `reproduce --quick` run renders in headless Chromium (every
//! chart decoded, the summary table present) from a lone copy of the file.

mod common;

use common::{root_or_skip, run_with_limit, stderr, temp_path};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A fresh folder holding the committed sample run's raw JSON.
fn sample_folder(name: &str) -> PathBuf {
    let dir = temp_path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sample-report");
    for f in ["idle.result.json", "loaded.result.json", "bench.json"] {
        std::fs::copy(sample.join(f), dir.join(f)).expect("copy sample JSON");
    }
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_dir_regenerates_from_json_and_draws_the_regression_view() {
    let a = sample_folder("report-a");
    let out = run_with_limit(&["report", a.to_str().expect("path")], Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let md = read(&a.join("report.md"));
    for want in
        ["## Summary", "![Live migration – transmission rate progress: loaded](rate-loaded.png)", "## Microbenchmarks"]
    {
        assert!(md.contains(want), "report.md lacks `{want}`");
    }
    // Same JSON, same Markdown.
    let out = run_with_limit(&["report", a.to_str().expect("path")], Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(&a.join("report.md")), md);

    // A new run whose loaded downtime is 50% longer, against the sample as baseline.
    let b = sample_folder("report-b");
    let p = b.join("loaded.result.json");
    let mut v: serde_json::Value = serde_json::from_str(&read(&p)).expect("json");
    let d = v["migration"]["downtime_ms"].as_f64().expect("downtime");
    v["migration"]["downtime_ms"] = serde_json::json!(d * 1.5);
    std::fs::write(&p, serde_json::to_string(&v).expect("json")).expect("write");
    let out = run_with_limit(
        &["report", "--baseline", a.to_str().expect("path"), b.to_str().expect("path")],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for f in
        ["regression.md", "regression.html", "regression-idle.png", "regression-loaded.png", "regression-loaded.svg"]
    {
        assert!(b.join(f).exists(), "{f} missing");
    }
    let reg = read(&b.join("regression.md"));
    let row = reg.lines().filter(|l| l.starts_with("| VMM downtime |")).nth(1).expect("loaded's downtime row");
    assert!(row.contains("+50.0%"), "{row}");

    // check --html: the gate fails (50% > 25%) and writes the page.
    let html = b.join("ci/gate.html");
    std::fs::create_dir_all(b.join("ci")).expect("mkdir");
    let out = run_with_limit(
        &[
            "check",
            p.to_str().expect("path"),
            "--baseline",
            a.join("loaded.result.json").to_str().expect("path"),
            "--tolerance",
            "25%",
            "--html",
            html.to_str().expect("path"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("VMM downtime regressed"), "{}", stderr(&out));
    let page = read(&html);
    assert!(page.contains("Gate: FAIL") && page.contains("VMM downtime regressed"), "verdict missing");
    assert!(page.contains("src=\"data:image/png;base64,"), "overlay not inline");
    assert!(b.join("ci/gate-loaded.png").exists());
    for d in [a, b] {
        std::fs::remove_dir_all(d).expect("cleanup");
    }
}

#[test]
fn report_and_check_refuse_an_unknown_schema_version() {
    let dir = sample_folder("schema");
    let p = dir.join("idle.result.json");
    let mut v: serde_json::Value = serde_json::from_str(&read(&p)).expect("json");
    v["schema_version"] = serde_json::json!(999);
    std::fs::write(&p, serde_json::to_string(&v).expect("json")).expect("write");
    let want = "results schema version 999 is not supported";
    let out = run_with_limit(&["report", dir.to_str().expect("path")], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(want) && stderr(&out).contains("idle.result.json"), "{}", stderr(&out));
    assert!(!dir.join("report.md").exists());
    let out =
        run_with_limit(&["check", p.to_str().expect("path"), "--max-downtime-ms", "1000"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).expect("cleanup");
}

/// The page headless Chromium loads: the report in a frame, and a script
/// that writes what it found into `#verdict` for `--dump-dom` to print.
const CHECKER: &str = r#"<!DOCTYPE html>
<html><body><pre id="verdict">pending</pre>
<iframe id="f" src="REPORT" style="width:1400px;height:900px"></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const imgs = Array.from(d.images);
  const external = Array.from(d.querySelectorAll('[src], link[href]'))
    .map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !u.startsWith('data:'));
  const h2 = Array.from(d.querySelectorAll('h2')).find(h => h.textContent.trim() === 'Summary');
  let table = h2 ? h2.nextElementSibling : null;
  while (table && table.tagName !== 'TABLE') table = table.nextElementSibling;
  const cells = table ? Array.from(table.querySelectorAll('tbody tr')).map(r => r.cells[0].textContent.trim()) : [];
  document.getElementById('verdict').textContent = 'VERDICT ' + JSON.stringify({
    images: imgs.length,
    rendered: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
    sizes: imgs.map(i => i.naturalWidth + 'x' + i.naturalHeight),
    external: external,
    summary_rows: cells,
    title: d.title
  });
});
</script></body></html>
"#;

/// Chromium, or a failure that says how to install it.
fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(p) = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(c))
            .find(|p| p.is_file())
        {
            return p;
        }
    }
    panic!("this test needs Chromium: install it with `apt-get install -y chromium` (.ci/run does)");
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn reproduce_quick_report_renders_in_headless_chromium() {
    if !root_or_skip("reproduce_quick_report_renders_in_headless_chromium") {
        return;
    }
    let browser = chromium();
    let results = temp_path("reproduce-quick");
    let out =
        run_with_limit(&["reproduce", "--quick", "--out", results.to_str().expect("path")], Duration::from_secs(600));
    assert!(out.status.success(), "reproduce --quick failed:\n{}", stderr(&out));
    let report = results.join("report.html");
    let md = read(&results.join("report.md"));
    let charts_in_md = md.lines().filter(|l| l.starts_with("![") && l.ends_with(".png)")).count();
    assert!(charts_in_md >= 5, "report.md shows {charts_in_md} charts");
    // Every scenario says how its threads were prioritized: vmm-min's as
    // its VMMs recorded it on both sides, QEMU's as n/a (issue 11).
    let sections: Vec<&str> = md.split("\n## Scenario: ").skip(1).collect();
    assert!(!sections.is_empty(), "no scenario sections: {md}");
    for sec in sections {
        let head = sec.lines().next().unwrap_or_default();
        let line =
            sec.lines().find(|l| l.starts_with("- **thread priority:** ")).unwrap_or_else(|| panic!("{head}: {sec}"));
        if head.ends_with("(qemu)") {
            assert!(line.contains("n/a: migbench sets no priority on qemu's threads"), "{head}: {line}");
        } else {
            assert!(
                line.contains("source: ")
                    && line.contains("migration send nice -5")
                    && line.contains("migration receive nice -5"),
                "{head}: {line}"
            );
        }
    }

    // A lone copy of the file: it must need nothing beside it.
    let lone = temp_path("lone");
    std::fs::create_dir_all(&lone).expect("mkdir");
    std::fs::copy(&report, lone.join("report.html")).expect("copy");
    std::fs::write(lone.join("checker.html"), CHECKER.replace("REPORT", "report.html")).expect("checker");
    let profile = temp_path("chromium-profile");
    let dom = headless(&profile)
        .args(["--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("file://{}", lone.join("checker.html").display()))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", browser.display()));
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let json = dom_text
        .split("VERDICT ")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("no verdict in the DOM:\n{dom_text}\n{}", String::from_utf8_lossy(&dom.stderr)));
    let json = json.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("verdict `{json}`: {e}"));
    eprintln!("chromium verdict: {v}");
    let images = v["images"].as_u64().expect("images");
    assert_eq!(images as usize, charts_in_md, "the HTML shows another number of charts than report.md");
    assert_eq!(v["rendered"], v["images"], "a chart did not render: {v}");
    for s in v["sizes"].as_array().expect("sizes") {
        let (w, h) = s.as_str().and_then(|s| s.split_once('x')).expect("WxH");
        assert!(w.parse::<u32>().expect("w") >= 1000 && h.parse::<u32>().expect("h") >= 600, "chart {s}");
    }
    assert_eq!(v["external"], serde_json::json!([]), "the report loads files from outside itself");
    let rows: Vec<&str> = v["summary_rows"].as_array().expect("rows").iter().filter_map(|r| r.as_str()).collect();
    for want in ["outcome", "VMM downtime", "application-visible downtime", "setup (start to the first page sent)"] {
        assert!(rows.contains(&want), "summary table lacks `{want}`: {rows:?}");
    }

    // A screenshot of the report, into the results folder.
    let shot = results.join("report-screenshot.png");
    let s = headless(&profile)
        .args(["--window-size=1400,3000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", lone.join("report.html").display()))
        .output()
        .expect("chromium screenshot");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&s.stderr));
    let f = std::fs::File::open(&shot).expect("screenshot");
    let mut r = png::Decoder::new(std::io::BufReader::new(f)).read_info().expect("screenshot is a PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("frame");
    assert_eq!((info.width, info.height), (1400, 3000));
    let px = &buf[..info.buffer_size()];
    let ch = info.color_type.samples();
    let inked = px.chunks(ch).filter(|p| p[0] < 200 || p[1] < 200 || p[2] < 200).count();
    assert!(inked > px.len() / ch / 50, "the screenshot is nearly blank ({inked} px)");
    eprintln!("screenshot: {}", shot.display());

    // MIGBENCH_TEST_KEEP=1 keeps the results folder (with the screenshot) for a person to look at.
    if std::env::var_os("MIGBENCH_TEST_KEEP").is_some() {
        eprintln!("kept {}", results.display());
    } else {
        let _ = std::fs::remove_dir_all(&results);
    }
    for d in [lone, profile] {
        let _ = std::fs::remove_dir_all(d);
    }
}
