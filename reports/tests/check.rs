//! The CI gate on crafted result files: limits, baselines, and errors that
//! name the file and what was expected.

mod common;

use reports::check::{against_baseline, limits, parse_tolerance, CheckError, Measured};
use serde_json::json;

/// A `migbench migrate --json` file around statistics with the given downtime and total.
fn migrate_json(downtime: f64, total: f64) -> serde_json::Value {
    let mut m = common::stats(results::Policy::default(), &[(0.0, 100.0, 10.0, 50, 800.0, None)], downtime);
    m.total_ms = total;
    json!({
        "config": {"mem_mib": 512},
        "migration": m,
        "baseline": {"loopback_tcp_ms": 12.0},
        "checks": {},
        "failures": [],
    })
}

fn measured(v: &serde_json::Value, name: &str) -> Measured {
    Measured::from_value(v, name).expect("valid")
}

#[test]
fn limits_on_migrate_json() {
    let r = measured(&migrate_json(80.0, 900.0), "run.json");
    assert_eq!(r.downtime_ms, Some(80.0));
    assert_eq!(r.app_downtime_ms, None);
    assert!(limits(&r, Some(100.0), None).is_empty());
    assert!(limits(&r, None, None).is_empty());
    let v = limits(&r, Some(50.0), None);
    assert_eq!(v, vec!["VMM downtime 80.00 ms exceeds --max-downtime-ms 50".to_string()]);
    // An app-downtime limit on a file without one is a violation that says why.
    let v = limits(&r, Some(100.0), Some(200.0));
    assert_eq!(v.len(), 1);
    assert!(v[0].contains("run.json") && v[0].contains("app_downtime_ms"), "{v:?}");
}

#[test]
fn limits_on_scenario_results() {
    let s = common::loaded();
    let app = s.app_downtime_ms.expect("app downtime");
    let v = serde_json::to_value(&s).expect("json");
    let r = measured(&v, "loaded.result.json");
    assert_eq!(r.scenario.as_deref(), Some("loaded"));
    assert_eq!(r.app_downtime_ms, Some(app));
    assert_eq!(Measured::from(&s).app_downtime_ms, Some(app));
    assert!(limits(&r, Some(1000.0), Some(1000.0)).is_empty());
    // Both limits violated: two reasons, one per limit.
    let v = limits(&r, Some(100.0), Some(100.0));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].starts_with("VMM downtime 387.50 ms exceeds --max-downtime-ms 100"));
    assert!(v[1].starts_with("application-visible downtime ") && v[1].ends_with("exceeds --max-app-downtime-ms 100"));
}

#[test]
fn failed_migration_fails_any_limit() {
    let mut v = migrate_json(10.0, 100.0);
    v["migration"]["outcome"] = json!("cancelled");
    v["migration"]["reason"] = json!("downtime target not reached in 30 s");
    v["migration"]["downtime_ms"] = json!(null);
    let r = measured(&v, "c.json");
    let out = limits(&r, Some(100.0), None);
    assert_eq!(out.len(), 1);
    assert!(out[0].contains("cancelled") && out[0].contains("downtime target not reached"));
    let base = measured(&migrate_json(10.0, 100.0), "base.json");
    let out = against_baseline(&r, &base, 0.25);
    assert!(out.iter().any(|l| l.contains("cancelled")), "{out:?}");
}

#[test]
fn baseline_comparison() {
    let base = measured(&migrate_json(100.0, 1000.0), "base.json");
    // Within 25 %: passes (125 is not above 100 × 1.25).
    let ok = measured(&migrate_json(125.0, 1200.0), "ok.json");
    assert!(against_baseline(&ok, &base, 0.25).is_empty());
    // Better than the baseline: passes.
    let better = measured(&migrate_json(10.0, 500.0), "better.json");
    assert!(against_baseline(&better, &base, 0.0).is_empty());
    // Downtime and total both regress: two reasons.
    let bad = measured(&migrate_json(150.0, 1300.0), "bad.json");
    let out = against_baseline(&bad, &base, 0.25);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], "VMM downtime regressed: 150.00 ms against the baseline's 100.00 ms (+50.0%; tolerance 25%)");
    assert!(out[1].starts_with("total migration time regressed: 1300.00 ms"));
    // App downtime: compared when the baseline has it; missing in the result is a reason.
    let s = common::idle();
    let scen = Measured::from(&s);
    let mut worse = scen.clone();
    worse.app_downtime_ms = scen.app_downtime_ms.map(|a| a * 2.0);
    let out = against_baseline(&worse, &scen, 0.25);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].starts_with("application-visible downtime regressed"));
    let out = against_baseline(&bad, &scen, 100.0);
    assert!(out.iter().any(|l| l.contains("has no application-visible downtime")), "{out:?}");
    // Invalid tolerance.
    assert_eq!(against_baseline(&ok, &base, -0.1).len(), 1);
    assert_eq!(against_baseline(&ok, &base, f64::NAN).len(), 1);
}

