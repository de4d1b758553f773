//! Runs one migration experiment end to end:
//! 1. creates the network topology (when the guest has a NIC);
//! 2. starts the destination (`migbench vmm --incoming`) and the source
//!    (`migbench run`) as child processes, which die with this process;
//! 3. starts the HTTP probe inside the probe namespace;
//! 4. migrates after the warm-up, over the source's control socket;
//! 5. checks the guest on the destination (heartbeat, its own memory check),
//!    or on the source after a failed migration;
//! 6. collects the probe's series and the migration's statistics, which share
//!    the host's monotonic clock, and tears everything down.
//!
//! `migbench migrate` and the scenario files both use it.

use crate::netns::{self, Names, Topology};
use probes::http::{ProbeConfig, ProbeHandle, ProbeResult};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_min::config::{format_size, VmConfig};
use vmm_min::migration::{MigrationStats, Outcome, Policy};
use vmm_min::Workload;

/// A failed experiment (not a failed migration, which is a result).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> RunnerError + '_ {
    move |e| RunnerError(format!("{what}: {e}"))
}

/// The guest's network in an experiment.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// Size of the file the guest serves.
    pub file_bytes: u64,
    /// MTU of the bridge, TAPs and veths.
    pub mtu: u32,
    /// Run the HTTP probe during the migration.
    pub probe: Option<ProbeSpec>,
}

/// The HTTP probe in an experiment.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Sampling interval.
    pub interval: Duration,
    /// Parallel keep-alive connections.
    pub connections: usize,
}

/// One experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The `migbench` binary that plays source and destination.
    pub exe: PathBuf,
    /// The VM (its `net` is filled in by the runner).
    pub config: VmConfig,
    /// The migration policy.
    pub policy: Policy,
    /// Run time before the migration.
    pub warmup: Duration,
    /// Run time after it.
    pub after: Duration,
    /// Verify RAM with a digest.
    pub verify: bool,
    /// The network, if any.
    pub net: Option<NetSpec>,
}

/// What an experiment produced.
#[derive(Debug, Clone)]
pub struct ExperimentResult {
    /// The migration's statistics.
    pub migration: MigrationStats,
    /// The probe's series, if it ran.
    pub probe: Option<ProbeResult>,
    /// What was checked, with the evidence.
    pub checks: Map<String, Value>,
    /// One line per failed check (empty: success).
    pub failures: Vec<String>,
    /// A plain loopback TCP socket moving the same bytes, ms.
    pub loopback_tcp_ms: Option<f64>,
    /// The topology's names, if there was one.
    pub names: Option<Names>,
}

