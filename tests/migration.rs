//! End-to-end tests of live migration between real VMM processes. Guest
//! memory is verified after every migration: by the RAM digest (`--verify`)
//! and, for `memcheck`, by the guest's own full check.

mod common;

use common::VmmProcess as Vmm;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;
use vmm_min::migration::wire::{FrameWriter, Kind};

/// Migrations are heavy on a 2-core machine: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const LIMIT: Duration = Duration::from_secs(120);

fn assert_completed(stats: &Value) {
    assert_eq!(stats["outcome"], "completed", "{stats:#}");
    assert_eq!(stats["verify"]["ok"], true, "digest mismatch: {stats:#}");
    assert!(stats["downtime_ms"].as_f64().is_some_and(|d| d > 0.0), "{stats:#}");
    let b = &stats["downtime_breakdown"];
    let sum: f64 = ["pause_ms", "final_copy_ms", "state_ms", "restore_ms", "resume_ms"]
        .iter()
        .map(|k| b[k].as_f64().expect("breakdown part"))
        .sum();
    let d = stats["downtime_ms"].as_f64().unwrap_or(0.0);
    assert!((sum - d).abs() < 0.01, "breakdown {sum} != downtime {d}");
}

#[test]
fn idle_guest_migrates_with_verified_memory_and_keeps_beating() {
    let _g = serial();
    let out_file = temp_path("idle.json");
    let out = run_with_limit(
        &["migrate", "--verify", "--warmup", "500ms", "--after", "500ms", "--json", out_file.to_str().unwrap()],
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&std::fs::read(&out_file).expect("json file")).expect("JSON");
    let _ = std::fs::remove_file(&out_file);
    assert_completed(&j["migration"]);
    let hb = &j["checks"]["destination_heartbeat"];
    assert!(hb[1].as_u64() > hb[0].as_u64(), "{hb}");
    assert_eq!(j["migration"]["ram_bytes"], 512u64 << 20);
    assert!(j["migration"]["zero_pages"].as_u64() > Some(100_000), "idle RAM is mostly zero pages");
}

#[test]
fn memcheck_guest_verifies_itself_after_migration() {
    let _g = serial();
    let src =
        Vmm::source(&["--workload", "memcheck:bytes=64M,rate=20000", "--memory", "256M", "--memory-backend", "memfd"]);
    let dst = Vmm::destination(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let stats = src.migrate(&dst, Value::Null);
    assert_completed(&stats);
    dst.assert_alive();
    dst.assert_memcheck();
    let (code, err) = src.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "source after migration: {err}");
}

#[test]
fn stress_downtime_policy_cancel_and_force_at_timeout() {
    let _g = serial();
    // 300 ms at 200 Mbit/s is 7.5 MB, far less than three workers dirty:
    // the policy cannot converge and must follow its timeout strategy.
    let stress = ["--workload", "stress:vm=3,bytes=32M", "--memory", "256M", "--vcpus", "4"];
    let policy = |strategy: &str| json!({"kind": "downtime", "downtime_ms": 300, "timeout_ms": 1500, "on_timeout": strategy, "max_bandwidth_mbps": 200});

    let src = Vmm::source(&stress);
    let dst = Vmm::destination(&[]);
    let stats = src.migrate(&dst, policy("cancel"));
    assert_eq!(stats["outcome"], "cancelled", "{stats:#}");
    assert!(stats["reason"].as_str().unwrap_or("").contains("did not converge"), "{stats:#}");
    src.assert_alive();
    let (code, err) = dst.exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "destination after a cancel: {err}");
    assert!(err.contains("aborted"), "{err}");
    // The source's memory is intact: a verified migration still succeeds.
    let dst = Vmm::destination(&[]);
    let stats = src.migrate(&dst, policy("force"));
    assert_completed(&stats);
    assert!(stats["stop_reason"].as_str().unwrap_or("").contains("forcing"), "{stats:#}");
    dst.assert_alive();

    // And at full speed the 300 ms target completes, or follows the cancel strategy.
    let src = Vmm::source(&stress);
    let dst = Vmm::destination(&[]);
    let stats = src.migrate(&dst, json!({"kind": "downtime", "downtime_ms": 300, "timeout_ms": 10000}));
    match stats["outcome"].as_str() {
        Some("completed") => {
            assert_completed(&stats);
            dst.assert_alive();
        }
        Some("cancelled") => src.assert_alive(),
        other => panic!("unexpected outcome {other:?}: {stats:#}"),
    }
}

