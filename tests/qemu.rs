//! The `qemu` system end to end: `migbench image build`, then real QEMU
//! processes with the Linux guest on real TAPs in namespaces the test
//! creates, the real HTTP probe, and memory verification by `pmemsave`.
//!
//! The tests share one image (built once) and run one at a time: each boots
//! TCG guests, and the CI machine has two cores.

mod common;

use results::probe::ProbeResult;
use results::{OnTimeout, Outcome, Policy};
use scenarios::netns::{self, Topology};
use scenarios::qemu::driver::{QemuConfig, QemuMigrateOptions, QemuMigration, QemuSystem};
use scenarios::qemu::image::Manifest;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());
static IMAGE: OnceLock<(std::path::PathBuf, std::path::PathBuf, Manifest)> = OnceLock::new();

/// Builds (or reuses) the image with the real CLI; kernel, initrd, manifest.
fn image() -> &'static (std::path::PathBuf, std::path::PathBuf, Manifest) {
    IMAGE.get_or_init(|| {
        let out = common::run_with_limit(&["image", "build", "--json"], Duration::from_secs(600));
        assert!(out.status.success(), "image build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let m: Manifest = serde_json::from_slice(&out.stdout).expect("the manifest is JSON");
        let dir = scenarios::qemu::image::default_cache_dir().unwrap().join(&m.key);
        (dir.join("vmlinuz"), dir.join("initrd.img"), m)
    })
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn image_build_records_every_file_with_its_package() {
    let _g = lock();
    let (kernel, initrd, m) = image();
    assert!(kernel.is_file() && initrd.is_file());
    assert!(m.kernel_release.ends_with("-cloud-amd64"), "{}", m.kernel_release);
    for module in ["virtio_net", "virtio_pci"] {
        assert!(
            m.modules.iter().any(|x| x == module) || m.builtin_modules.iter().any(|x| x == module),
            "{module} missing"
        );
    }
    let pos = |n: &str| m.modules.iter().position(|x| x == n);
    if let (Some(a), Some(b)) = (pos("virtio"), pos("virtio_net")) {
        assert!(a < b, "dependencies load first: {:?}", m.modules);
    }
    for (path, pkg) in [
        ("bin/busybox", "busybox-static"),
        ("usr/bin/stress", "stress"),
        ("usr/bin/stress-ng", "stress-ng"),
        ("bin/gzip", "gzip"),
        ("lib64/ld-linux-x86-64.so.2", "libc6"),
        ("lib/x86_64-linux-gnu/libc.so.6", "libc6"),
        ("bin/migbench-agent", "migbench"),
        ("init", "migbench"),
    ] {
        let f = m.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{path} is not in the image"));
        assert_eq!(f.package, pkg, "{path}");
        assert!(f.bytes > 0 && !f.version.is_empty(), "{path}");
    }
    for f in &m.files {
        assert!(
            f.package == "migbench" || m.packages.iter().any(|p| p.name == f.package && p.version == f.version),
            "{f:?}"
        );
    }
    // A second build finds the cached image.
    let t = Instant::now();
    let out = common::run_with_limit(&["image", "build"], Duration::from_secs(120));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cached image is current"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("cached image check: {:?}", t.elapsed());
}

struct Rig {
    topo: Topology,
    sys: QemuSystem,
    boot_to_http: Duration,
}

fn rig(test: &str, workload: &str, destination_paused: bool) -> Option<Rig> {
    if !common::root_or_skip(test) {
        return None;
    }
    let (kernel, initrd, _) = image();
    let id = format!("q{}", &netns::new_run_id()[..5]);
    let topo = Topology::create(&id, 1500).expect("topology");
    let dir = common::temp_path(&format!("qemu-{id}"));
    let cfg = QemuConfig::new(kernel.clone(), initrd.clone());
    let mut sys = QemuSystem::new(cfg, topo.names(), 1 << 20, workload.parse().unwrap(), &dir).expect("qemu system");
    eprintln!("{test}: accelerator {}", sys.accel().reason);
    sys.start_source().expect("source QEMU");
    let boot_to_http = sys.wait_http_ready(Duration::from_secs(60)).expect("guest HTTP");
    eprintln!("{test}: boot to first HTTP 200: {boot_to_http:?}");
    sys.start_destination(destination_paused).expect("destination QEMU");
    Some(Rig { topo, sys, boot_to_http })
}

fn probe(topo: &Topology) -> probes::http::ProbeHandle {
    let mut cfg = probes::http::ProbeConfig::new(format!("http://{}/file", topo.names().guest_ip));
    cfg.connections = 4;
    netns::run_in_netns(&topo.names().probe_ns, move || probes::http::spawn(cfg)).unwrap().expect("probe")
}

fn policy(max_bandwidth_mbps: Option<f64>) -> Policy {
    Policy::Downtime { downtime_ms: 300.0, timeout_ms: 60_000.0, on_timeout: OnTimeout::Cancel, max_bandwidth_mbps }
}

/// A verified migration at `bw` Mbit/s with the probe running through it.
fn migrate_probed(r: &mut Rig, bw: Option<f64>) -> (QemuMigration, ProbeResult) {
    let p = probe(&r.topo);
    std::thread::sleep(Duration::from_millis(1500));
    let opts = QemuMigrateOptions { policy: policy(bw), auto_converge: None, verify: true };
    let m = r.sys.migrate(&opts).expect("migration");
    std::thread::sleep(Duration::from_millis(1500));
    (m, p.stop_and_join().expect("probe result"))
}

/// Whether QEMU lost guest pages in this migration; if it did, checks
/// that the harness handled it as it must: the migration failed with the
/// count, the unverified destination is gone, and the one copy left is the
/// source, running and serving, with no corrupted response.
///
/// QEMU 7.2 (Debian's) loses pages under TCG here, even idle: 102 pages in
/// one CI run on the development machine (2 cores), 1 to 458 in others;
/// QEMU 10.0.2 was identical in every run tried (see
/// `loaded_qemu_migration_with_raised_bandwidth`).
fn lost_pages_kept_the_source(r: &Rig, test: &str, m: &QemuMigration, res: &ProbeResult) -> bool {
    let Some(bad) = m.qemu.verify_mismatched_pages.filter(|&n| n > 0) else { return false };
    eprintln!("{test}: QEMU lost {bad} pages; {:?}", m.stats.reason);
    assert_eq!(m.stats.outcome, Outcome::Failed, "a RAM difference must fail the migration");
    assert!(m.stats.reason.as_deref().is_some_and(|x| x.contains("pages differ")), "{:?}", m.stats.reason);
    assert!(r.sys.destination_pid().is_none(), "the unverified destination was dropped");
    let (running, state) = r.sys.status(false).unwrap();
    assert!(running, "the source is {state}");
    assert_eq!(r.sys.guest_get("/health").unwrap().0, 200, "the source serves");
    assert_eq!(res.summary.corruptions, 0, "corrupted responses");
    true
}

/// Every check of a completed, verified migration; the probe's gap, ms.
fn check_completed(r: &Rig, test: &str, m: &QemuMigration, res: &ProbeResult) -> f64 {
    let s = &m.stats;
    let q = &m.qemu;
    let gap = res.app_downtime().map_or(0.0, |g| g.duration_ms());
    eprintln!(
        "{test}: outcome {:?} total {:?} ms, QEMU downtime {:?} ms, setup {:?} ms; STOP→RESUME less verify {:?} ms; verify {:?}; rounds {}; probe gap {gap:.1} ms, {} bytes, {} requests, reconnects {}, corruptions {}",
        s.outcome, q.total_time_ms, q.downtime_ms, q.setup_time_ms, s.downtime_ms, s.verify, s.rounds.len(),
        res.summary.bytes, res.summary.requests, res.summary.reconnects, res.summary.corruptions
    );
    assert_eq!(s.outcome, Outcome::Completed, "{:?} {:?}", s.reason, q.error);
    let v = s.verify.as_ref().expect("verified");
    assert!(v.ok && q.verify_mismatched_pages == Some(0), "memory differs: {:?} pages", q.verify_mismatched_pages);
    assert!(q.total_time_ms.unwrap_or(0) > 0 && q.downtime_ms.is_some() && q.setup_time_ms.is_some());
    assert!(!s.rounds.is_empty(), "no pre-copy round was seen");
    assert!(s.rounds.iter().map(|x| x.bytes).sum::<u64>() > 1 << 20, "rounds carry bytes: {:?}", s.rounds);
    let (paused, resumed) = (s.paused_at_ms.expect("STOP event"), s.resumed_at_ms.expect("RESUME event"));
    assert!(
        resumed > paused && s.downtime_ms.unwrap() < s.paused_total_ms.unwrap(),
        "verification is out of the downtime"
    );
    assert_eq!(res.summary.corruptions, 0, "corrupted responses");
    assert_eq!(res.summary.reconnects, 0, "a TCP connection did not survive");
    let resume_ns = s.start_mono_ns + (resumed * 1e6) as u64;
    let after: u64 =
        res.samples.iter().filter(|x| res.probe_time_ns(resume_ns).is_some_and(|t| x.t_ns > t)).map(|x| x.bytes).sum();
    assert!(after > 0, "no data after the resume");
    // Only the destination runs now, and it serves.
    assert!(r.sys.destination_pid().is_none());
    let (running, state) = r.sys.status(false).unwrap();
    assert!(running, "the migrated guest is {state}");
    assert_eq!(r.sys.guest_get("/health").unwrap().0, 200);
    gap
}

#[test]
fn idle_qemu_migration_keeps_connections_and_memory() {
    let _g = lock();
    let Some(mut r) = rig("idle_qemu_migration", "idle", true) else { return };
    assert!(r.boot_to_http < Duration::from_secs(60));
    let src_pid = r.sys.source_pid().unwrap();
    let (m, res) = migrate_probed(&mut r, None);
    assert!(m.qemu.accel.reason.contains("tcg") || m.qemu.accel.reason.contains("kvm"));
    if lost_pages_kept_the_source(&r, "idle", &m, &res) {
        return;
    }
    check_completed(&r, "idle", &m, &res);
    // The old source process is gone.
    assert!(!std::path::Path::new(&format!("/proc/{src_pid}")).exists(), "the source QEMU still runs");
}

/// A loaded migration with a raised bandwidth, memory verified.
///
/// QEMU 7.2 (Debian's) has lost guest pages here: in one full-suite run on
/// the development machine (2 cores, load about 4) the RAM comparison found
/// 1 page differing, at 0x1ef00000; with the memcheck workload below it
/// lost 293 and 458 pages in 2 of 2 runs, while QEMU 10.0.2 from
/// bookworm-backports was identical in 2 of 2. So a difference is accepted
/// only as the harness must handle it: the migration failed with the count,
/// and the one copy left is the source, running and serving. Otherwise
/// every check of a completed migration holds, and stress survives it.
#[test]
fn loaded_qemu_migration_with_raised_bandwidth() {
    let _g = lock();
    let Some(mut r) = rig("loaded_qemu_migration", "stress:vm=3,bytes=128M", true) else { return };
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = r.sys.guest_get("/status").unwrap();
    let st: linux_guest::api::AgentStatus = serde_json::from_slice(&body).unwrap();
    assert!(code == 200 && st.workload_running, "stress is not running: {st:?}");
    let (m, res) = migrate_probed(&mut r, Some(80_000.0));
    if lost_pages_kept_the_source(&r, "loaded", &m, &res) {
        return;
    }
    check_completed(&r, "loaded", &m, &res);
    assert!(m.stats.rounds.len() >= 2, "a dirtying guest needs more than one round: {:?}", m.stats.rounds);
    let (_, body) = r.sys.guest_get("/status").unwrap();
    let st: linux_guest::api::AgentStatus = serde_json::from_slice(&body).unwrap();
    assert!(st.workload_running, "stress died with the migration: {st:?}");
}

/// The guest's own check: memcheck tags every page of 64 MiB and checks
/// each on the next pass, across the migration.
///
/// Ignored: with this workload, QEMU 7.2 under TCG here loses guest memory.
/// In 4 of 5 runs the destination's kernel oopsed right after the switchover
/// (`timerqueue_add`, "unable to handle page fault", then "Attempted to kill
/// the idle task"), and `--verify` found 168 to 402 kernel pages differing
/// between the paused source and destination. Run it with `--ignored` when
/// trying another QEMU or a KVM host. QEMU 10.0.2 (bookworm-backports) under
/// TCG on the same machine kept memory intact in 2 of 2 `memcheck` scenario
/// runs with `--verify` (Debian's 7.2.22: 293 and 458 pages differed), so the
/// loss is 7.2's, not TCG's.
#[test]
#[ignore = "QEMU 7.2 TCG loses kernel pages with this workload (destination oops); see the doc comment"]
fn memcheck_finds_no_damage_across_a_qemu_migration() {
    let _g = lock();
    let Some(mut r) = rig("memcheck_qemu_migration", "memcheck:mb=64", false) else { return };
    std::thread::sleep(Duration::from_secs(1));
    let before = r.sys.memcheck().unwrap();
    let opts = QemuMigrateOptions { policy: policy(Some(80_000.0)), auto_converge: None, verify: false };
    let m = r.sys.migrate(&opts).expect("migration");
    assert_eq!(m.stats.outcome, Outcome::Completed, "{:?}", m.stats.reason);
    std::thread::sleep(Duration::from_secs(2));
    let after = r.sys.memcheck().unwrap_or_else(|e| {
        panic!(
            "after the migration: {e}; the guest is {:?}; its console ends:\n{}",
            r.sys.status(false),
            r.sys.console_tail(false, 60)
        )
    });
    eprintln!(
        "memcheck: before {before:?}, after {after:?}; total {:?} ms, downtime {:?} ms",
        m.qemu.total_time_ms, m.qemu.downtime_ms
    );
    assert!(after.passes > before.passes + 1, "memcheck did not run on after the migration: {before:?} {after:?}");
    assert_eq!(after.mismatches, 0, "{after:?}");
}

#[test]
fn killing_the_destination_during_precopy_leaves_the_source_serving() {
    let _g = lock();
    let Some(mut r) = rig("qemu_destination_killed", "idle", false) else { return };
    let dst = r.sys.destination_pid().unwrap() as libc::pid_t;
    // 40 Mbit/s keeps pre-copy going for several seconds.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill() of the destination QEMU's pid, a child of this test
        // process that is not reaped before the migration returns.
        unsafe { libc::kill(dst, libc::SIGKILL) }
    });
    let opts = QemuMigrateOptions { policy: policy(Some(40.0)), auto_converge: None, verify: false };
    let m = r.sys.migrate(&opts).expect("migrate returns a result");
    assert_eq!(killer.join().unwrap(), 0);
    eprintln!(
        "destination killed: outcome {:?}, reason {:?}, rounds {}",
        m.stats.outcome,
        m.stats.reason,
        m.stats.rounds.len()
    );
    assert_eq!(m.stats.outcome, Outcome::Failed);
    assert!(m.stats.paused_at_ms.is_none(), "the source was never stopped during pre-copy");
    let (running, state) = r.sys.status(false).unwrap();
    assert!(running, "the source is {state}");
    assert!(r.sys.destination_pid().is_none(), "the dead destination was reaped");
    let (code, body) = r.sys.guest_get("/file").unwrap();
    assert_eq!((code, body.len()), (200, 1 << 20));
    let mut want = vec![0u8; 1 << 20];
    served_file::fill(&mut want, 0);
    assert!(body == want, "the source serves the wrong content");
}