/// Child processes, killed if still running when dropped; also removes the
/// run's temporary directory.
struct Children {
    dir: PathBuf,
    procs: Vec<(&'static str, Child)>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Children {
    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> Result<&mut Child, RunnerError> {
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(fail(&format!("starting the {name} VMM")))?;
        self.procs.push((name, child));
        Ok(&mut self.procs.last_mut().expect("just pushed").1)
    }

    fn wait(&mut self, name: &str, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        let (_, c) = self.procs.iter_mut().find(|(n, _)| *n == name)?;
        while t.elapsed() < limit {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// Sends one control request and reads the reply.
pub fn control(sock: &Path, req: &Value, timeout: Duration) -> Result<Value, RunnerError> {
    vmm_min::control::request(sock, req, timeout).map_err(|e| RunnerError(e.to_string()))
}

fn wait_for_socket(path: &Path, child: &mut Child, what: &str) -> Result<(), RunnerError> {
    let t = Instant::now();
    while !path.exists() {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(RunnerError(format!(
                "the {what} VMM exited ({s}) before it was ready; see its messages above"
            )));
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err(RunnerError(format!("the {what} VMM did not open its control socket within 20 s")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Heartbeats before and after `span`.
fn heartbeats(sock: &Path, span: Duration) -> Result<(u64, u64), RunnerError> {
    let a = control(sock, &json!({"cmd": "status"}), Duration::from_secs(5))?;
    std::thread::sleep(span);
    let b = control(sock, &json!({"cmd": "status"}), Duration::from_secs(5))?;
    Ok((a["heartbeat"].as_u64().unwrap_or(0), b["heartbeat"].as_u64().unwrap_or(0)))
}

/// Waits until the guest's HTTP server accepts connections from the probe namespace.
fn wait_for_guest_http(names: &Names) -> Result<(), RunnerError> {
    let addr = std::net::SocketAddr::from((names.guest_ip, 80));
    let ok = netns::run_in_netns(&names.probe_ns, || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })
    .map_err(fail("entering the probe namespace"))?;
    if ok {
        Ok(())
    } else {
        Err(RunnerError(format!("the guest's HTTP server at {addr} did not answer within 10 s")))
    }
}

/// Runs `exp`; `log` receives progress lines.
pub fn run(exp: &Experiment, log: &mut dyn FnMut(&str)) -> Result<ExperimentResult, RunnerError> {
    let dir = std::env::temp_dir().join(format!("migbench-{}-{}", std::process::id(), vmm_min::clock::mono_ns()));
    std::fs::create_dir_all(&dir).map_err(fail(&format!("creating {}", dir.display())))?;
    let mut kids = Children { dir: dir.clone(), procs: Vec::new() };
    let (src_sock, dst_sock) = (dir.join("source.sock"), dir.join("destination.sock"));

    // 1. The network. Removed when `topo` is dropped, or on a signal.
    let topo = Arc::new(Mutex::new(None::<Topology>));
    let names = match &exp.net {
        Some(net) => {
            let id = netns::new_run_id();
            let t = Topology::create(&id, net.mtu).map_err(fail("creating the network topology"))?;
            let names = t.names().clone();
            *topo.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            netns::remove_on_signal(topo.clone());
            log(&format!(
                "network: run {id}: guest {} in {}, probe in {}",
                names.guest_ip, names.lan_ns, names.probe_ns
            ));
            Some(names)
        }
        None => None,
    };
    let result = run_in(exp, &mut kids, &src_sock, &dst_sock, names.as_ref(), log);
    drop(kids);
    if let Some(t) = topo.lock().unwrap_or_else(|e| e.into_inner()).take() {
        t.remove().map_err(fail("removing the network topology"))?;
    }
    result
}

fn run_in(
    exp: &Experiment,
    kids: &mut Children,
    src_sock: &Path,
    dst_sock: &Path,
    names: Option<&Names>,
    log: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, RunnerError> {
    let config = &exp.config;
    // 2. Destination, then source.
    let mut dst = Command::new(&exp.exe);
    dst.args(["vmm", "--incoming", "127.0.0.1:0", "--quiet", "--control"])
        .arg(dst_sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(n) = names {
        dst.args(["--net-run-id", &n.run_id]);
    }
    let dst = kids.spawn("destination", dst)?;
    let mut line = String::new();
    if let Some(out) = dst.stdout.take() {
        BufReader::new(out).read_line(&mut line).map_err(fail("reading the destination's address"))?;
    }
    let to = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| RunnerError(format!("the destination VMM did not report its address (got '{}')", line.trim())))?
        .to_owned();

    let mut src = Command::new(&exp.exe);
    src.args(["run", "--duration", "0", "--quiet", "--memory", &format_size(config.memory)])
        .args(["--workload", &config.workload.to_string()])
        .args(["--vcpus", &config.vcpus.to_string(), "--control"])
        .arg(src_sock)
        .args(["--memory-backend", if config.backend == vmm_min::MemoryBackend::Memfd { "memfd" } else { "anon" }])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let (Some(n), Some(net)) = (names, &exp.net) {
        src.args(["--net", "--net-attach", "--run-id", &n.run_id, "--file-size", &net.file_bytes.to_string()]);
    }
    let src = kids.spawn("source", src)?;
    wait_for_socket(src_sock, src, "source")?;
    log(&format!(
        "source running {} ({} RAM, {} vCPUs); warming up for {:?}",
        config.workload,
        format_size(config.memory),
        config.vcpus,
        exp.warmup
    ));

    // 3. The probe, inside the probe namespace.
    let mut probe: Option<ProbeHandle> = None;
    if let (Some(n), Some(net)) = (names, &exp.net) {
        wait_for_guest_http(n)?;
        if let Some(p) = &net.probe {
            let cfg = ProbeConfig {
                url: format!("http://{}/file", n.guest_ip),
                interval: p.interval,
                connections: p.connections,
                duration: None,
                ..Default::default()
            };
            let handle = netns::run_in_netns(&n.probe_ns, move || probes::http::spawn(cfg))
                .map_err(fail("entering the probe namespace"))?
                .map_err(fail("starting the probe"))?;
            log(&format!(
                "probe: {} connections to http://{}/file, sampling every {:?}",
                p.connections, n.guest_ip, p.interval
            ));
            probe = Some(handle);
        }
    }

    // 4. Migrate.
    std::thread::sleep(exp.warmup);
    log(&format!("migrating to {to}"));
    let reply = control(
        src_sock,
        &json!({"cmd": "migrate", "to": to, "policy": exp.policy, "verify": exp.verify}),
        Duration::from_secs(600),
    )?;
    let stats: MigrationStats = serde_json::from_value(reply["stats"].clone())
        .map_err(|e| RunnerError(format!("the source answered without statistics ({e}): {reply}")))?;

    // 5. Check the guest where it now runs.
    let mut failures = Vec::new();
    let mut checks = Map::new();
    let completed = stats.outcome == Outcome::Completed;
    let (here, sock) = if completed { ("destination", dst_sock) } else { ("source", src_sock) };
    if completed {
        // The destination opens its control socket once the VM runs there.
        if let Some((_, c)) = kids.procs.iter_mut().find(|(n, _)| *n == "destination") {
            wait_for_socket(dst_sock, c, "destination")?;
        }
    }
    if !completed {
        failures.push(format!(
            "migration {}: {}",
            if stats.outcome == Outcome::Cancelled { "cancelled" } else { "failed" },
            stats.reason.as_deref().unwrap_or("no reason given")
        ));
    }
    let (a, b) = heartbeats(sock, exp.after)?;
    checks.insert(format!("{here}_heartbeat"), json!([a, b]));
    if b <= a {
        failures.push(format!("the guest is not running on the {here} (heartbeat {a} -> {b})"));
    }
    if matches!(config.workload, Workload::Memcheck { .. }) {
        let v = control(sock, &json!({"cmd": "verify"}), Duration::from_secs(90))?;
        checks.insert("guest_memcheck".into(), v.clone());
        if v["ok"] != true {
            failures.push(format!("the guest's own memory check failed on the {here}: {v}"));
        }
    }
    if exp.verify && completed && !stats.verify.as_ref().is_some_and(|v| v.ok) {
        failures.push("memory verification failed".into());
    }

    // 6. Collect the probe, then stop the VMMs.
    let probe = match probe {
        Some(h) => Some(h.stop_and_join().map_err(fail("the probe failed"))?),
        None => None,
    };
    if let Some(p) = &probe {
        check_probe(p, &stats, &mut checks, &mut failures);
    }
    let _ = control(sock, &json!({"cmd": "quit"}), Duration::from_secs(5));
    if completed {
        let code = kids.wait("source", Duration::from_secs(20));
        checks.insert("source_exit_code".into(), json!(code));
        if code != Some(0) {
            failures.push(format!("the source VMM did not exit cleanly after the migration ({code:?})"));
        }
    }
    let loopback_tcp_ms = loopback_baseline(stats.transferred_bytes).ok();
    Ok(ExperimentResult { migration: stats, probe, checks, failures, loopback_tcp_ms, names: names.cloned() })
}

/// The connections must survive: no reconnect, no corrupted byte, and data
/// flowing again after the guest resumed.
fn check_probe(p: &ProbeResult, stats: &MigrationStats, checks: &mut Map<String, Value>, failures: &mut Vec<String>) {
    let s = &p.summary;
    checks.insert(
        "probe".into(),
        json!({"bytes": s.bytes, "requests": s.requests, "corruptions": s.corruptions, "reconnects": s.reconnects,
               "errors": s.errors, "timeouts": s.timeouts, "connects": s.connects}),
    );
    if s.corruptions > 0 {
        failures.push(format!("{} HTTP responses did not match their ETag", s.corruptions));
    }
    if stats.outcome == Outcome::Completed {
        if s.reconnects > 0 {
            failures.push(format!("the probe reconnected {} times: a TCP connection did not survive", s.reconnects));
        }
        let resumed = stats.resumed_at_ms.map(|ms| stats.start_mono_ns + (ms * 1e6) as u64);
        let after = resumed
            .and_then(|t| p.probe_time_ns(t))
            .map(|t| p.samples.iter().filter(|x| x.t_ns > t).map(|x| x.bytes).sum::<u64>());
        checks.insert("probe_bytes_after_resume".into(), json!(after));
        if after.unwrap_or(0) == 0 {
            failures.push("no HTTP data arrived after the guest resumed on the destination".into());
        }
    }
}

/// Times a plain loopback TCP socket moving `bytes`: the physical limit of
/// this transport, measured in the same invocation as the migration.
pub fn loopback_baseline(bytes: u64) -> Result<f64, RunnerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(fail("binding a loopback socket"))?;
    let addr = listener.local_addr().map_err(fail("reading the loopback address"))?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(fail("connecting over loopback"))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).map_err(fail("writing over loopback"))?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| RunnerError("the loopback reader panicked".into()))?
        .map_err(fail("reading over loopback"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if got != bytes {
        return Err(RunnerError(format!("loopback moved {got} of {bytes} bytes")));
    }
    Ok(ms)
}
