//! `migbench bench compare --quick`: every row measured or "n/a" with a
//! reason, a table, and JSON that parses; `migbench bench crosscheck
//! --quick`: every installed tool ran and gave ratios.

mod common;

use common::*;
use std::sync::Mutex;
use std::time::Duration;

/// Held by each test that runs the ttcp table, so that one test's
/// namespaces are never mistaken for another's leftovers.
static TTCP_NAMESPACES: Mutex<()> = Mutex::new(());

#[test]
fn bench_compare_quick_produces_a_complete_table_and_json() {
    let _ttcp = TTCP_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    let before = ttcp_namespaces();
    let json_path = temp_path("bench.json");
    let md_path = temp_path("bench.md");
    let out = run_with_limit(
        &[
            "bench",
            "compare",
            "--quick",
            "--json",
            json_path.to_str().expect("utf8"),
            "--markdown",
            md_path.to_str().expect("utf8"),
        ],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: bench_suites::BenchReport =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("JSON parses");
    let md = std::fs::read_to_string(&md_path).expect("markdown written");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&md_path);

    assert!(!report.native.is_empty());
    assert_eq!(report.native.len(), report.guest.len(), "one guest row per native row");
    for row in report.native.iter().chain(&report.guest) {
        assert!(row.is_well_formed(), "row neither measured nor n/a with a reason: {row:?}");
        assert!(md.contains(&format!("| {} |", row.id)), "table lacks {}", row.id);
    }
    // The guest measures these itself; they must not be n/a.
    for id in ["null_call", "null_io", "anon_fault", "mem_rd_bw", "mem_lat_4k"] {
        let g = report.guest.iter().find(|r| r.id == id).expect("guest row");
        assert!(g.value.is_some(), "guest {id} not measured: {g:?}");
    }
    assert!(report.env.guest_ring0_emulated.is_some(), "ring-0 emulation not measured");
    assert!(md.contains("n/a ("), "n/a rows carry their reason");
    // compare carries the ttcp table and the relative-performance figure too.
    assert_eq!(report.ttcp.len(), 2, "native and vmm-min ttcp columns");
    assert!(md.contains("## TCP bandwidth (ttcp)") && md.contains("## Relative performance"), "{md}");
    assert!(report.macro_bench.is_some());
    assert_no_ttcp_namespace_left(&before);
}

/// `migbench bench crosscheck --quick`: each installed tool ran against our
/// row and gave a ratio; a missing tool is listed as skipped with its
/// package. No ratio bound: these machines are noisy.
#[test]
fn bench_crosscheck_quick_runs_each_installed_tool() {
    let json_path = temp_path("crosscheck.json");
    let out = run_with_limit(
        &["bench", "crosscheck", "--quick", "--json", json_path.to_str().expect("utf8")],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let c: bench_suites::crosscheck::CrossCheck =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("JSON parses");
    let _ = std::fs::remove_file(&json_path);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("## Cross-check against independent tools"), "{md}");

    let on_path = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(tool).is_file())
    };
    for (tool, row_tool, ids) in [
        ("iperf3", "iperf3", &["tcp_bw"][..]),
        ("perf", "perf bench sched pipe", &["ctx_2p_0k", "ctx_2p_0k_unpinned"][..]),
        ("sysbench", "sysbench memory", &["mem_rd_bw", "mem_wr_bw"][..]),
    ] {
        let skipped = c.skipped.iter().find(|s| s.tool.starts_with(tool));
        if !on_path(tool) {
            let s = skipped.unwrap_or_else(|| panic!("{tool} is not installed but not listed as skipped"));
            assert!(!s.install.is_empty(), "{s:?}");
            continue;
        }
        if tool == "perf" && skipped.is_some() {
            // Installed, but perf refuses this kernel: listed, with why.
            eprintln!("perf skipped: {skipped:?}");
            continue;
        }
        assert!(skipped.is_none(), "{tool} is installed but was skipped: {skipped:?}");
        for id in ids {
            let r = c
                .rows
                .iter()
                .find(|r| r.tool == row_tool && r.id == *id)
                .unwrap_or_else(|| panic!("no {row_tool} row for {id}"));
            assert_eq!(r.ours.len(), c.rounds, "{r:?}");
            assert_eq!(r.theirs.len(), c.rounds, "{r:?}");
            let ratio = r.ratio.unwrap_or_else(|| panic!("no ratio for {id} against {row_tool}: {r:?}"));
            assert!(ratio.is_finite() && ratio > 0.0, "{r:?}");
            assert!(r.within.is_some());
            assert!(md.contains(&format!("| {id} | {row_tool} |")), "table lacks {id}/{row_tool}");
        }
    }
    if std::env::var_os("LMBENCH_DIR").is_none() {
        assert!(c.skipped.iter().any(|s| s.tool == "lmbench 3"), "lmbench not listed as skipped");
    }
}