/// The figures for the report: idle and loaded (`stress --vm 3 --vm-bytes
/// 128M`, max-bandwidth 10 GB/s), three of each without `--verify`, under
/// the probe; prints each run and the medians. Slow, so not part of CI:
/// `cargo test --release --test qemu -- --ignored qemu_figures --nocapture`.
#[test]
#[ignore = "a measurement (about 2 minutes), not a check"]
fn qemu_figures() {
    let _g = lock();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for (name, workload, bw) in [("idle", "idle", None), ("loaded", "stress:vm=3,bytes=128M", Some(80_000.0))] {
        let mut rows: Vec<[f64; 8]> = Vec::new();
        for _ in 0..3 {
            let Some(mut r) = rig("qemu_figures", workload, false) else { return };
            let p = probe(&r.topo);
            std::thread::sleep(Duration::from_millis(2000));
            let m =
                r.sys.migrate(&QemuMigrateOptions { policy: policy(bw), auto_converge: None, verify: false }).unwrap();
            std::thread::sleep(Duration::from_millis(2000));
            let res = p.stop_and_join().unwrap();
            assert_eq!(m.stats.outcome, Outcome::Completed, "{:?}", m.stats.reason);
            assert_eq!((res.summary.corruptions, res.summary.reconnects), (0, 0));
            let s = &m.stats;
            let t0 = res.probe_time_ns(s.start_mono_ns).unwrap_or(0);
            let t1 =
                res.probe_time_ns(s.start_mono_ns + (s.resumed_at_ms.unwrap_or(s.total_ms) * 1e6) as u64).unwrap_or(t0);
            let ph = res.phase_rates(t0, t1);
            let row = [
                r.boot_to_http.as_secs_f64() * 1e3,
                m.qemu.total_time_ms.unwrap_or(-1) as f64,
                m.qemu.downtime_ms.unwrap_or(-1) as f64,
                m.qemu.setup_time_ms.unwrap_or(-1) as f64,
                res.app_downtime().map_or(0.0, |g| g.duration_ms()),
                ph.before.mean_mbps,
                ph.during.mean_mbps,
                ph.after.mean_mbps,
            ];
            eprintln!("{name}: boot {:.0} ms, total {:.0} ms, downtime {:.0} ms, setup {:.0} ms, STOP→RESUME {:?} ms, gap {:.1} ms, Mbit/s before/during/after {:.0}/{:.0}/{:.0}, rounds {}", row[0], row[1], row[2], row[3], s.downtime_ms, row[4], row[5], row[6], row[7], s.rounds.len());
            rows.push(row);
        }
        let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
        eprintln!(
            "MEDIAN {name}: boot {:.0} ms, total {:.0} ms, downtime {:.0} ms, setup {:.0} ms, gap {:.1} ms, Mbit/s before/during/after {:.0}/{:.0}/{:.0}",
            col(0), col(1), col(2), col(3), col(4), col(5), col(6), col(7)
        );
    }
}

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A completed migration's result as every test needs it: memory verified
/// identical, the switchover timed, the probe's connections intact.
fn assert_migrated_verified(result: &serde_json::Value, checks: &serde_json::Value, what: &str) {
    let m = &result["migration"];
    assert_eq!(m["outcome"], "completed", "{what}: {}", m["reason"]);
    assert_eq!(m["verify"]["ok"], true, "{what}: guest memory differs after the migration");
    assert!(m["downtime_ms"].as_f64().is_some_and(|d| d > 0.0), "{what}: {}", m["downtime_ms"]);
    assert!(m["downtime_ms"].as_f64() < m["paused_total_ms"].as_f64(), "{what}: verification is out of the downtime");
    let c = &checks["checks"];
    assert_eq!((c["probe"]["reconnects"].as_u64(), c["probe"]["corruptions"].as_u64()), (Some(0), Some(0)), "{what}");
    assert!(c["probe_bytes_after_resume"].as_u64() > Some(0), "{what}: no data after the resume");
    assert_eq!(checks["failures"].as_array().map(Vec::len), Some(0), "{what}: {}", checks["failures"]);
}

