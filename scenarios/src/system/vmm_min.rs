//! migbench's own VMM as a system under test: the destination
//! (`migbench vmm --incoming`) and the source (`migbench run --config`) are
//! child processes; the source's configuration crosses the process
//! boundary as one serialized [`VmConfig`], and both are driven over their
//! control sockets with the typed protocol ([`vmm_min::control`]).

use super::{GuestSpec, MigrationProgress, RunContext, Side, SystemUnderTest, Teardown};
use crate::error::RunnerError;
use crate::process::ChildProcess;
use results::{MigrationStats, Policy};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use vmm_min::config::VmConfig;
use vmm_min::control::{Client, Phase, Reply, Request, Resolution};
use vmm_min::{MemoryBackend, Workload};

/// How long a VMM may take to answer its first `status`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a migration may take, at most.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the guest's memory check may take.
const MEMCHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// One VMM process and its control socket.
struct VmmProcess {
    process: ChildProcess,
    client: Client,
}

/// The vmm-min system: a source and a destination VMM process.
pub struct VmmMin {
    exe: PathBuf,
    backend: MemoryBackend,
    tls_dir: Option<PathBuf>,
    quiet: bool,
    source: Option<VmmProcess>,
    destination: Option<VmmProcess>,
    /// The destination's migration address, from its first `status`.
    to: Option<String>,
    /// When the source VMM was launched (`CLOCK_MONOTONIC`, ns).
    source_launched_ns: Option<u64>,
    /// Auto-converge for the migration.
    throttle: Option<results::Throttle>,
    /// A destination started elsewhere (`migbench vmm --incoming ADDR`),
    /// which this system drives but does not start or check.
    remote: Option<String>,
    /// The stop-and-copy deadline, when the link calls for a longer one
    /// than the VMM's default.
    stop_deadline_ms: Option<u64>,
    /// The guest's NIC when the run has no topology (a real host's TAP).
    nic: Option<vmm_min::config::NetConfig>,
}

impl VmmMin {
    /// The system, with `exe` the `migbench` binary that plays both VMMs.
    pub fn new(exe: PathBuf, backend: MemoryBackend) -> Self {
        Self {
            exe,
            backend,
            tls_dir: None,
            quiet: true,
            source: None,
            destination: None,
            to: None,
            source_launched_ns: None,
            remote: None,
            nic: None,
            stop_deadline_ms: None,
            throttle: None,
        }
    }