/// `migbench bench tcp --quick`: the ttcp table has every direction at every
/// MTU for native and for the vmm-min guest, each measured (as root) or n/a
/// with the reason; no namespace of the run is left behind.
#[test]
fn bench_tcp_quick_has_both_directions_for_each_system() {
    let _ttcp = TTCP_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    let before = ttcp_namespaces();
    let json_path = temp_path("ttcp.json");
    let out = run_with_limit(
        &["bench", "tcp", "--quick", "--json", json_path.to_str().expect("utf8")],
        Duration::from_secs(240),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: bench_suites::BenchReport =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("JSON parses");
    let _ = std::fs::remove_file(&json_path);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("## TCP bandwidth (ttcp)"), "{md}");
    let root = scenarios::netns::is_root();
    for system in ["native", "vmm-min"] {
        let s = report.ttcp.iter().find(|s| s.system == system).unwrap_or_else(|| panic!("no {system} ttcp rows"));
        for dir in ["tx", "rx"] {
            for mtu in [1500, 500] {
                let id = format!("ttcp_{dir}_{mtu}");
                let r = s.rows.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("{system} lacks {id}"));
                assert!(r.is_well_formed(), "{r:?}");
                assert_eq!(r.unit, bench_suites::UNIT_MIBITS);
                if root {
                    assert!(r.value.is_some(), "{system} {id} not measured as root: {r:?}");
                    assert!(r.method.contains("median"), "{}", r.method);
                }
                assert!(md.contains(&format!("| {id} |")), "table lacks {id}");
            }
        }
    }
    assert_no_ttcp_namespace_left(&before);
}

/// `migbench bench macro --quick --chart-dir DIR`: the relative-performance
/// chart is written, every workload of the paper's figure has a bar per
/// system, and each bar's value (or n/a reason) is in the JSON and the table.
#[test]
fn bench_macro_quick_writes_the_chart_and_every_bar() {
    let json_path = temp_path("macro.json");
    let chart_dir = temp_path("macro-chart");
    let out = run_with_limit(
        &[
            "bench",
            "macro",
            "--quick",
            "--json",
            json_path.to_str().expect("utf8"),
            "--chart-dir",
            chart_dir.to_str().expect("utf8"),
        ],
        Duration::from_secs(240),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: bench_suites::BenchReport =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("JSON parses");
    let svg = std::fs::read_to_string(chart_dir.join("relative.svg")).expect("SVG written");
    let png = std::fs::read(chart_dir.join("relative.png")).expect("PNG written");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_dir_all(&chart_dir);
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let md = String::from_utf8_lossy(&out.stdout);
    let m = report.macro_bench.expect("macro results in the JSON");
    let ids: Vec<&str> = m.workloads.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["cpu", "build", "osdb_ir", "osdb_oltp", "fs", "web"], "the paper's order");
    for w in &m.workloads {
        assert_eq!(w.bars.len(), m.systems.len(), "{w:?}");
        assert!(md.contains(&format!("| {} | {} |", w.label, w.stands_for)), "table lacks {}", w.id);
        assert!(svg.contains(&w.stands_for), "chart lacks the group {}", w.stands_for);
        for b in &w.bars {
            match (b.relative, &b.na_reason) {
                (Some(r), _) => {
                    assert!(r.is_finite() && r > 0.0, "{b:?}");
                    assert!(b.score.is_some_and(|s| s > 0.0), "{b:?}");
                    assert!(svg.contains(&format!("{r:.2}")), "chart lacks the bar value {r:.2} of {}", w.id);
                }
                (None, Some(why)) => assert!(!why.trim().is_empty()),
                (None, None) => panic!("bar with neither a value nor a reason: {b:?}"),
            }
            assert!(!b.method.is_empty());
        }
        let native = w.bars.iter().find(|b| b.system == "native").expect("native bar");
        if let Some(r) = native.relative {
            assert!((r - 1.0).abs() < 1e-12, "native is the baseline");
        }
    }
    // The process-based stand-ins run natively wherever stress-ng and gzip are installed (CI installs them).
    for id in ["cpu", "build", "fs"] {
        let w = m.workloads.iter().find(|w| w.id == id).expect("workload");
        assert!(w.bars[0].score.is_some(), "native {id} did not run: {:?}", w.bars[0]);
    }
    if scenarios::netns::is_root() {
        let web = m.workloads.iter().find(|w| w.id == "web").expect("web");
        for b in &web.bars {
            assert!(b.relative.is_some(), "web bar of {} not measured as root: {b:?}", b.system);
        }
    }
}
