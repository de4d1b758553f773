//! Migration over mutual TLS between real VMM processes: a TLS migration
//! completes with memory verified; a source without TLS, or with
//! credentials from another CA, is refused and keeps its guest; a
//! destination will not listen on a non-loopback address in the clear
//! unless told `--insecure`.

mod common;

use common::VmmProcess as Vmm;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn tls_dir(name: &str) -> std::path::PathBuf {
    let dir = temp_path(name);
    let out = run_with_limit(&["tls-init", dir.to_str().expect("utf8")], Duration::from_secs(20));
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

fn with_tls(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.push("--tls-dir".into());
    v.push(dir.to_str().expect("utf8").into());
    v
}

#[test]
fn a_tls_migration_completes_with_memory_verified() {
    let dir = tls_dir("tls-ok");
    let json = temp_path("tls.json");
    let args = with_tls(
        &dir,
        &[
            "migrate",
            "--workload",
            "memcheck:bytes=16M",
            "--memory",
            "128M",
            "--verify",
            "--warmup",
            "300ms",
            "--after",
            "300ms",
            "--json",
            json.to_str().expect("utf8"),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with_limit(&args, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("JSON");
    assert_eq!(j["migration"]["outcome"], "completed");
    assert_eq!(j["migration"]["verify"]["ok"], true);
    assert_eq!(j["checks"]["guest_memcheck"]["bad_pages"], 0);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&json);
}

#[test]
fn sources_without_tls_or_with_another_ca_are_refused_and_keep_the_guest() {
    let (good, other) = (tls_dir("tls-dst"), tls_dir("tls-other"));
    let dst_args = with_tls(&good, &[]);
    let dst = Vmm::destination(&dst_args.iter().map(String::as_str).collect::<Vec<_>>());
    // In the clear: the destination's TLS layer rejects it.
    let plain = Vmm::source(&["--workload", "memcheck:bytes=8M", "--memory", "64M"]);
    let stats = plain.migrate(&dst, Value::Null);
    assert_eq!(stats["outcome"], "failed", "{stats:#}");
    assert!(plain.beating(Duration::from_millis(300)));
    plain.assert_memcheck();
    // With a certificate from another CA: the handshake fails.
    let src_args = with_tls(&other, &["--workload", "memcheck:bytes=8M", "--memory", "64M"]);
    let stranger = Vmm::source(&src_args.iter().map(String::as_str).collect::<Vec<_>>());
    let stats = stranger.migrate(&dst, Value::Null);
    assert_eq!(stats["outcome"], "failed", "{stats:#}");
    assert!(stats["reason"].as_str().unwrap_or("").to_lowercase().contains("certificate"), "{stats:#}");
    assert!(stranger.beating(Duration::from_millis(300)));
    // The destination listened on past both, and takes a source with the right credentials.
    let src_args = with_tls(&good, &["--workload", "memcheck:bytes=8M", "--memory", "64M"]);
    let friend = Vmm::source(&src_args.iter().map(String::as_str).collect::<Vec<_>>());
    let stats = friend.migrate(&dst, Value::Null);
    assert_eq!(stats["outcome"], "completed", "{stats:#}");
    dst.assert_memcheck();
    for d in [good, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_non_loopback_listener_needs_tls_or_insecure() {
    let out = run_with_limit(&["vmm", "--incoming", "0.0.0.0:0", "--duration", "1s"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not a loopback address") && err.contains("--tls-dir"), "{err}");
    // With --insecure it listens (and gives up after its deadline: no source comes).
    let sock = temp_path("insecure.sock");
    let mut child = migbench()
        .args(["vmm", "--incoming", "0.0.0.0:0", "--insecure", "--quiet", "--control"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let addr = incoming_addr(&sock);
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
}
