//! The report records a run's shaped link: what it was, the link time for
//! the bytes sent beside the migration's time (their ratio), and the 2006
//! talk's time scale; `migbench report DIR` keeps it, since the link is in
//! the result JSON. The inputs are synthetic (see `common`).

mod common;

use reports::{write_report, write_report_from_dir};

#[test]
fn the_report_states_the_link_and_the_ratio_to_its_time() {
    let link = results::Link { bandwidth_bps: Some(1_000_000_000), ..Default::default() };
    let s = common::idle().with_link(Some(link.clone()));
    let m = &s.migration;
    let link_ms = link.time_ms(m.transferred_bytes).expect("a rate");
    let dir = std::env::temp_dir().join(format!("migbench-link-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let paths = write_report(&dir, &[s.clone(), common::loaded()], None).expect("report");
    let md = std::fs::read_to_string(&paths.markdown).expect("report.md");
    assert!(md.contains("- **link:** 1 Gbit/s (tbf); on the migration link"), "{md}");
    let ratio = format!("{:.2} × the link time", m.total_ms / link_ms);
    assert!(md.contains(&ratio), "expected '{ratio}' in:\n{md}");
    assert!(md.contains(&format!("take {link_ms:.0} ms at the link's rate")), "{md}");
    assert!(md.contains("against the 2006 talk"), "{md}");
    // Only the scenario that had a link says so.
    assert_eq!(md.matches("- **link:**").count(), 1, "{md}");
    // Regenerated from the raw JSON alone: the same lines.
    let again = write_report_from_dir(&dir).expect("report DIR");
    let md2 = std::fs::read_to_string(&again.markdown).expect("report.md");
    assert!(md2.contains(&ratio), "{md2}");
    let _ = std::fs::remove_dir_all(&dir);
}