#[test]
fn xen_policy_completes_with_the_rate_rising_as_specified() {
    let _g = serial();
    let src = Vmm::source(&["--workload", "stress:vm=1,bytes=8M", "--memory", "128M", "--vcpus", "2"]);
    let dst = Vmm::destination(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let stats = src.migrate(&dst, json!({"kind": "xen"}));
    assert_completed(&stats);
    dst.assert_alive();
    let rounds = stats["rounds"].as_array().expect("rounds");
    assert!(rounds.len() >= 2, "a dirtying guest needs several rounds: {stats:#}");
    assert_eq!(rounds[0]["rate_limit_mbps"], 100.0);
    for w in rounds.windows(2) {
        let dirty_mbps = w[0]["dirty_rate_pages_s"].as_f64().unwrap() * 4096.0 * 8.0 / 1e6;
        let want = (dirty_mbps + 50.0).min(1000.0);
        let got = w[1]["rate_limit_mbps"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-6 * want.max(1.0), "round {}: limit {got}, want {want}", w[1]["round"]);
        assert!(got > 100.0, "the rate must rise above the initial 100 Mbit/s");
    }
}

#[test]
fn ping_pong_three_times_with_memory_verified_each_time() {
    let _g = serial();
    let mut here = Vmm::source(&["--workload", "memcheck:bytes=32M,rate=20000", "--memory", "128M"]);
    for hop in 0..3 {
        let there = Vmm::destination(&[]);
        std::thread::sleep(Duration::from_millis(200));
        let stats = here.migrate(&there, Value::Null);
        assert_completed(&stats);
        there.assert_memcheck();
        let (code, err) = here.exit(Duration::from_secs(20));
        assert_eq!(code, Some(0), "hop {hop}: {err}");
        here = there;
    }
    here.assert_alive();
}

#[test]
fn killing_the_destination_during_precopy_leaves_the_source_running() {
    let _g = serial();
    let src = Vmm::source(&["--workload", "memcheck:bytes=64M,rate=50000", "--memory", "256M"]);
    let mut dst = Vmm::destination(&[]);
    let mut child = dst.child.take().expect("child");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let _ = child.kill();
        let _ = child.wait();
    });
    // 50 Mbit/s keeps pre-copy busy for seconds.
    let stats = src.migrate(&dst, json!({"kind": "downtime", "max_bandwidth_mbps": 50}));
    killer.join().expect("killer");
    assert_eq!(stats["outcome"], "failed", "{stats:#}");
    assert!(stats["reason"].as_str().is_some_and(|r| !r.is_empty()));
    src.assert_alive();
    src.assert_memcheck();
}

#[test]
fn destination_refuses_a_mismatched_configuration() {
    let _g = serial();
    let src = Vmm::source(&["--memory", "512M"]);
    let dst = Vmm::destination(&["--memory", "256M"]);
    let stats = src.migrate(&dst, Value::Null);
    assert_eq!(stats["outcome"], "failed");
    assert!(stats["reason"].as_str().unwrap_or("").contains("memory mismatch"), "{stats:#}");
    src.assert_alive();
    let (code, err) = dst.exit(Duration::from_secs(10));
    assert_eq!(code, Some(1));
    assert!(err.contains("memory mismatch"), "{err}");
}

/// Sends `bytes` to a fresh destination and returns its exit code and stderr.
fn feed_destination(bytes: &[u8]) -> (Option<i32>, String) {
    let dst = Vmm::destination(&[]);
    let mut s = TcpStream::connect(dst.addr()).expect("connect");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Read whatever the destination answers until it closes.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    dst.exit(Duration::from_secs(20))
}

/// A migration stream as a source would write it: one writer, so the
/// frames carry consecutive sequence numbers.
struct Stream(FrameWriter<Vec<u8>>);

impl Stream {
    fn hello() -> Stream {
        let config = vmm_min::VmConfig {
            memory: 64 << 20,
            vcpus: 1,
            workload: vmm_min::Workload::Idle,
            backend: vmm_min::MemoryBackend::Anon,
            net: None,
        };
        let hello = vmm_min::migration::protocol::Hello {
            wire_version: vmm_min::migration::wire::VERSION,
            config,
            image_fingerprint: vmm_min::guest_image::fingerprint(),
            start_mono_ns: 0,
            verify: false,
        };
        let mut w = FrameWriter::new(Vec::new());
        w.send_json(Kind::Hello, &hello).expect("frame");
        Stream(w)
    }

    fn pages(mut self, payload: &[&[u8]]) -> Stream {
        self.0.send_parts(Kind::Pages, payload).expect("frame");
        self
    }

    fn complete(mut self) -> Stream {
        self.0.send_json(Kind::Complete, &json!({"pause_requested_ns": 0, "sent_ns": 0})).expect("frame");
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner()
    }
}

#[test]
fn malformed_streams_are_rejected_without_panic_or_resume() {
    let _g = serial();
    let one_page: Vec<u8> = [&1u32.to_le_bytes()[..], &5u64.to_le_bytes(), &[0xab; 4096]].concat();
    let hello_len = Stream::hello().bytes().len();
    let good = Stream::hello().pages(&[&one_page]).bytes();

    let mut corrupted = good.clone();
    let n = corrupted.len();
    corrupted[n - 100] ^= 0x40;
    let truncated = good[..hello_len + (good.len() - hello_len) / 2].to_vec();
    let outside: Vec<u8> = [&1u32.to_le_bytes()[..], &(1u64 << 40).to_le_bytes(), &[0u8; 4096]].concat();
    let out_of_range = Stream::hello().pages(&[&outside]).bytes();
    let no_state = Stream::hello().pages(&[&one_page]).complete().bytes();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("corrupted", corrupted, "checksum mismatch"),
        ("truncated", truncated, "truncated"),
        ("page outside RAM", out_of_range, "outside the guest"),
        ("no state", no_state, "no State frame"),
    ];
    for (name, bytes, want) in cases {
        let (code, err) = feed_destination(&bytes);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: expected '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!err.contains("incoming migration complete"), "{name}: resumed a partial VM: {err}");
    }
}

#[test]
fn stray_and_silent_connections_do_not_use_up_the_destination() {
    let _g = serial();
    let dst = Vmm::destination(&[]);
    // Garbage, then a connection that never sends anything: the
    // destination drops both (the silent one after its Hello timeout) and
    // listens on.
    let mut garbage = TcpStream::connect(dst.addr()).expect("connect");
    let _ = garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drop(garbage);
    let _silent = TcpStream::connect(dst.addr()).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(status(&dst.sock).phase, vmm_min::control::Phase::Incoming { .. }));
    let src = Vmm::source(&["--workload", "memcheck:bytes=16M,rate=20000", "--memory", "128M"]);
    let stats = src.migrate(&dst, Value::Null);
    assert_completed(&stats);
    dst.assert_alive();
    dst.assert_memcheck();
}