    /// Migrates over mutual TLS with the credentials in `dir`.
    pub fn with_tls_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.tls_dir = dir;
        self
    }

    /// Migrates to a destination that someone started elsewhere with
    /// `migbench vmm --incoming ADDR` (`to` is `HOST:PORT`) instead of
    /// starting one.
    pub fn with_remote(mut self, to: Option<String>) -> Self {
        self.remote = to;
        self
    }

    /// Gives the guest this NIC (an existing TAP on this host) when the run
    /// has no topology of its own.
    pub fn with_nic(mut self, nic: Option<vmm_min::config::NetConfig>) -> Self {
        self.nic = nic;
        self
    }

    /// The VM configuration of `guest` on this system.
    pub fn config(&self, guest: &GuestSpec, ctx: &RunContext) -> Result<VmConfig, RunnerError> {
        let workload: Workload = guest.workload.parse()?;
        let mut config =
            VmConfig { memory: guest.memory, vcpus: guest.vcpus, workload, backend: self.backend, net: None };
        if let (Some(names), Some(file_bytes)) = (ctx.names, ctx.file_bytes) {
            config.net = Some(names.source_nic(file_bytes));
        } else if let Some(nic) = &self.nic {
            config.net = Some(nic.clone());
        }
        vmm_min::vmm::check_on_host(&config)?;
        Ok(config)
    }

    fn side(&self, side: Side) -> Result<&VmmProcess, RunnerError> {
        match side {
            Side::Source => self.source.as_ref(),
            Side::Destination => self.destination.as_ref(),
        }
        .ok_or_else(|| {
            let message = match (&self.remote, side) {
                (Some(to), Side::Destination) => format!(
                    "the destination at {to} is remote: ask it through its own control socket (`migbench vmm --control`)"
                ),
                _ => format!("no {} VMM runs", side.name()),
            };
            RunnerError::System { system: "vmm-min", message }
        })
    }

    fn start_destination(&mut self, ctx: &RunContext) -> Result<(), RunnerError> {
        let sock = ctx.dir.join("destination.sock");
        let listen = ctx.names.map_or_else(|| "127.0.0.1:0".to_string(), |n| n.migration_listen(0));
        let mut cmd = Command::new(&self.exe);
        cmd.args(["vmm", "--incoming", &listen, "--control"]).arg(&sock).stdin(Stdio::null()).stdout(Stdio::null());
        if self.quiet {
            cmd.arg("--quiet");
        }
        if let Some(n) = ctx.names {
            cmd.args(["--net-run-id", &n.run_id]);
        }
        match (&self.tls_dir, ctx.names.and_then(|n| n.hosts.as_ref())) {
            (Some(d), _) => {
                cmd.arg("--tls-dir").arg(d);
            }
            // The simulated hosts' migration link is a veth pair inside
            // namespaces this run made: the stream never leaves the machine.
            (None, Some(_)) => {
                cmd.arg("--insecure");
            }
            (None, None) => {}
        }
        // With simulated hosts the destination runs on its host.
        let ns = ctx.names.filter(|n| n.hosts.is_some()).map(|n| n.destination_ns());
        let mut process = ChildProcess::spawn_in("destination VMM", cmd, ns)?;
        let client = Client::new(&sock);
        let status = client.wait_ready(READY_TIMEOUT, || process.exited())?;
        let Phase::Incoming { listen } = status.phase else {
            return Err(RunnerError::System {
                system: "vmm-min",
                message: format!("the destination VMM is {:?}, not waiting for a source", status.phase),
            });
        };
        self.to = Some(listen);
        self.destination = Some(VmmProcess { process, client });
        Ok(())
    }

    fn start_source(&mut self, config: &VmConfig, ctx: &RunContext) -> Result<(), RunnerError> {
        let sock = ctx.dir.join("source.sock");
        let file = ctx.dir.join("source.vm.json");
        let text = serde_json::to_vec_pretty(config)
            .map_err(|e| RunnerError::io("encoding the VM configuration")(e.into()))?;
        std::fs::write(&file, text).map_err(RunnerError::io(format!("writing {}", file.display())))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["run", "--duration", "0", "--config"])
            .arg(&file)
            .arg("--control")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.quiet {
            cmd.arg("--quiet");
        }
        if let (Some(n), Some(_)) = (ctx.names, &config.net) {
            cmd.args(["--netns", n.source_ns()]);
        }
        if let Some(d) = &self.tls_dir {
            cmd.arg("--tls-dir").arg(d);
        }
        self.source_launched_ns = Some(results::clock::mono_ns());
        let ns = ctx.names.filter(|n| n.hosts.is_some()).map(|n| n.source_ns());
        let mut process = ChildProcess::spawn_in("source VMM", cmd, ns)?;
        let client = Client::new(&sock);
        client.wait_ready(READY_TIMEOUT, || process.exited())?;
        self.source = Some(VmmProcess { process, client });
        Ok(())
    }
}

