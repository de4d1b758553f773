//! The scenario runner end to end (real VMMs, TAPs in namespaces the run
//! creates, real HTTP), the report it writes, `migbench check` on crafted
//! result files, and a malformed scenario file.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn assert_png(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a decodable PNG frame");
    assert!(info.width >= 400 && info.height >= 300, "{}: {}x{}", path.display(), info.width, info.height);
}

fn assert_svg(path: &Path, must_contain: &str) {
    let text = std::fs::read_to_string(path).expect("SVG readable");
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(text.contains(must_contain), "{} lacks '{must_contain}'", path.display());
}

#[test]
fn idle_scenario_end_to_end_writes_every_output() {
    if !root_or_skip("idle_scenario_end_to_end_writes_every_output") {
        return;
    }
    let dir = temp_path("idle-scenario");
    // The built-in idle scenario, with memory verification on (tests verify
    // guest memory after every migration) and short run times.
    let file = temp_path("idle.toml");
    let text = include_str!("../scenarios/files/idle.toml").replace("verify = false", "verify = true");
    std::fs::write(&file, text).expect("write scenario");
    let out = run_with_limit(
        &[
            "scenario",
            file.to_str().expect("utf8"),
            "--warmup",
            "1s",
            "--after",
            "1s",
            "--out",
            dir.to_str().expect("utf8"),
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "idle.result.json",
        "idle.probe.csv",
        "idle.checks.json",
        "rate-idle.png",
        "rate-idle.svg",
        "rounds-idle.png",
        "rounds-idle.svg",
        "report.md",
        "report.html",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("idle.result.json")).expect("read")).expect("JSON");
    let m = &result["migration"];
    assert_eq!(m["outcome"], "completed");
    assert_eq!(m["verify"]["ok"], true, "guest memory verified after the migration");
    let t = &result["throughput"];
    assert!(t["before"]["mean_mbps"].as_f64() > Some(0.0), "no throughput before: {t}");
    assert!(t["after"]["mean_mbps"].as_f64() > Some(0.0), "no throughput after: {t}");
    let samples = result["probe"]["samples"].as_array().expect("samples");
    assert!(samples.len() > 150, "{} samples for ~2 s at 10 ms", samples.len());
    let checks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("idle.checks.json")).expect("read")).expect("JSON");
    assert_eq!(checks["checks"]["probe"]["reconnects"], 0, "{checks}");
    assert_eq!(checks["checks"]["probe"]["corruptions"], 0, "{checks}");
    assert_eq!(checks["failures"].as_array().map(Vec::len), Some(0), "{checks}");

    assert_png(&dir.join("rate-idle.png"));
    assert_png(&dir.join("rounds-idle.png"));
    assert_svg(&dir.join("rate-idle.svg"), "transmission rate progress");
    assert_svg(&dir.join("rounds-idle.svg"), "idle");
    let md = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    let downtime = m["downtime_ms"].as_f64().expect("downtime");
    assert!(md.contains("VMM downtime") && md.contains(&format!("{downtime:.2} ms")), "report lacks the downtime");
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(!html.contains("src=\"http"), "report.html must be self-contained");

    // The CI gate on this real result.
    let res = dir.join("idle.result.json");
    let res = res.to_str().expect("utf8");
    let ok = run_with_limit(&["check", res, "--max-downtime-ms", "10000"], Duration::from_secs(20));
    assert!(ok.status.success(), "{}", stderr(&ok));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

fn write_result(name: &str, downtime: f64, total: f64) -> std::path::PathBuf {
    let p = temp_path(name);
    let v = serde_json::json!({
        "config": {},
        "migration": {
            "outcome": "completed", "reason": null, "stop_reason": null, "policy": {"kind": "downtime"},
            "start_mono_ns": 1, "total_ms": total, "ram_bytes": 1, "transferred_bytes": 1, "zero_pages": 0,
            "rounds": [], "final_pages": 0, "paused_at_ms": 1.0, "resumed_at_ms": 2.0, "downtime_ms": downtime,
            "downtime_breakdown": null, "paused_total_ms": downtime, "verify": null
        },
        "checks": {}, "failures": []
    });
    std::fs::write(&p, v.to_string()).expect("write");
    p
}

