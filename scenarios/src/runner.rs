//! Runs one migration experiment end to end:
//! 1. creates the network topology (when the guest has a NIC): one lan, or
//!    simulated source, destination and probe hosts with a migration link
//!    that a [`results::Link`] may shape ([`crate::netns`]);
//! 2. starts the system under test ([`SystemUnderTest`]): its destination,
//!    then its source running the workload;
//! 3. starts the HTTP probe inside the probe namespace;
//! 4. migrates after the warm-up, through the system's boundary;
//! 5. checks the guest on the destination (heartbeat, its own memory check),
//!    or on the source after a failed migration;
//! 6. collects the probe's series and the migration's statistics, which share
//!    the host's monotonic clock, and tears everything down.
//!
//! `migbench migrate` and the scenario files both use it.

use crate::error::RunnerError;
use crate::netns::{self, Layout, Names, Topology};
use crate::system::{GuestSpec, MigrationProgress, RunContext, Side, SystemUnderTest};
use probes::http::{ProbeConfig, ProbeHandle, ProbeResult};
use results::{Link, MigrationStats, Outcome, Policy};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The guest's network in an experiment.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// Size of the file the guest serves.
    pub file_bytes: u64,
    /// MTU of the bridge, TAPs and veths.
    pub mtu: u32,
    /// Run the HTTP probe during the migration.
    pub probe: Option<ProbeSpec>,
    /// Source, destination and probe on simulated hosts of their own, the
    /// migration over a veth pair between the first two.
    pub hosts: bool,
    /// Shaping of the migration link (implies `hosts`).
    pub link: Option<Link>,
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
    /// The guest.
    pub guest: GuestSpec,
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
    /// Auto-converge (`None`: off).
    pub throttle: Option<results::Throttle>,
}

/// What an experiment produced.
#[derive(Debug, Clone)]
pub struct ExperimentResult {
    /// The system that ran it.
    pub system: &'static str,
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
    /// How the system ran (its version, accelerator and why), if it says.
    pub system_note: Option<String>,
    /// Launch of the source to the guest's first HTTP 200, ms.
    pub boot_to_http_ms: Option<f64>,
    /// The shaped link the migration crossed, if any.
    pub link: Option<Link>,
}

impl ExperimentResult {
    /// The transport's limit for the bytes the migration sent, ms: the
    /// shaped link's time at its rate when one is set, else the loopback
    /// TCP baseline measured in the same run.
    pub fn transport_limit_ms(&self) -> Option<f64> {
        match self.link.as_ref().and_then(|l| l.time_ms(self.migration.transferred_bytes)) {
            Some(ms) => Some(ms),
            None => self.loopback_tcp_ms,
        }
    }
}

