//! Helpers shared by the end-to-end tests: run the real `migbench` binary.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `migbench` binary under test.
pub fn migbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_migbench"));
    c.stdin(Stdio::null());
    c
}

/// Runs `migbench ARGS`, failing the test if it does not finish within `limit`.
pub fn run_with_limit(args: &[&str], limit: Duration) -> Output {
    let child = migbench().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn migbench");
    wait_with_limit(child, limit)
}

/// Waits for a child, killing it and failing the test after `limit`.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("migbench did not finish within {limit:?}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A unique temporary path for sockets and files, removed by the caller.
pub fn temp_path(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("migbench-test-{}-{n}-{name}", std::process::id()))
}

/// Stdout parsed as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits up to 20 s for a control socket to appear.
pub fn wait_socket(sock: &std::path::Path) {
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "control socket {} never appeared", sock.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One typed control request; panics if the socket cannot be reached.
pub fn control(sock: &std::path::Path, req: vmm_min::control::Request) -> vmm_min::control::Reply {
    wait_socket(sock);
    vmm_min::control::Client::new(sock)
        .call(&req, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("control request {req:?} to {}: {e}", sock.display()))
}

/// The VMM's status.
pub fn status(sock: &std::path::Path) -> vmm_min::control::Status {
    match control(sock, vmm_min::control::Request::Status) {
        vmm_min::control::Reply::Status(s) => s,
        other => panic!("status answered with {other:?}"),
    }
}

/// The migration address of a destination VMM, from its status (it
/// answers from its start).
pub fn incoming_addr(sock: &std::path::Path) -> String {
    match status(sock).phase {
        vmm_min::control::Phase::Incoming { listen } => listen,
        other => panic!("the destination is {other:?}, not waiting for a source"),
    }
}

/// Migrates through the source's control socket; the statistics as JSON.
pub fn migrate(sock: &std::path::Path, to: &str, policy: results::Policy, verify: bool) -> serde_json::Value {
    migrate_with(sock, to, policy, verify, None)
}

/// [`migrate`] with auto-converge.
pub fn migrate_with(
    sock: &std::path::Path,
    to: &str,
    policy: results::Policy,
    verify: bool,
    throttle: Option<results::Throttle>,
) -> serde_json::Value {
    let req =
        vmm_min::control::Request::Migrate { to: to.to_owned(), policy, verify, stop_deadline_ms: None, throttle };
    match control(sock, req) {
        vmm_min::control::Reply::Migrated(stats) => serde_json::to_value(*stats).expect("stats as JSON"),
        other => panic!("migrate answered with {other:?}"),
    }
}

/// A VMM process with a control socket, killed on drop.
pub struct VmmProcess {
    /// The process.
    pub child: Option<Child>,
    /// Its control socket.
    pub sock: PathBuf,
    addr: Option<String>,
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.sock);
    }
}

impl VmmProcess {
    pub fn source(args: &[&str]) -> VmmProcess {
        let sock = temp_path("src.sock");
        let child = migbench()
            .args(["run", "--duration", "0", "--quiet", "--control"])
            .arg(&sock)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn source");
        wait_socket(&sock);
        VmmProcess { child: Some(child), sock, addr: None }
    }

    pub fn destination(args: &[&str]) -> VmmProcess {
        let sock = temp_path("dst.sock");
        let child = migbench()
            .args(["vmm", "--incoming", "127.0.0.1:0", "--quiet", "--control"])
            .arg(&sock)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn destination");
        let addr = incoming_addr(&sock);
        VmmProcess { child: Some(child), sock, addr: Some(addr) }
    }

    pub fn addr(&self) -> String {
        self.addr.clone().expect("a destination")
    }

    pub fn heartbeat(&self) -> u64 {
        status(&self.sock).heartbeat
    }

    /// Asserts the guest makes progress here.
    pub fn assert_alive(&self) {
        let a = self.heartbeat();
        std::thread::sleep(Duration::from_millis(300));
        let b = self.heartbeat();
        assert!(b > a, "guest not running: heartbeat {a} -> {b}");
    }

    /// Asserts the guest's own memcheck passes here.
    pub fn assert_memcheck(&self) {
        match control(&self.sock, vmm_min::control::Request::Verify) {
            vmm_min::control::Reply::Verified { bad_pages } => assert_eq!(bad_pages, 0, "guest memory check failed"),
            other => panic!("guest memory check failed: {other:?}"),
        }
    }

    pub fn migrate(&self, to: &VmmProcess, policy: serde_json::Value) -> serde_json::Value {
        self.migrate_to(&to.addr(), policy)
    }

    /// Migrates to `addr` (a destination, or a proxy in front of one).
    pub fn migrate_to(&self, addr: &str, policy: serde_json::Value) -> serde_json::Value {
        let policy =
            if policy.is_null() { results::Policy::default() } else { serde_json::from_value(policy).expect("policy") };
        migrate(&self.sock, addr, policy, true)
    }

    /// Waits for the process to exit; its code and stderr.
    pub fn exit(mut self, limit: Duration) -> (Option<i32>, String) {
        let child = self.child.take().expect("child");
        let out = wait_with_limit(child, limit);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl VmmProcess {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Whether the guest makes progress here within `span`.
    pub fn beating(&self, span: Duration) -> bool {
        let a = status(&self.sock).heartbeat;
        std::thread::sleep(span);
        status(&self.sock).heartbeat > a
    }
}

/// Whether the test may create network namespaces; says why it skips if not.
pub fn root_or_skip(test: &str) -> bool {
    if scenarios::netns::is_root() {
        return true;
    }
    eprintln!("{test}: skipped: needs root to create network namespaces, a bridge and TAPs");
    false
}

/// The ttcp namespaces that exist now (`mb` + run id + `n`/`g` + MTU).
pub fn ttcp_namespaces() -> BTreeSet<String> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.starts_with("mb") && ["n1500", "g1500", "n500", "g500", "q1500", "q500"].iter().any(|m| n.contains(m))
        })
        .map(str::to_owned)
        .collect()
}

/// Fails if a ttcp namespace exists that did not exist `before` the run:
/// leftovers of an earlier, killed run (which could not clean up) are not
/// this run's.
pub fn assert_no_ttcp_namespace_left(before: &BTreeSet<String>) {
    let left: Vec<_> = ttcp_namespaces().difference(before).cloned().collect();
    assert!(left.is_empty(), "ttcp namespaces left behind: {left:?}");
}