#[test]
fn check_passes_and_fails_as_it_should() {
    let base = write_result("base.json", 10.0, 100.0);
    let same = write_result("same.json", 11.0, 110.0);
    let worse = write_result("worse.json", 20.0, 100.0);
    let s = |p: &std::path::PathBuf| p.to_str().expect("utf8").to_owned();
    let run = |args: &[&str]| run_with_limit(args, Duration::from_secs(20));

    let out = run(&["check", &s(&same), "--max-downtime-ms", "50"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["check", &s(&worse), "--max-downtime-ms", "15"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("FAIL") && stderr(&out).contains("15"), "{}", stderr(&out));
    let out = run(&["check", &s(&same), "--baseline", &s(&base), "--tolerance", "25%"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["check", &s(&worse), "--baseline", &s(&base), "--tolerance", "25%"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("downtime"), "{}", stderr(&out));
    // One reason line per violated limit.
    let out = run(&["check", &s(&worse), "--max-downtime-ms", "15", "--baseline", &s(&base)]);
    assert_eq!(stderr(&out).lines().filter(|l| l.contains("FAIL")).count(), 2, "{}", stderr(&out));
    let garbage = temp_path("garbage.json");
    std::fs::write(&garbage, "{\"not\": \"a result\"}").expect("write");
    let out = run(&["check", &s(&garbage), "--max-downtime-ms", "15"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&s(&garbage)), "the error names the file: {}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    for p in [base, same, worse, garbage] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_malformed_scenario_file_names_file_key_and_expectation() {
    let file = temp_path("bad.toml");
    let text = include_str!("../scenarios/files/idle.toml").replace("connections = 4", "connections = \"four\"");
    std::fs::write(&file, text).expect("write");
    let out = run_with_limit(&["scenario", file.to_str().expect("utf8")], Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(file.to_str().expect("utf8")), "{err}");
    assert!(err.contains("connections") && err.contains("expected"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn ctrl_c_in_the_second_scenario_of_reproduce_leaves_no_namespace() {
    use std::io::BufRead;
    if !root_or_skip("ctrl_c_in_the_second_scenario_of_reproduce_leaves_no_namespace") {
        return;
    }
    let dir = temp_path("reproduce-interrupted");
    let mut child = migbench()
        .args(["reproduce", "--quick", "--no-bench", "--out", dir.to_str().expect("utf8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reproduce");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut runs = Vec::new();
    // Wait for the loaded scenario's network, then give it time to start
    // its VMMs and probe.
    let t = std::time::Instant::now();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        if let Some(rest) = line.split("network: run ").nth(1) {
            runs.push(rest.split(':').next().expect("run id").to_owned());
            if runs.len() == 2 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(120), "reproduce did not reach the loaded scenario");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(runs.len(), 2, "runs seen: {runs:?}");
    let loaded = scenarios::netns::Names::for_run(&runs[1]).expect("run id");
    assert!(scenarios::netns::namespace_exists(&loaded.lan_ns), "the loaded scenario's namespace is up");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let drain = std::thread::spawn(move || lines.count());
    let out = wait_with_limit(child, Duration::from_secs(30));
    let _ = drain.join();
    assert_eq!(out.status.code(), Some(130), "exit after Ctrl-C");
    for id in &runs {
        let n = scenarios::netns::Names::for_run(id).expect("run id");
        assert!(!scenarios::netns::namespace_exists(&n.lan_ns), "{} left behind", n.lan_ns);
        assert!(!scenarios::netns::namespace_exists(&n.probe_ns), "{} left behind", n.probe_ns);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
