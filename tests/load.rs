//! Migration under load: auto-converge (`--throttle`) engages when rounds do
//! not converge and every round reports how much the worker vCPUs were held
//! off; the setup time is measured and lies within the migration; the
//! charts show the setup band and the throttle. Real VMM processes; guest
//! memory is verified by the RAM digest after every migration.

mod common;

use common::VmmProcess as Vmm;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn assert_completed_and_verified(stats: &Value) {
    assert_eq!(stats["outcome"], "completed", "{stats:#}");
    assert_eq!(stats["verify"]["ok"], true, "digest mismatch: {stats:#}");
}

/// Setup is from the start to the first page sent: present, positive, and
/// before the first round ends, the pause and the end.
fn assert_setup_within(stats: &Value) {
    let setup = f(&stats["setup_ms"]);
    let total = f(&stats["total_ms"]);
    assert!(setup > 0.0 && setup < total, "setup {setup} ms, total {total} ms");
    let r0 = &stats["rounds"][0];
    assert!(setup <= f(&r0["start_ms"]) + f(&r0["duration_ms"]), "setup ends after round 0: {stats:#}");
    assert!(setup < f(&stats["paused_at_ms"]), "setup ends after the pause: {stats:#}");
}

/// Three workers rewriting 32 MiB each, sent at 800 Mbit/s: from round 1 on
/// no round can shrink the dirty set (each takes about a second, and the
/// workers rewrite all of it in less), so auto-converge must engage after
/// round 1 at the latest; the same migration without it reports no
/// throttle at all.
#[test]
fn throttling_engages_and_the_rounds_report_it() {
    let _g = serial();
    let stress = ["--workload", "stress:vm=3,bytes=32M", "--memory", "256M", "--vcpus", "4"];
    let policy = results::Policy::Downtime {
        downtime_ms: 50.0,
        timeout_ms: 7000.0,
        on_timeout: results::OnTimeout::Force,
        max_bandwidth_mbps: Some(800.0),
    };
    let src = Vmm::source(&stress);

    let dst = Vmm::destination(&[]);
    let plain = migrate_with(&src.sock, &dst.addr(), policy.clone(), true, None);
    // Forced or not, the migration completes; throttling was never asked for.
    assert_completed_and_verified(&plain);
    assert_setup_within(&plain);
    let rounds = plain["rounds"].as_array().expect("rounds");
    assert!(rounds.iter().all(|r| r["throttle_pct"].is_null()), "throttle reported without --throttle: {plain:#}");
    dst.assert_alive();
    let (code, err) = src.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "source after migration: {err}");

    // The guest now runs on `dst`: migrate it onwards with auto-converge.
    let next = Vmm::destination(&[]);
    let t = results::Throttle::with_max(60.0);
    let thr = migrate_with(&dst.sock, &next.addr(), policy, true, Some(t));
    assert_completed_and_verified(&thr);
    assert_setup_within(&thr);
    let rounds = thr["rounds"].as_array().expect("rounds");
    assert!(rounds.len() >= 2, "one round only, nothing to throttle: {thr:#}");
    assert!(rounds[0]["throttle_pct"].is_null(), "round 0 runs unthrottled (QEMU's semantics): {thr:#}");
    let pcts: Vec<f64> = rounds.iter().filter_map(|r| r["throttle_pct"].as_f64()).collect();
    assert!(!pcts.is_empty(), "auto-converge never engaged: {thr:#}");
    // Round 1 onwards runs at 20% or more (the measured share of the
    // workers' time spent held off, so not exactly the asked-for value).
    let last = *pcts.last().expect("a throttled round");
    assert!((10.0..=100.0).contains(&last), "the last round was held off {last}%: {thr:#}");
    next.assert_alive();
    let (code, err) = dst.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "second source after migration: {err}");
}

/// An idle guest: setup is reported, and small beside the whole.
#[test]
fn setup_ms_is_present_and_within_total_ms() {
    let _g = serial();
    let src = Vmm::source(&["--memory", "128M"]);
    let dst = Vmm::destination(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let stats = src.migrate(&dst, Value::Null);
    assert_completed_and_verified(&stats);
    assert_setup_within(&stats);
    dst.assert_alive();
    let (code, err) = src.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "source after migration: {err}");
}

fn sample(name: &str) -> reports::ScenarioResult {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/sample-report/{name}.result.json"));
    reports::ScenarioResult::load_json(&p).expect("sample result")
}

/// The rate chart draws the setup band with its value in the legend, and
/// the rounds chart labels each throttled round; neither appears for a
/// result without them.
#[test]
fn the_charts_show_the_setup_band_and_the_throttle() {
    let mut s = sample("loaded");
    s.migration.setup_ms = None;
    for r in &mut s.migration.rounds {
        r.throttle_pct = None;
    }
    let before = reports::charts::rate_progress(&s).expect("rate chart");
    assert!(!before.svg.contains("setup ("), "a setup band without setup_ms");
    let rounds = reports::charts::precopy_rounds(&s).expect("rounds chart");
    assert!(!rounds.svg.contains(reports::charts::THROTTLE_LEGEND));

    s.migration.setup_ms = Some(3.25);
    let n = s.migration.rounds.len();
    assert!(n >= 2, "the sample has {n} rounds");
    s.migration.rounds[1].throttle_pct = Some(27.4);
    let rate = reports::charts::rate_progress(&s).expect("rate chart");
    assert!(rate.svg.contains(&reports::charts::setup_label(3.25)), "no setup band in the legend");
    assert!(rate.png.len() > 1000, "the PNG is drawn too");
    let rounds = reports::charts::precopy_rounds(&s).expect("rounds chart");
    assert!(rounds.svg.contains(reports::charts::THROTTLE_LEGEND), "no throttle legend");
    assert!(rounds.svg.contains("throttle 27%"), "round 1's throttle is not labelled");
}