#[test]
fn bare_stats_are_accepted() {
    let v = migrate_json(42.0, 420.0);
    let r = measured(&v["migration"], "stats.json");
    assert_eq!(r.downtime_ms, Some(42.0));
    assert_eq!(r.total_ms, 420.0);
}

#[test]
fn malformed_files_name_the_file_and_the_expectation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, String, &str)> = vec![
        ("notjson.json", "{ not json".into(), "not valid JSON"),
        ("array.json", "[1, 2]".into(), "the top level is an array, not an object"),
        ("nomig.json", r#"{"config": {}}"#.into(), "no `migration` key"),
        ("migstr.json", r#"{"migration": "fast"}"#.into(), "`migration` is a string"),
        (
            "missing.json",
            r#"{"migration": {"outcome": "completed"}}"#.into(),
            "`migration` is not valid migration statistics: missing field",
        ),
        (
            "app.json",
            {
                let mut v = migrate_json(1.0, 2.0);
                v["app_downtime_ms"] = json!("fast");
                v.to_string()
            },
            "`app_downtime_ms` is a string, expected a number",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let e = Measured::load(&p).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
        if !matches!(e, CheckError::Shape { .. } | CheckError::Parse { .. }) {
            panic!("{name}: unexpected error kind {e:?}");
        }
        if name != "app.json" {
            assert!(msg.contains("expected") || msg.contains("missing field"), "{msg}");
        }
    }
    let e = Measured::load(&dir.path().join("absent.json")).expect_err("absent");
    assert!(matches!(e, CheckError::Io { .. }));
    assert!(e.to_string().contains("absent.json"));
}

#[test]
fn tolerances() {
    assert_eq!(parse_tolerance("25%").expect("pct"), 0.25);
    assert_eq!(parse_tolerance(" 12.5 % ").expect("pct"), 0.125);
    assert_eq!(parse_tolerance("0.25").expect("frac"), 0.25);
    assert_eq!(parse_tolerance("0").expect("zero"), 0.0);
    assert_eq!(parse_tolerance("150%").expect("big"), 1.5);
    for bad in ["25", "-5%", "abc", "%", "NaN%", ""] {
        let e = parse_tolerance(bad).expect_err(bad);
        assert!(e.to_string().contains("25%"), "{e}");
    }
}

#[test]
fn a_baseline_from_another_system_is_refused() {
    let mut v = serde_json::json!({
        "migration": {
            "outcome": "completed", "reason": null, "stop_reason": null, "policy": {"kind": "downtime"},
            "start_mono_ns": 1, "total_ms": 100.0, "ram_bytes": 1, "transferred_bytes": 1, "zero_pages": 0,
            "rounds": [], "final_pages": 0, "paused_at_ms": 1.0, "resumed_at_ms": 2.0, "downtime_ms": 10.0,
            "downtime_breakdown": null, "paused_total_ms": 10.0, "verify": null
        },
        "system": "qemu"
    });
    let q = reports::check::Measured::from_value(&v, "q.json").expect("qemu result");
    assert_eq!(q.system.as_deref(), Some("qemu"));
    assert!(reports::check::against_baseline(&q, &q, 0.0).is_empty());
    v["system"] = "vmm-min".into();
    let m = reports::check::Measured::from_value(&v, "m.json").expect("vmm-min result");
    let f = reports::check::against_baseline(&q, &m, 10.0);
    assert!(f.len() == 1 && f[0].contains("compare a system with its own baseline"), "{f:?}");
    v["system"] = 3.into();
    assert!(reports::check::Measured::from_value(&v, "x.json").unwrap_err().to_string().contains("`system`"));
}