/// What the runner tells its caller while it works.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run's network is up: where the guest and the probe are.
    Network(&'a Names),
    /// A step began, in words ("migrating", ...).
    Phase(&'a str),
    /// The migration is this far.
    Migration(&'a MigrationProgress),
}

/// The run's scratch directory, removed on drop.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Heartbeats on `side` before and after `span`.
fn heartbeats(sut: &dyn SystemUnderTest, side: Side, span: Duration) -> Result<(u64, u64), RunnerError> {
    let a = sut.heartbeat(side)?;
    std::thread::sleep(span);
    Ok((a, sut.heartbeat(side)?))
}

/// How long the guest may take to answer its first HTTP request after the
/// system started (a Linux guest under TCG boots in seconds; the system's
/// own start already waited for the boot where it knows how).
const HTTP_READY_LIMIT: Duration = Duration::from_secs(30);

/// The status code of one `GET /health` (`Connection: close`), read from
/// the status line; `None` when there is no answer yet.
fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", addr.ip()).as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.strip_prefix("HTTP/1.")?.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until the guest answers `GET /health` with 200 from the probe
/// namespace; the monotonic time of that answer.
fn wait_for_guest_http(names: &Names) -> Result<u64, RunnerError> {
    let addr = std::net::SocketAddr::from((names.guest_ip, 80));
    let ok = netns::run_in_netns(&names.probe_ns, || {
        let t = Instant::now();
        while t.elapsed() < HTTP_READY_LIMIT {
            if health_status(addr) == Some(200) {
                return Some(results::clock::mono_ns());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })?;
    ok.ok_or_else(|| RunnerError::System {
        system: "guest",
        message: format!(
            "the guest's HTTP server at {addr} did not answer GET /health with 200 within {HTTP_READY_LIMIT:?}"
        ),
    })
}

/// Runs `exp` on `sut`; `events` hears of each step and of the
/// migration's progress.
pub fn run(
    exp: &Experiment,
    sut: &mut dyn SystemUnderTest,
    events: &mut dyn FnMut(Event),
) -> Result<ExperimentResult, RunnerError> {
    let dir = std::env::temp_dir().join(format!("migbench-{}-{}", std::process::id(), results::clock::mono_ns()));
    std::fs::create_dir_all(&dir).map_err(RunnerError::io(format!("creating {}", dir.display())))?;
    let scratch = ScratchDir(dir);

    // 1. The network. Removed when `topo` is dropped (also on a panic), or
    // on a signal.
    let topo = match &exp.net {
        Some(net) => {
            let layout = Layout { mtu: net.mtu, hosts: net.hosts, link: net.link.clone() };
            Some(Topology::create_with(&netns::new_run_id(), &layout)?)
        }
        None => None,
    };
    let names = match &topo {
        Some(t) => {
            let names = t.names().clone();
            events(Event::Network(&names));
            Some(names)
        }
        None => None,
    };
    let ctx = RunContext {
        dir: &scratch.0,
        names: names.as_ref(),
        file_bytes: exp.net.as_ref().map(|n| n.file_bytes),
        link: exp.net.as_ref().and_then(|n| n.link.as_ref()),
    };
    let mut result = run_in(exp, sut, &ctx, events);
    if let (Ok(r), Some(t)) = (&mut result, &topo) {
        r.link = t.link().cloned();
        if t.link().is_some() {
            // The evidence that the link was shaped as asked.
            r.checks.insert("migration_link_qdiscs".into(), json!(t.migration_qdiscs().ok()));
        }
    }
    sut.teardown();
    drop(scratch);
    if let Some(t) = topo {
        t.remove()?;
    }
    result
}

/// Starts the probe inside the probe namespace.
fn start_probe(names: &Names, p: &ProbeSpec, events: &mut dyn FnMut(Event)) -> Result<ProbeHandle, RunnerError> {
    let cfg = ProbeConfig {
        url: format!("http://{}/file", names.guest_ip),
        interval: p.interval,
        connections: p.connections,
        duration: None,
        ..Default::default()
    };
    let handle = netns::run_in_netns(&names.probe_ns, move || probes::http::spawn(cfg))??;
    events(Event::Phase(&format!(
        "probe: {} connections to http://{}/file, sampling every {:?}",
        p.connections, names.guest_ip, p.interval
    )));
    Ok(handle)
}

fn run_in(
    exp: &Experiment,
    sut: &mut dyn SystemUnderTest,
    ctx: &RunContext,
    events: &mut dyn FnMut(Event),
) -> Result<ExperimentResult, RunnerError> {
    let guest = &exp.guest;
    // 2. Destination, then source.
    sut.start(guest, ctx)?;
    events(Event::Phase(&format!(
        "{}: source running {} ({} MiB RAM, {} vCPUs); warming up for {:?}",
        sut.name(),
        guest.workload,
        guest.memory >> 20,
        guest.vcpus,
        exp.warmup
    )));

    // 3. The probe, inside the probe namespace.
    let mut probe: Option<ProbeHandle> = None;
    let mut boot_to_http_ms = sut.boot_to_http_ms();
    if let (Some(n), Some(net)) = (ctx.names, &exp.net) {
        let ready = wait_for_guest_http(n)?;
        boot_to_http_ms =
            boot_to_http_ms.or_else(|| sut.source_launched_ns().map(|l| results::clock::ms_between(l, ready)));
        if let Some(p) = &net.probe {
            probe = Some(start_probe(n, p, events)?);
        }
    }

    // 4. Migrate.
    std::thread::sleep(exp.warmup);
    events(Event::Phase("migrating"));
    sut.set_throttle(exp.throttle);
    let stats = sut.migrate(&exp.policy, exp.verify, &mut |p| events(Event::Migration(p)))?;

    // 5. Check the guest where it now runs.
    let mut failures = Vec::new();
    let mut checks = Map::new();
    let completed = stats.outcome == Outcome::Completed;
    let here = match stats.outcome {
        Outcome::Completed => Side::Destination,
        Outcome::Indeterminate => {
            let side = sut.resolve_indeterminate()?;
            events(Event::Phase(&format!("indeterminate outcome resolved: the guest runs on the {}", side.name())));
            checks.insert("indeterminate_resolved_to".into(), json!(side.name()));
            side
        }
        Outcome::Cancelled | Outcome::Failed => Side::Source,
    };
    if !completed {
        let how = match stats.outcome {
            Outcome::Cancelled => "cancelled",
            Outcome::Indeterminate => "indeterminate",
            _ => "failed",
        };
        failures.push(format!("migration {how}: {}", stats.reason.as_deref().unwrap_or("no reason given")));
    }
    // A remote destination is the one place this run cannot look: its
    // Started (the migration's `completed`) says its guest ran.
    let remote = here == Side::Destination && sut.destination_is_remote();
    if remote {
        std::thread::sleep(exp.after);
        checks.insert("destination".into(), json!("remote: not checked here; it reported Started"));
    } else {
        let (a, b) = heartbeats(sut, here, exp.after)?;
        checks.insert(format!("{}_heartbeat", here.name()), json!([a, b]));
        if let Some(nic) = sut.nic_counters(here)? {
            checks.insert(format!("{}_nic", here.name()), json!(nic));
        }
        if b <= a {
            failures.push(format!("the guest is not running on the {} (heartbeat {a} -> {b})", here.name()));
        }
    }
    if guest.memcheck && !remote {
        let bad = sut.guest_memcheck(here)?;
        checks.insert("guest_memcheck".into(), json!({"bad_pages": bad}));
        if bad != 0 {
            failures.push(format!("the guest's own memory check failed on the {}: {bad} bad pages", here.name()));
        }
    }
    if exp.verify && completed && !stats.verify.as_ref().is_some_and(|v| v.ok) {
        failures.push("memory verification failed".into());
    }

    // 6. Collect the probe, then stop the VMs.
    let probe = match probe {
        Some(h) => Some(h.stop_and_join()?),
        None => None,
    };
    if let Some(p) = &probe {
        check_probe(p, &stats, &mut checks, &mut failures);
    }
    let ends = sut.teardown();
    if completed {
        checks.insert("source_exit_code".into(), json!(ends.source_exit));
        if ends.source_exit != Some(0) {
            failures.push(format!("the source did not exit cleanly after the migration ({:?})", ends.source_exit));
        }
    }
    let loopback_tcp_ms = loopback_baseline(stats.transferred_bytes).ok();
    Ok(ExperimentResult {
        system: sut.name(),
        migration: stats,
        probe,
        checks,
        failures,
        loopback_tcp_ms,
        names: ctx.names.cloned(),
        system_note: sut.note(),
        boot_to_http_ms,
        link: None,
    })
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
    let listener = TcpListener::bind("127.0.0.1:0").map_err(RunnerError::io("binding a loopback socket"))?;
    let addr = listener.local_addr().map_err(RunnerError::io("reading the loopback address"))?;
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
    let mut s = TcpStream::connect(addr).map_err(RunnerError::io("connecting over loopback"))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).map_err(RunnerError::io("writing over loopback"))?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| RunnerError::io("reading over loopback")(std::io::Error::other("the reader thread panicked")))?
        .map_err(RunnerError::io("reading over loopback"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if got != bytes {
        return Err(RunnerError::io("the loopback baseline")(std::io::Error::other(format!(
            "moved {got} of {bytes} bytes"
        ))));
    }
    Ok(ms)
}
