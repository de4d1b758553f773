//! `migbench bench compare --quick`: every row measured or "n/a" with a
//! reason, a table, and JSON that parses.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn bench_compare_quick_produces_a_complete_table_and_json() {
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
        Duration::from_secs(120),
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
}