impl SystemUnderTest for VmmMin {
    fn name(&self) -> &'static str {
        "vmm-min"
    }

    fn start(&mut self, guest: &GuestSpec, ctx: &RunContext) -> Result<(), RunnerError> {
        let config = self.config(guest, ctx)?;
        // Over a shaped link the final copy may be the whole RAM at the
        // link's rate: allow twice that and a second, at least the VMM's 5 s.
        self.stop_deadline_ms =
            ctx.link.and_then(|l| l.time_ms(guest.memory)).map(|ms| (2.0 * ms + 1000.0).max(5000.0) as u64);
        match &self.remote {
            Some(to) => self.to = Some(to.clone()),
            None => self.start_destination(ctx)?,
        }
        self.start_source(&config, ctx)
    }

    fn set_throttle(&mut self, throttle: Option<results::Throttle>) {
        self.throttle = throttle;
    }

    fn migrate(
        &mut self,
        policy: &Policy,
        verify: bool,
        progress: &mut dyn FnMut(&MigrationProgress),
    ) -> Result<MigrationStats, RunnerError> {
        let to = self.to.clone().ok_or_else(|| RunnerError::System {
            system: "vmm-min",
            message: "no destination address: start the destination first".into(),
        })?;
        let client = self.side(Side::Source)?.client.clone();
        let req = Request::Migrate {
            to,
            policy: policy.clone(),
            verify,
            stop_deadline_ms: self.stop_deadline_ms,
            throttle: self.throttle,
        };
        // The migrate request blocks until the end; a second connection
        // polls the source's status for progress meanwhile.
        let reply = std::thread::scope(|s| {
            let call = s.spawn(|| client.request(&req, MIGRATE_TIMEOUT));
            while !call.is_finished() {
                if let Ok(Some(p)) = client.status().map(|st| st.migration) {
                    progress(&p);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            call.join().unwrap_or_else(|_| {
                Err(vmm_min::control::ControlError::Malformed {
                    path: client.path().to_owned(),
                    message: "the migrate request's thread panicked".into(),
                })
            })
        })?;
        match reply {
            Reply::Migrated(stats) => Ok(*stats),
            other => Err(RunnerError::System {
                system: "vmm-min",
                message: format!("the source answered migrate with a '{}' reply", other.kind()),
            }),
        }
    }

    fn destination_is_remote(&self) -> bool {
        self.remote.is_some()
    }

    fn heartbeat(&self, side: Side) -> Result<u64, RunnerError> {
        Ok(self.side(side)?.client.status()?.heartbeat)
    }

    fn nic_counters(&self, side: Side) -> Result<Option<vmm_min::devices::net::NetStats>, RunnerError> {
        Ok(self.side(side)?.client.status()?.net)
    }

    fn guest_memcheck(&self, side: Side) -> Result<u64, RunnerError> {
        match self.side(side)?.client.request(&Request::Verify, MEMCHECK_TIMEOUT)? {
            Reply::Verified { bad_pages } => Ok(bad_pages),
            other => Err(RunnerError::System {
                system: "vmm-min",
                message: format!("the {} answered verify with a '{}' reply", side.name(), other.kind()),
            }),
        }
    }

    fn resolve_indeterminate(&self) -> Result<Side, RunnerError> {
        let dst = self.side(Side::Destination)?;
        let runs_there = match dst.client.status() {
            Ok(a) if a.phase == Phase::Running => {
                std::thread::sleep(Duration::from_millis(100));
                dst.client.status().is_ok_and(|b| b.heartbeat > a.heartbeat)
            }
            _ => false,
        };
        let (action, side) =
            if runs_there { (Resolution::Discard, Side::Destination) } else { (Resolution::Resume, Side::Source) };
        self.side(Side::Source)?.client.request(&Request::Resolve { action }, Duration::from_secs(10))?;
        Ok(side)
    }

    fn pause(&self, side: Side) -> Result<(), RunnerError> {
        self.side(side)?.client.request(&Request::Pause, Duration::from_secs(10)).map(|_| ()).map_err(Into::into)
    }

    fn resume(&self, side: Side) -> Result<(), RunnerError> {
        self.side(side)?.client.request(&Request::Resume, Duration::from_secs(10)).map(|_| ()).map_err(Into::into)
    }

    fn source_launched_ns(&self) -> Option<u64> {
        self.source_launched_ns
    }

    fn teardown(&mut self) -> Teardown {
        let end = |s: Option<VmmProcess>| {
            s.and_then(|mut s| {
                let _ = s.client.call(&Request::Quit, Duration::from_secs(5));
                let code = s.process.wait(Duration::from_secs(20));
                s.process.kill();
                code
            })
        };
        let destination_exit = end(self.destination.take());
        let source_exit = end(self.source.take());
        Teardown { source_exit, destination_exit }
    }
}