/// `migbench scenario FILE` on the cached image, 1 s before and after the
/// migration, the report into `dir`.
fn run_scenario_file(file: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    let (kernel, initrd, _) = image();
    let args = ["scenario", path_str(file), "--warmup", "1s", "--after", "1s", "--kernel", path_str(kernel)];
    let rest = ["--initrd", path_str(initrd), "--accel", "auto", "--out", path_str(dir)];
    let all: Vec<&str> = args.into_iter().chain(rest).collect();
    common::run_with_limit(&all, Duration::from_secs(240))
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `migbench scenario FILE` with `system = "qemu"`: the runner drives QEMU
/// through the system-under-test boundary only; the result says which
/// system ran and how; `migbench check` gates it as it gates vmm-min's.
#[test]
fn qemu_scenario_file_runs_end_to_end_and_check_gates_it() {
    let _g = lock();
    if !common::root_or_skip("qemu_scenario_file_runs_end_to_end_and_check_gates_it") {
        return;
    }
    let dir = common::temp_path("qemu-scenario");
    let file = common::temp_path("qemu-idle.toml");
    let text = include_str!("../scenarios/files/qemu-idle.toml").replace("verify = false", "verify = true");
    std::fs::write(&file, text).unwrap();
    let out = run_scenario_file(&file, &dir);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let result_path = dir.join("qemu-idle.result.json");
    let result = read_json(&result_path);
    let checks = read_json(&dir.join("qemu-idle.checks.json"));
    eprintln!("qemu scenario: {}", result["migration"]);
    assert_eq!(result["system"], "qemu");
    let note = result["system_note"].as_str().unwrap();
    assert!(note.contains("QEMU ") && note.contains("accelerator auto: "), "{note}");
    assert!(result["boot_to_http_ms"].as_f64().is_some_and(|b| b > 100.0), "{}", result["boot_to_http_ms"]);
    assert!(result["migration"]["setup_ms"].as_f64().is_some(), "QEMU's setup-time");
    assert!(!result["migration"]["rounds"].as_array().unwrap().is_empty(), "rounds from query-migrate");
    assert_migrated_verified(&result, &checks, "qemu idle");
    assert_eq!(checks["checks"]["source_exit_code"], 0, "the source QEMU quit cleanly after the migration");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| idle (qemu) |") && md.contains("## Scenario: idle (qemu)"), "{md}");
    assert!(dir.join("rate-qemu-idle.png").is_file() && dir.join("rounds-qemu-idle.png").is_file());

    // The CI gate, on the QEMU result as on vmm-min's.
    let res = result_path.to_str().unwrap();
    let ok = common::run_with_limit(&["check", res, "--max-downtime-ms", "60000"], Duration::from_secs(20));
    assert!(ok.status.success(), "{}", common::stderr(&ok));
    let tight = common::run_with_limit(&["check", res, "--max-downtime-ms", "0.001"], Duration::from_secs(20));
    assert!(!tight.status.success() && common::stderr(&tight).contains("exceeds --max-downtime-ms"));
    let same = common::run_with_limit(&["check", res, "--baseline", res, "--tolerance", "0%"], Duration::from_secs(20));
    assert!(same.status.success(), "{}", common::stderr(&same));
    // A baseline from the other system is refused, not compared.
    let mut other = result.clone();
    other["system"] = "vmm-min".into();
    let base = dir.join("vmm-min-baseline.json");
    std::fs::write(&base, other.to_string()).unwrap();
    let cross = common::run_with_limit(
        &["check", res, "--baseline", base.to_str().unwrap(), "--tolerance", "1000%"],
        Duration::from_secs(20),
    );
    assert!(!cross.status.success(), "a vmm-min baseline gated a qemu result");
    assert!(common::stderr(&cross).contains("compare a system with its own baseline"), "{}", common::stderr(&cross));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

/// QEMU on simulated hosts over a shaped link: each QEMU on its own host,
/// the stream over the 500 Mbit/s veth between them (`-incoming` on the
/// destination host's address), the probe on a third host. The link is
/// shaped and recorded, and QEMU's rounds never beat it.
///
/// Over this link QEMU 7.2 under TCG loses guest pages in most runs (11 to
/// 29 pages differed in 4 of 5 runs here; none in 2 runs over the same
/// hosts unshaped, nor in 2 over the lan at a 500 Mbit/s max-bandwidth),
/// like the
/// loaded migration above. So a difference is accepted only as the harness
/// must handle it: the migration failed with the count, and the source runs
/// the guest. Otherwise every check of a completed migration holds.
#[test]
fn qemu_on_simulated_hosts_over_a_shaped_link() {
    let _g = lock();
    if !common::root_or_skip("qemu_on_simulated_hosts_over_a_shaped_link") {
        return;
    }
    let dir = common::temp_path("qemu-hosts");
    let file = common::temp_path("qemu-hosts.toml");
    let text = include_str!("../scenarios/files/qemu-idle.toml")
        .replace("verify = false", "verify = true")
        .replace("file_size = \"512K\"", "file_size = \"512K\"\nhosts = true\n\n[link]\nbandwidth = \"500mbit\"");
    std::fs::write(&file, text).unwrap();
    let out = run_scenario_file(&file, &dir);
    let err = common::stderr(&out);
    let result = read_json(&dir.join("qemu-idle.result.json"));
    let checks = read_json(&dir.join("qemu-idle.checks.json"));
    let m = &result["migration"];
    eprintln!("qemu over hosts: {m}");
    assert_eq!(result["link"]["bandwidth_bps"], 500_000_000u64, "{result:#}");
    let qdiscs = checks["checks"]["migration_link_qdiscs"].as_str().unwrap_or_default();
    assert_eq!(qdiscs.matches("qdisc tbf").count(), 2, "both ends of the migration link shaped: {qdiscs}");
    // The stream crossed the link: round 0 (over 100 MB of a 512 MiB
    // guest's kernel and page cache) ran near its rate, below QEMU's
    // 1000 Mbit/s cap; no poll saw it faster, and QEMU's own total-time is
    // at least the link's time for the bytes it sent.
    let r0 = &m["rounds"][0];
    assert!(r0["bytes"].as_f64().unwrap_or(0.0) > 50e6, "round 0 sent too little to measure the link: {r0}");
    assert!(r0["rate_mbps"].as_f64().unwrap() >= 250.0, "round 0 was slower than the link carries: {r0}");
    for r in m["rounds"].as_array().unwrap() {
        if r["bytes"].as_f64().unwrap_or(0.0) > 10e6 {
            assert!(r["rate_mbps"].as_f64().unwrap() <= 550.0, "a round beat the 500 Mbit/s link: {r}");
        }
    }
    let link_ms = m["transferred_bytes"].as_f64().unwrap() * 8.0 / 500e6 * 1e3;
    assert!(m["total_ms"].as_f64().unwrap() >= 0.9 * link_ms, "faster than the link: {m}");
    let c = &checks["checks"];
    if m["reason"].as_str().is_some_and(|r| r.contains("pages differ")) {
        eprintln!("qemu over hosts: QEMU 7.2 lost pages: {}", m["reason"]);
        assert_eq!(m["outcome"], "failed", "a RAM difference must fail the migration");
        assert!(!out.status.success(), "a failed migration must fail the run");
        let hb = &c["source_heartbeat"];
        assert!(hb[1].as_u64() > hb[0].as_u64(), "the source does not run the guest: {hb}");
        assert_eq!(c["probe"]["corruptions"], 0, "{c}");
    } else {
        assert!(out.status.success(), "{err}");
        assert_migrated_verified(&result, &checks, "qemu over hosts");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

/// `reproduce --quick --systems vmm-min,qemu --verify`: one report with
/// both systems, idle and loaded: the 2×2 rate chart, the summary with a
/// column per system and scenario, every rounds chart, memory verified
/// after every migration, and the microbenchmark table with the QEMU Linux
/// guest's column (the whole native suite run inside it).
///
/// QEMU 7.2 under TCG has lost guest pages under `stress` here (see
/// `loaded_qemu_migration_with_raised_bandwidth`); when verification
/// catches that on the loaded QEMU run, the test checks that the harness
/// says so (a failed migration, MISMATCH in the report, a non-zero exit)
/// and prints it, rather than failing on QEMU's bug.
#[test]
fn reproduce_quick_writes_one_report_with_both_systems() {
    let _g = lock();
    if !common::root_or_skip("reproduce_quick_writes_one_report_with_both_systems") {
        return;
    }
    let (kernel, initrd, _) = image();
    let dir = common::temp_path("reproduce-both");
    let t = Instant::now();
    let out = common::run_with_limit(
        &[
            "reproduce",
            "--quick",
            "--verify",
            "--systems",
            "vmm-min,qemu",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(480),
    );
    eprintln!("reproduce --systems vmm-min,qemu: {:?}", t.elapsed());
    let err = common::stderr(&out);
    let mut qemu_loaded_mismatch = false;
    for (slug, system) in [("idle", "vmm-min"), ("loaded", "vmm-min"), ("qemu-idle", "qemu"), ("qemu-loaded", "qemu")] {
        let result = read_json(&dir.join(format!("{slug}.result.json")));
        let checks = read_json(&dir.join(format!("{slug}.checks.json")));
        assert_eq!(result["system"], system, "{slug}");
        let m = &result["migration"];
        eprintln!(
            "{slug}: {} total {} ms, downtime {} ms, setup {} ms, boot {} ms, app-visible {} ms, verify {}",
            m["outcome"],
            m["total_ms"],
            m["downtime_ms"],
            m["setup_ms"],
            result["boot_to_http_ms"],
            result["app_downtime_ms"],
            m["verify"]
        );
        let mismatch =
            m["outcome"] == "failed" && m["reason"].as_str().is_some_and(|r| r.starts_with("memory verification:"));
        if slug == "qemu-loaded" && mismatch {
            eprintln!("QEMU 7.2 TCG lost pages under stress, and verification caught it: {}", m["reason"]);
            qemu_loaded_mismatch = true;
            continue;
        }
        assert_migrated_verified(&result, &checks, slug);
    }
    assert_eq!(out.status.success(), !qemu_loaded_mismatch, "{err}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for col in ["| idle (vmm-min) |", "| loaded (vmm-min) |", "| idle (qemu) |", "| loaded (qemu) |"] {
        assert!(md.contains(col), "the summary lacks the column `{col}`:\n{md}");
    }
    assert!(md.contains("## Systems under test") && md.contains("- **qemu:** ran idle, loaded"), "{md}");
    // The microbenchmark table has the QEMU Linux guest's column, naming its
    // accelerator, beside native and the built-in guest.
    assert!(
        md.contains("| native | vmm-min guest | vmm-min/native | QEMU Linux guest (TCG) |")
            || md.contains("| native | vmm-min guest | vmm-min/native | QEMU Linux guest (KVM) |"),
        "the bench table lacks the QEMU column:\n{md}"
    );
    let bench =
        results::bench::BenchReport::from_json(&std::fs::read_to_string(dir.join("bench.json")).unwrap()).unwrap();
    let q = bench.systems.iter().find(|s| s.system == "qemu").expect("the QEMU guest's rows in bench.json");
    assert_eq!(q.rows.len(), bench.native.len());
    assert!(q.rows.iter().all(|r| r.is_well_formed()), "{:?}", q.rows);
    assert!(md.contains("rate-comparison.png"), "no comparison chart");
    for f in ["rounds-idle", "rounds-loaded", "rounds-qemu-idle", "rounds-qemu-loaded"] {
        assert!(md.contains(&format!("({f}.png)")), "{f} missing from the report");
        assert!(dir.join(format!("{f}.png")).is_file());
    }
    // The comparison is the 2×2 grid: two rows (systems) of two panels.
    let svg = std::fs::read_to_string(dir.join("rate-comparison.svg")).unwrap();
    for label in ["vmm-min · idle", "vmm-min · loaded", "qemu · idle", "qemu · loaded"] {
        assert!(svg.contains(label), "the comparison lacks the panel `{label}`");
    }
    let png = png::Decoder::new(std::fs::File::open(dir.join("rate-comparison.png")).unwrap()).read_info().unwrap();
    let (w, h) = (png.info().width, png.info().height);
    assert!(w >= 2000 && h >= 1900, "{w}x{h} is not a 2×2 grid");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A system that cannot run is listed as skipped, with the reason and what
/// to do, and the rest runs (here: nothing else was asked for).
#[test]
fn reproduce_lists_a_system_that_cannot_run_as_skipped() {
    let _g = lock();
    if !common::root_or_skip("reproduce_lists_a_system_that_cannot_run_as_skipped") {
        return;
    }
    let dir = common::temp_path("reproduce-skip");
    let out = common::run_with_limit(
        &[
            "reproduce",
            "--quick",
            "--no-bench",
            "--systems",
            "qemu",
            "--qemu-binary",
            "/nonexistent/qemu-system-x86_64",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains(
            "- **qemu:** skipped: /nonexistent/qemu-system-x86\\_64 not found: apt-get install qemu-system-x86"
        ),
        "{md}"
    );
    let bad = common::run_with_limit(&["reproduce", "--systems", "xen"], Duration::from_secs(20));
    assert!(!bad.status.success() && common::stderr(&bad).contains("unknown system 'xen'"), "{}", common::stderr(&bad));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills a child on drop (unless it ended).
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip_netns(ns: &str, args: &[&str]) {
    let out = std::process::Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip netns exec {ns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A remote QEMU destination, as on three machines: `migbench
/// qemu-incoming` run as its own process on the destination host (a
/// namespace reached only by its address on the migration link), `migbench
/// migrate --system qemu --to` on the source host, both with the same
/// `tls-init` directory, the probe on a third host. Refused first: a
/// non-loopback `--to` without TLS; a malformed control request gets an
/// error reply and the destination stays usable. The migration completes
/// with the RAM digests of both paused sides equal (or, where QEMU 7.2
/// lost pages, fails with the source running: exactly those two), the
/// guest serves HTTP throughout, and nothing is left behind.
#[test]
fn qemu_remote_destination_over_tls_in_another_namespace() {
    let _g = lock();
    if !common::root_or_skip("qemu_remote_destination_over_tls_in_another_namespace") {
        return;
    }
    let (kernel, initrd, _) = image();
    let (kernel, initrd) = (kernel.to_str().expect("utf8"), initrd.to_str().expect("utf8"));
    let layout = netns::Layout { mtu: 1500, hosts: true, link: None };
    let topo = Topology::create_with(&format!("r{}", &netns::new_run_id()[..5]), &layout).expect("topology");
    let n = topo.names().clone();
    let h = n.hosts.clone().expect("hosts");
    let dst_ip = h.migration_dst_ip.to_string();
    // The source host has an address on its bridge, as a real host would,
    // so its migbench reaches the guest's agent.
    let [a, b, c, _] = n.probe_ip.octets();
    ip_netns(&h.source_ns, &["ip", "addr", "add", &format!("{a}.{b}.{c}.3/{}", n.prefix), "dev", &h.bridge_src]);
    let tls = common::temp_path("qemu-remote-tls");
    let out =
        common::run_with_limit(&["tls-init", tls.to_str().expect("utf8"), "--host", &dst_ip], Duration::from_secs(20));
    assert!(out.status.success(), "{}", common::stderr(&out));
    let exe = env!("CARGO_BIN_EXE_migbench");

    // Refused before anything starts: a non-loopback --to without TLS.
    let out = common::run_with_limit(
        &["migrate", "--system", "qemu", "--to", &format!("{dst_ip}:4444"), "--tap", "x", "--guest-ip", "10.0.0.2/24"],
        Duration::from_secs(20),
    );
    let err = common::stderr(&out);
    assert!(!out.status.success() && err.contains("--tls-dir") && err.contains("qemu-incoming"), "{err}");

    // The destination on its host: a port there for its control channel.
    let port = netns::run_in_netns(&h.destination_ns, || {
        std::net::TcpListener::bind((h.migration_dst_ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port())
    })
    .expect("netns")
    .expect("a free port");
    let control = format!("{dst_ip}:{port}");
    let dst = Kill(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &h.destination_ns,
                exe,
                "qemu-incoming",
                "--control",
                &control,
                "--tap",
                &n.tap_dst,
            ])
            .args(["--kernel", kernel, "--initrd", initrd, "--tls-dir"])
            .arg(&tls)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn qemu-incoming"),
    );
    let creds = vmm_min::migration::tls::TlsCredentials::load(&tls).expect("credentials");
    let connect = || {
        let t = Instant::now();
        loop {
            let c =
                netns::run_in_netns(&h.source_ns, || scenarios::qemu::remote::Client::connect(&control, Some(&creds)))
                    .expect("netns");
            match c {
                Ok(c) => return c,
                Err(e) if t.elapsed() > Duration::from_secs(20) => panic!("qemu-incoming never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    // Malformed requests: an error reply each, on the same connection,
    // which stays usable; nothing starts.
    let mut c = connect();
    for bad in ["not json", r#"{"cmd":"fly"}"#, r#"{"cmd":"start"}"#] {
        let e = c.raw(bad).expect_err("a malformed request is refused").to_string();
        assert!(e.contains("malformed request"), "{bad}: {e}");
    }
    let e = c.raw(r#"{"cmd":"start","guest":{"machine":"pc","accel":"auto","memory_mib":0,"smp":1,"ip":"10.1.1.2","prefix":24,"mac":"02:6d:62:01:01:02","file_bytes":1,"workload":"idle"}}"#)
        .expect_err("a zero-sized guest is refused")
        .to_string();
    assert!(e.contains("memory_mib"), "{e}");
    let e = c.raw(r#"{"cmd":"digests"}"#).expect_err("digests before start").to_string();
    assert!(e.contains("send start first"), "{e}");
    assert_eq!(c.status().expect("status after malformed requests").qemu, None);
    drop(c);

    // The source on its host, its NIC on that host's TAP.
    let source = |extra: &[&str], json: &std::path::Path| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &h.source_ns, exe, "migrate", "--system", "qemu", "--to", &control, "--tls-dir"])
            .arg(&tls)
            .args(["--tap", &n.tap_src, "--guest-ip", &n.guest_cidr(), "--guest-mac", &n.guest_mac])
            .args(["--kernel", kernel, "--initrd", initrd, "--memory", "512M", "--workload", "idle", "--verify"])
            .args(extra)
            .arg("--json")
            .arg(json)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the source")
    };
    // A migration its policy cancels (a 1 ms timeout), from a scenario file
    // (the keys `migration.to`, `tls_dir`, `tap`, `guest_ip`, `guest_mac`):
    // the source keeps running the guest and the waiting destination QEMU
    // is killed.
    let out_dir = common::temp_path("qemu-remote-scenario");
    let file = common::temp_path("qemu-remote.toml");
    let scenario = format!(
        "name = \"remote-cancel\"\ndescription = \"a remote qemu-incoming, cancelled\"\nsystem = \"qemu\"\n\
         [vm]\nmemory = \"512M\"\nworkload = \"idle\"\n[network]\nfile_size = \"512K\"\n\
         [probe]\ninterval = \"10ms\"\nconnections = 4\n\
         [migration]\nwarmup = \"1s\"\nafter = \"2s\"\ntimeout = \"1ms\"\non_timeout = \"cancel\"\nverify = false\n\
         to = \"{control}\"\ntls_dir = {tls:?}\ntap = \"{tap}\"\nguest_ip = \"{ip}\"\nguest_mac = \"{mac}\"\n\
         [qemu]\nkernel = {kernel:?}\ninitrd = {initrd:?}\n",
        tls = tls.to_str().expect("utf8"),
        tap = n.tap_src,
        ip = n.guest_cidr(),
        mac = n.guest_mac,
    );
    std::fs::write(&file, scenario).expect("write the scenario");
    let out = common::wait_with_limit(
        std::process::Command::new("ip")
            .args(["netns", "exec", &h.source_ns, exe, "scenario"])
            .arg(&file)
            .arg("--out")
            .arg(&out_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the scenario"),
        Duration::from_secs(180),
    );
    let _ = std::fs::remove_file(&file);
    let v = read_json(&out_dir.join("qemu-remote-cancel.result.json"));
    let checks = read_json(&out_dir.join("qemu-remote-cancel.checks.json"));
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(!out.status.success(), "a cancelled migration must fail the run");
    assert_eq!(v["migration"]["outcome"], "cancelled", "{v:#}\n{}", common::stderr(&out));
    let hb = &checks["checks"]["source_heartbeat"];
    assert!(hb[1].as_u64() > hb[0].as_u64(), "the source does not run the guest after the cancel: {hb}");
    assert_eq!(connect().status().expect("status").qemu, None, "the destination QEMU was not aborted");

    // Then a migration that completes, to the same qemu-incoming.
    let json_path = common::temp_path("qemu-remote.json");
    let src = source(&["--warmup", "4s", "--after", "3s"], &json_path);
    // The probe on the third host once the guest answers.
    let guest = std::net::SocketAddr::from((n.guest_ip, 80));
    let up = netns::run_in_netns(&n.probe_ns, || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(90) {
            if std::net::TcpStream::connect_timeout(&guest, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .expect("netns");
    assert!(up, "the guest on the source host never answered the probe host");
    let p = probe(&topo);
    let out = common::wait_with_limit(src, Duration::from_secs(240));
    let res = p.stop_and_join().expect("probe result");
    let err = common::stderr(&out);
    eprintln!("qemu remote: source said:\n{err}");
    let v = read_json(&json_path);
    let _ = std::fs::remove_file(&json_path);
    let m = &v["migration"];
    eprintln!("qemu remote: {m}");
    let mut c = connect();
    let st = c.status().expect("status");
    if m["reason"].as_str().is_some_and(|r| r.contains("pages differ")) {
        // QEMU 7.2 lost pages: the harness must fail the migration, keep
        // the source running and abort the destination.
        eprintln!("qemu remote: QEMU 7.2 lost pages: {}", m["reason"]);
        assert_eq!(m["outcome"], "failed", "{m}");
        assert!(!out.status.success());
        let hb = &v["checks"]["source_heartbeat"];
        assert!(hb[1].as_u64() > hb[0].as_u64(), "the source does not run the guest: {hb}");
        assert_eq!(st.qemu, None, "the destination was not aborted: {st:?}");
    } else {
        assert!(out.status.success(), "the remote migration failed:\n{err}");
        assert_eq!(m["outcome"], "completed", "{v:#}");
        assert_eq!(m["verify"]["ok"], true, "{v:#}");
        assert!(m["downtime_ms"].as_f64().is_some_and(|d| d > 0.0), "{m}");
        assert!(v["checks"]["destination"].as_str().unwrap_or_default().starts_with("remote"), "{v:#}");
        let q = st.qemu.clone().expect("the destination QEMU");
        assert!(q.running && q.resumed, "the guest does not run on the destination: {q:?}");
        // The one copy is never killed by a request.
        let e = c.raw(r#"{"cmd":"abort"}"#).expect_err("abort of the running guest is refused").to_string();
        assert!(e.contains("only copy"), "{e}");
        // The guest serves HTTP from the destination host now.
        let (code, _) = netns::run_in_netns(&n.probe_ns, || {
            let mut s = std::net::TcpStream::connect_timeout(&guest, Duration::from_secs(2)).expect("connect");
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            (b.split_whitespace().nth(1).unwrap_or("").to_string(), b)
        })
        .expect("netns");
        assert_eq!(code, "200", "the guest does not answer on the destination");
        eprintln!(
            "qemu remote over TLS: total {} ms, downtime {} ms, probe gap {:?} ms, {} rounds",
            m["total_ms"],
            m["downtime_ms"],
            res.app_downtime().map(|g| g.duration_ms()),
            m["rounds"].as_array().map_or(0, |r| r.len())
        );
        assert_eq!(res.summary.reconnects, 0, "{:?}", res.summary);
        assert_eq!(res.summary.corruptions, 0, "{:?}", res.summary);
    }
    drop(c);
    let qemu_pid = st.qemu.map(|q| q.pid);
    let incoming_dir = std::env::temp_dir().join(format!("migbench-qemu-incoming-{}", dst.0.id()));
    drop(dst);
    // Killed (SIGKILL), it cannot remove its scratch directory itself.
    let _ = std::fs::remove_dir_all(&incoming_dir);
    // The destination's QEMU dies with qemu-incoming.
    if let Some(pid) = qemu_pid {
        let t = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "QEMU {pid} outlived qemu-incoming");
    }
    topo.remove().expect("removing the topology");
    let _ = std::fs::remove_dir_all(&tls);
}

/// `bench guest --system qemu` with the real CLI, QEMU and image: returns
/// the report's QEMU column.
fn bench_qemu(test: &str, extra: &[&str], limit: Duration) -> Option<(results::bench::SystemRows, String)> {
    if !common::root_or_skip(test) {
        return None;
    }
    let (kernel, initrd, _) = image();
    let json = common::temp_path(&format!("{test}.json"));
    let mut args = vec![
        "bench",
        "guest",
        "--system",
        "qemu",
        "--quick",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let out = common::run_with_limit(&args, limit);
    eprintln!("{test}: bench guest --system qemu {extra:?}: {:?}", t.elapsed());
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report = results::bench::BenchReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert!(report.guest.is_empty() && report.native.is_empty(), "only the QEMU guest ran");
    assert_eq!(report.systems.len(), 1);
    let col = report.systems.into_iter().next().unwrap();
    assert_eq!(col.system, "qemu");
    Some((col, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The whole quick native suite inside the Linux guest: every native row id
/// comes back, each measured (positive, finite) or n/a with a reason, and
/// the rows that need an operating system, n/a in the built-in guest, are
/// measured here. The column names its accelerator and the table says
/// what TCG is.
#[test]
fn every_native_row_runs_inside_the_qemu_linux_guest() {
    let _g = lock();
    let Some((col, table)) = bench_qemu("every_native_row_qemu", &[], Duration::from_secs(300)) else { return };
    let ids = bench_suites::native::row_ids(&bench_suites::native::NativeOptions { quick: true, ..Default::default() });
    let got: Vec<&str> = col.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, ids, "the guest's rows are the native rows, in order");
    let accel = if col.label.contains("(TCG)") { "TCG" } else { "KVM" };
    assert!(col.label == format!("QEMU Linux guest ({accel})"), "{}", col.label);
    for r in &col.rows {
        assert!(r.is_well_formed(), "{r:?}");
        match r.value {
            Some(v) => assert!(v.is_finite() && v > 0.0, "{r:?}"),
            None => assert!(!r.na_reason.as_deref().unwrap_or("").trim().is_empty(), "{r:?}"),
        }
        assert!(r.method.contains("inside the QEMU Linux guest") || r.value.is_none(), "{r:?}");
        eprintln!(
            "{:<22} {:>12} {}",
            r.id,
            r.value.map_or_else(|| "n/a".into(), |v| format!("{v:.4}")),
            r.na_reason.as_deref().unwrap_or("")
        );
    }
    for id in ["stat", "open_close", "sig_handle", "fork_exit", "fork_sh", "ctx_2p_0k", "fs_create_0k", "mmap_lat"] {
        let r = col.rows.iter().find(|r| r.id == id).unwrap();
        assert!(r.value.is_some(), "{id} needs only Linux, which the guest has: {r:?}");
    }
    let measured = col.rows.iter().filter(|r| r.value.is_some()).count();
    assert!(measured * 10 >= col.rows.len() * 9, "only {measured} of {} rows measured", col.rows.len());
    assert!(table.contains(&format!("| QEMU Linux guest ({accel}) | QEMU Linux guest ({accel})/native |")), "{table}");
    if accel == "TCG" {
        assert!(table.contains("TCG is an emulator") && table.contains("VMware Workstation 3.2"), "{table}");
    }
}

/// A row that outlives its budget in the guest is killed and n/a with that
/// reason: a 5 ms budget is shorter than the harness's own start (it times
/// 11 intervals of ENOUGH = 1 ms before any row), so every row exceeds it.
#[test]
fn a_guest_row_past_its_budget_is_na_with_the_reason() {
    let _g = lock();
    let Some((col, _)) = bench_qemu(
        "guest_row_budget",
        &["--only", "null_call,fork_sh", "--row-budget", "5ms"],
        Duration::from_secs(120),
    ) else {
        return;
    };
    let ids: Vec<&str> = col.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["null_call", "fork_sh"]);
    for r in &col.rows {
        assert_eq!(r.value, None, "{r:?}");
        let why = r.na_reason.as_deref().unwrap();
        assert!(why.contains("exceeded its time budget of 5ms") && why.contains("--row-budget"), "{why}");
        assert!(!r.label.is_empty() && !r.method.is_empty() && r.unit == bench_suites::UNIT_US, "{r:?}");
    }
}

/// `bench compare --systems vmm-min,qemu`: one table with native, the
/// built-in guest and the QEMU Linux guest, each guest with its ratio to
/// native per row (an `only` subset, so the ttcp and macro parts stay out).
#[test]
fn bench_compare_has_a_qemu_linux_guest_column_with_ratios() {
    let _g = lock();
    if !common::root_or_skip("bench_compare_qemu_column") {
        return;
    }
    let (kernel, initrd, _) = image();
    let json = common::temp_path("compare-qemu.json");
    let out = common::run_with_limit(
        &[
            "bench",
            "compare",
            "--quick",
            "--systems",
            "vmm-min,qemu",
            "--only",
            "null_call,stat,mem_lat_4k",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(240),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report = results::bench::BenchReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let md = String::from_utf8_lossy(&out.stdout);
    eprintln!("{md}");
    let ids = ["null_call", "stat", "mem_lat_4k"];
    for rows in [&report.native, &report.guest, &report.systems[0].rows] {
        assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ids);
        assert!(rows.iter().all(|r| r.is_well_formed()), "{rows:?}");
    }
    let q = &report.systems[0];
    assert!(md.contains(&format!("| native | vmm-min guest | vmm-min/native | {0} | {0}/native |", q.label)), "{md}");
    // Each QEMU row's ratio cell is its value over native's.
    for id in ids {
        let (n, g) = (
            report.native.iter().find(|r| r.id == id).unwrap().value.unwrap(),
            q.rows.iter().find(|r| r.id == id).unwrap().value.expect("measured in the Linux guest"),
        );
        let line = md.lines().find(|l| l.starts_with(&format!("| {id} |"))).unwrap();
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells[7], bench_suites::table::fmt_value(g / n), "{line}");
    }
}

/// `migbench bench WHICH --quick --systems qemu EXTRA` with the test
/// image; its JSON report and its printed table.
fn bench_with_qemu(which: &str, extra: &[&str], limit: Duration) -> (results::bench::BenchReport, String) {
    let (kernel, initrd, _) = image();
    let json = common::temp_path(&format!("{which}-qemu.json"));
    let mut args = vec!["bench", which, "--quick", "--systems", "qemu", "--kernel"];
    args.extend([kernel.to_str().unwrap(), "--initrd", initrd.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    args.extend(extra);
    let out = common::run_with_limit(&args, limit);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report = results::bench::BenchReport::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{md}");
    (report, md)
}

/// `migbench bench tcp --quick --systems qemu`: the ttcp table gains the
/// QEMU Linux guest ↔ host column, every direction at every MTU measured
/// by the guest agent's raw TCP end, with the ratio to native; no
/// namespace of the run is left behind.
#[test]
fn bench_tcp_has_the_linux_guest_in_both_directions_at_both_mtus() {
    let _g = lock();
    if !common::root_or_skip("bench_tcp_qemu") {
        return;
    }
    let before = common::ttcp_namespaces();
    let (report, md) = bench_with_qemu("tcp", &[], Duration::from_secs(300));
    let systems: Vec<&str> = report.ttcp.iter().map(|s| s.system.as_str()).collect();
    assert_eq!(systems, ["native", "vmm-min", "qemu"]);
    let q = &report.ttcp[2];
    assert!(q.label.starts_with("QEMU Linux guest ("), "{}", q.label);
    assert!(md.contains(&format!("| {0} | vmm-min guest (KVM)/native | {0}/native |", q.label)), "{md}");
    for dir in ["tx", "rx"] {
        for mtu in [1500, 500] {
            let id = format!("ttcp_{dir}_{mtu}");
            let r = q.rows.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("qemu lacks {id}"));
            assert!(r.is_well_formed(), "{r:?}");
            assert!(r.value.is_some_and(|v| v > 0.0), "qemu {id} not measured: {r:?}");
            assert!(r.method.contains("QEMU Linux guest") && r.method.contains("median"), "{}", r.method);
            let n = report.ttcp[0].rows.iter().find(|r| r.id == id).and_then(|r| r.value).expect("native measured");
            let line = md.lines().find(|l| l.starts_with(&format!("| {id} |"))).expect("a table line");
            assert!(line.contains(&bench_suites::table::fmt_value(r.value.unwrap() / n)), "{line}");
        }
    }
    common::assert_no_ttcp_namespace_left(&before);
}

/// `migbench bench macro --quick --systems qemu`: the relative-performance
/// figure gains a bar per workload for the QEMU Linux guest: the
/// process-based stand-ins measured inside it (same programs as natively,
/// normalised to native), the others n/a with the reason; the chart names
/// the system and the JSON has every bar.
#[test]
fn bench_macro_runs_the_stand_ins_inside_the_linux_guest() {
    let _g = lock();
    if !common::root_or_skip("bench_macro_qemu") {
        return;
    }
    let charts = common::temp_path("macro-qemu-chart");
    let (report, _) = bench_with_qemu("macro", &["--chart-dir", charts.to_str().unwrap()], Duration::from_secs(600));
    let svg = std::fs::read_to_string(charts.join("relative.svg")).expect("the chart");
    let _ = std::fs::remove_dir_all(&charts);
    let m = report.macro_bench.expect("the figure's data");
    let label = &m.systems.iter().find(|(s, _)| s == "qemu").expect("a qemu system").1;
    assert!(label.starts_with("QEMU Linux guest ("), "{label}");
    assert!(svg.contains(label.as_str()), "the chart does not name {label}");
    for w in &m.workloads {
        let b = w.bars.iter().find(|b| b.system == "qemu").unwrap_or_else(|| panic!("no qemu bar for {}", w.id));
        match w.id.as_str() {
            "cpu" | "build" | "fs" => {
                let n = w.bars.iter().find(|b| b.system == "native").and_then(|b| b.score).expect("native score");
                let (s, r) = (b.score.expect("measured in the guest"), b.relative.expect("normalised"));
                assert!(s > 0.0 && (r - s / n).abs() < 1e-9, "{b:?}");
                assert!(b.method.contains("inside the QEMU Linux guest"), "{}", b.method);
            }
            _ => assert!(b.score.is_none() && b.na_reason.as_deref().is_some_and(|r| !r.is_empty()), "{b:?}"),
        }
    }
}
