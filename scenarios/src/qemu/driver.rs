//! Starting, migrating and ending QEMU processes.
//!
//! - **Processes:** each QEMU is a child started by its own pid: it enters
//!   its side's namespace (`setns` between fork and exec, so its TAP opens
//!   there): the run's lan namespace, where `-incoming tcp:127.0.0.1:PORT`
//!   is that namespace's loopback, or with simulated hosts the source's and
//!   the destination's host, where the destination listens on its address
//!   on the migration link ([`Names::migration_listen`]) and the stream
//!   crosses that link and its shaping. It
//!   gets `PR_SET_PDEATHSIG(SIGKILL)` so it dies with the runner, and is
//!   killed by that pid and reaped on drop. Nothing is found by name.
//! - **Guest:** `-kernel`/`-initrd` of the image, the [`GuestParams`] on the
//!   kernel command line, a virtio-net NIC on the run's TAP with the run's
//!   MAC (no option ROM: the guest boots from `-kernel`), the console on a
//!   file in the run directory.
//! - **Migration** ([`QemuSystem::migrate`]): capabilities and parameters
//!   from the policy, `migrate` to the destination, `query-migrate` every
//!   [`POLL`] with each reply's monotonic receipt time (rounds in
//!   [`super::rounds`]), QEMU's `total-time`, `downtime` and `setup-time`,
//!   and the STOP (source) and RESUME (destination) events as they arrive.
//! - **`--verify`:** the destination was started with `-S`; once the
//!   migration completed, both paused sides `pmemsave` all of RAM at once
//!   (into `/dev/shm` when the host has the memory) and the dumps are
//!   compared page by page; only then is the destination `cont`ed. Without
//!   `--verify`, a destination started with `-S` is `cont`ed as soon as it
//!   has loaded the state.
//!   The time spent is reported apart and taken out of the downtime.
//! - **Failure:** a migration that fails or is cancelled leaves the source
//!   running (QEMU restarts it; the driver `cont`s it if QEMU did not) and
//!   the destination is killed, so exactly one copy runs.

use super::accel::{self, AccelChoice, AccelDecision};
use super::qmp::{Qmp, QmpError, TimedEvent};
use super::rounds::{self, RamSample};
use crate::netns::Names;
use linux_guest::params::{GuestParams, Workload};
use qapi::qmp;
use results::clock::{mono_ns, ms_between};
use results::{MigrationStats, Outcome, VerifyStats};
use results::{OnTimeout, Policy};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often `query-migrate` is polled.
pub const POLL: Duration = Duration::from_millis(50);
/// How long QEMU may take to create its QMP socket.
const QMP_WAIT: Duration = Duration::from_secs(10);

/// A failure of the QEMU system.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The QEMU binary is not there.
    #[error("{0} not found: apt-get install qemu-system-x86 (or pass the binary's path)")]
    NoBinary(String),
    /// A kernel or initrd is missing.
    #[error("{what} {path} does not exist (run `migbench image build`, or pass --kernel and --initrd)")]
    NoFile {
        /// Kernel or initrd.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Starting or watching a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A QMP command failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The policy has no QEMU counterpart.
    #[error("{0}")]
    NotApplicable(String),
    /// The call came in the wrong state (no source, no destination, …).
    #[error("{0}")]
    State(String),
    /// The guest did not come up.
    #[error("{0}")]
    Guest(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> QemuError {
    let what = what.into();
    move |source| QemuError::Io { what, source }
}

/// How to run QEMU (the scenario file's `[qemu]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {
    /// The binary.
    pub binary: PathBuf,
    /// `-machine`.
    pub machine: String,
    /// `-accel`.
    pub accel: AccelChoice,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub smp: u32,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The guest initramfs (with the agent as init).
    pub initrd: PathBuf,
    /// Extra arguments, appended to both QEMUs.
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// Defaults (512 MiB, 1 vCPU, `pc`, `auto`) for the given kernel and initrd.
    pub fn new(kernel: PathBuf, initrd: PathBuf) -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            machine: "pc".into(),
            accel: AccelChoice::Auto,
            memory_mib: 512,
            smp: 1,
            kernel,
            initrd,
            extra_args: Vec::new(),
        }
    }
}

/// The binary's path if it can be run: a path, or a name on `PATH`.
pub fn find_binary(b: &Path) -> Option<PathBuf> {
    if b.components().count() > 1 {
        return b.is_file().then(|| b.to_path_buf());
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(b)).find(|p| p.is_file())
}

/// Which side a QEMU plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Destination,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

/// One QEMU child and its QMP connection.
struct QemuProcess {
    role: Role,
    child: Child,
    qmp: Qmp,
    launched_ns: u64,
    console: PathBuf,
}

impl QemuProcess {
    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill() on our own child's pid; it is not reaped yet
            // (try_wait above saw it running), so the pid is still ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a QEMU migration is asked to run.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuMigrateOptions {
    /// The policy (`downtime` only; `xen` is n/a for QEMU).
    pub policy: Policy,
    /// `auto-converge` (`--throttle`), with its parameters (`None`: off).
    pub auto_converge: Option<results::Throttle>,
    /// Compare both sides' RAM before the destination runs.
    pub verify: bool,
}

/// What [`run_migration`] needs besides the two processes.
struct MigrationPlan<'a> {
    dir: &'a Path,
    /// The destination's `HOST:PORT`.
    to: &'a str,
    ram_bytes: u64,
    accel: AccelDecision,
    downtime_ms: f64,
    timeout_ms: f64,
    on_timeout: OnTimeout,
    bw_mbps: Option<f64>,
    opts: &'a QemuMigrateOptions,
    /// The destination waits with `-S`: without `--verify` it is `cont`ed
    /// as soon as it has loaded the state.
    dest_paused: bool,
}

/// QEMU's own figures for a migration, next to the common statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuTotals {
    /// `total-time`, ms.
    pub total_time_ms: Option<i64>,
    /// `downtime` as QEMU measured it on the source, ms.
    pub downtime_ms: Option<i64>,
    /// `setup-time`, ms.
    pub setup_time_ms: Option<i64>,
    /// `query-migrate` polls made.
    pub polls: usize,
    /// QEMU's error, for a failed migration.
    pub error: Option<String>,
    /// The accelerator both sides ran with, and why.
    pub accel: AccelDecision,
    /// Pages whose content differed between source and destination
    /// (`--verify`).
    pub verify_mismatched_pages: Option<u64>,
}

/// A migration's results: the common model, and QEMU's totals.
#[derive(Debug, Clone)]
pub struct QemuMigration {
    /// In the common results model.
    pub stats: MigrationStats,
    /// QEMU's own numbers.
    pub qemu: QemuTotals,
}

/// The `qemu` system under test for one run: the network names, the guest,
/// and up to two QEMUs.
pub struct QemuSystem {
    rt: tokio::runtime::Runtime,
    cfg: QemuConfig,
    binary: PathBuf,
    accel: AccelDecision,
    names: Names,
    params: GuestParams,
    dir: PathBuf,
    source: Option<QemuProcess>,
    dest: Option<QemuProcess>,
    /// Where the destination listens (`HOST:PORT`), once started.
    incoming: Option<String>,
    /// Whether the destination was started with `-S`.
    dest_paused: bool,
    /// How the source QEMU ended after a completed migration (`quit`).
    old_source_exit: Option<i32>,
}

impl Drop for QemuSystem {
    fn drop(&mut self) {
        // Processes first (they hold files in the directory).
        self.dest = None;
        self.source = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl QemuSystem {
    /// Checks the binary, kernel and initrd, decides the accelerator and
    /// creates the run directory `dir` (removed on drop).
    pub fn new(
        cfg: QemuConfig,
        names: &Names,
        file_bytes: u64,
        workload: Workload,
        dir: &Path,
    ) -> Result<QemuSystem, QemuError> {
        let binary = find_binary(&cfg.binary).ok_or_else(|| QemuError::NoBinary(cfg.binary.display().to_string()))?;
        for (what, path) in [("kernel", &cfg.kernel), ("initrd", &cfg.initrd)] {
            if !path.is_file() {
                return Err(QemuError::NoFile { what, path: path.clone() });
            }
        }
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(io_err("starting the QMP runtime"))?;
        let params = GuestParams {
            ip: names.guest_ip,
            prefix: names.prefix,
            mac: names.guest_mac.clone(),
            file_bytes,
            workload,
        };
        Ok(QemuSystem {
            rt,
            accel: accel::decide(cfg.accel),
            cfg,
            binary,
            names: names.clone(),
            params,
            dir: dir.to_path_buf(),
            source: None,
            dest: None,
            incoming: None,
            dest_paused: false,
            old_source_exit: None,
        })
    }

    /// The accelerator and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    /// The source QEMU's pid, if it runs.
    pub fn source_pid(&self) -> Option<u32> {
        self.source.as_ref().map(|p| p.child.id())
    }

    /// The destination QEMU's pid, if it runs.
    pub fn destination_pid(&self) -> Option<u32> {
        self.dest.as_ref().map(|p| p.child.id())
    }

    /// The last `lines` lines of the console of the source or destination
    /// (for error messages).
    pub fn console_tail(&self, destination: bool, lines: usize) -> String {
        let p = if destination { &self.dest } else { &self.source };
        let Some(p) = p else { return String::new() };
        let text = std::fs::read_to_string(&p.console).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn args(&self, role: Role, tap: &str, qmp: &Path, console: &Path) -> Vec<String> {
        let c = &self.cfg;
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("migbench-{}-{}", self.names.run_id, role.name()),
            "-machine".into(),
            c.machine.clone(),
            "-accel".into(),
            self.accel.accel.to_string(),
            "-m".into(),
            format!("{}M", c.memory_mib),
            "-smp".into(),
            c.smp.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
            "-kernel".into(),
            c.kernel.display().to_string(),
            "-initrd".into(),
            c.initrd.display().to_string(),
            "-append".into(),
            format!("console=ttyS0 panic=-1 quiet {}", self.params.to_cmdline()),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={},romfile=", self.names.guest_mac),
        ];
        a.extend(c.extra_args.iter().cloned());
        a
    }

    fn spawn(&self, role: Role, extra: &[String]) -> Result<QemuProcess, QemuError> {
        let tag = role.name();
        let qmp_path = self.dir.join(format!("{tag}.qmp"));
        let console = self.dir.join(format!("{tag}.console"));
        let _ = std::fs::remove_file(&qmp_path);
        let tap = match role {
            Role::Source => &self.names.tap_src,
            Role::Destination => &self.names.tap_dst,
        };
        let mut args = self.args(role, tap, &qmp_path, &console);
        args.extend(extra.iter().cloned());
        let ns_name = match role {
            Role::Source => self.names.source_ns(),
            Role::Destination => self.names.destination_ns(),
        };
        let ns = File::open(Path::new("/var/run/netns").join(ns_name))
            .map_err(io_err(format!("opening network namespace {ns_name}")))?;
        let ns_fd = ns.as_raw_fd();
        let stderr = File::create(self.dir.join(format!("{tag}.stderr"))).map_err(io_err("creating the QEMU log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: runs in the child between fork and exec; setns and prctl
        // are async-signal-safe and `ns_fd` stays open in the parent until
        // spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let launched_ns = mono_ns();
        let child = cmd.spawn().map_err(io_err(format!("starting the {tag} QEMU ({})", self.binary.display())))?;
        drop(ns);
        let mut proc_ = QemuProcessPending { child: Some(child) };
        let qmp = self.rt.block_on(Qmp::connect(&qmp_path, QMP_WAIT)).map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join(format!("{tag}.stderr"))).unwrap_or_default();
            QemuError::Guest(format!("the {tag} QEMU did not open QMP: {e}; its stderr: {}", log.trim()))
        })?;
        let child = proc_.child.take().ok_or_else(|| QemuError::State("child vanished".into()))?;
        Ok(QemuProcess { role, child, qmp, launched_ns, console })
    }

    /// Starts the source QEMU with the guest and its workload.
    pub fn start_source(&mut self) -> Result<(), QemuError> {
        if self.source.is_some() {
            return Err(QemuError::State("the source QEMU already runs".into()));
        }
        self.source = Some(self.spawn(Role::Source, &[])?);
        Ok(())
    }

    /// Starts the destination QEMU waiting for the migration where
    /// [`Names::migration_listen`] says (the lan namespace's loopback, or the
    /// destination host's address on the migration link); `paused` adds `-S`
    /// (needed for verification).
    pub fn start_destination(&mut self, paused: bool) -> Result<(), QemuError> {
        if self.dest.is_some() {
            return Err(QemuError::State("the destination QEMU already runs".into()));
        }
        let ns = self.names.destination_ns();
        let any_port = self.names.migration_listen(0);
        let port = crate::netns::run_in_netns(ns, || {
            std::net::TcpListener::bind(any_port.as_str()).and_then(|l| l.local_addr()).map(|a| a.port())
        })
        .map_err(|e| QemuError::State(format!("entering namespace {ns}: {e}")))?
        .map_err(io_err("choosing a port for -incoming"))?;
        let listen = self.names.migration_listen(port);
        let mut extra = vec!["-incoming".to_string(), format!("tcp:{listen}")];
        if paused {
            extra.push("-S".into());
        }
        self.dest = Some(self.spawn(Role::Destination, &extra)?);
        self.incoming = Some(listen);
        self.dest_paused = paused;
        Ok(())
    }

    /// Whether the destination waits with `-S` (so `--verify` can run).
    pub fn destination_paused(&self) -> bool {
        self.dest.is_some() && self.dest_paused
    }

    /// The monotonic time (ns) the source QEMU was launched.
    pub fn source_launched_ns(&self) -> Option<u64> {
        self.source.as_ref().map(|p| p.launched_ns)
    }

    fn process(&self, destination: bool) -> Result<&QemuProcess, QemuError> {
        let p = if destination { &self.dest } else { &self.source };
        p.as_ref().ok_or_else(|| {
            QemuError::State(format!("no {} QEMU runs", if destination { "destination" } else { "source" }))
        })
    }

    /// QMP `stop` on the source or the destination (the guest's vCPUs pause).
    pub fn pause(&self, destination: bool) -> Result<(), QemuError> {
        let p = self.process(destination)?;
        self.rt.block_on(p.qmp.execute(qmp::stop {}))?;
        Ok(())
    }

    /// QMP `cont` on the source or the destination.
    pub fn resume(&self, destination: bool) -> Result<(), QemuError> {
        let p = self.process(destination)?;
        self.rt.block_on(p.qmp.execute(qmp::cont {}))?;
        Ok(())
    }

    /// The QEMU version and Debian package string, e.g. `7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)`.
    pub fn version(&self) -> Result<String, QemuError> {
        let p = self.source.as_ref().or(self.dest.as_ref()).ok_or_else(|| QemuError::State("no QEMU runs".into()))?;
        let v = self.rt.block_on(p.qmp.execute(qmp::query_version {}))?;
        let q = v.qemu;
        let pkg = v.package.trim();
        Ok(if pkg.is_empty() {
            format!("{}.{}.{}", q.major, q.minor, q.micro)
        } else {
            format!("{}.{}.{} ({pkg})", q.major, q.minor, q.micro)
        })
    }

    /// How the source QEMU ended after a completed migration: it is told
    /// to `quit` and its exit status is kept (`None`: killed, or no
    /// migration completed).
    pub fn old_source_exit(&self) -> Option<i32> {
        self.old_source_exit
    }

    /// Ends both QEMUs: QMP `quit`, then a wait of up to 5 s, then SIGKILL.
    /// Returns the exit codes of the QEMU now in the source slot (after a
    /// completed migration, the one that received the guest) and of the
    /// destination, if one was still there.
    pub fn quit_all(&mut self) -> (Option<i32>, Option<i32>) {
        let d = self.dest.take().and_then(|p| self.quit(p));
        let s = self.source.take().and_then(|p| self.quit(p));
        (s, d)
    }

    /// Asks `p` to quit and waits for it (at most 5 s, then SIGKILL); its
    /// exit code if it exited by itself.
    fn quit(&self, mut p: QemuProcess) -> Option<i32> {
        let _ =
            self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), p.qmp.execute(qmp::quit {})).await });
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            match p.child.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        p.kill();
        None
    }

    /// Waits until the guest answers `GET /health` from the probe namespace;
    /// returns the time from the source QEMU's launch.
    pub fn wait_http_ready(&self, limit: Duration) -> Result<Duration, QemuError> {
        let launched = self.source.as_ref().ok_or_else(|| QemuError::State("no source QEMU".into()))?.launched_ns;
        let addr = std::net::SocketAddr::from((self.names.guest_ip, linux_guest::api::PORT));
        let t = Instant::now();
        let ok = crate::netns::run_in_netns(&self.names.probe_ns, || {
            while t.elapsed() < limit {
                if let Ok(200) = http_get(addr, linux_guest::api::HEALTH_PATH).map(|(c, _)| c) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .map_err(|e| QemuError::State(format!("entering the probe namespace: {e}")))?;
        if ok {
            Ok(Duration::from_nanos(mono_ns().saturating_sub(launched)))
        } else {
            Err(QemuError::Guest(format!(
                "the guest did not answer /health within {limit:?}; its console ends:\n{}",
                self.console_tail(false, 12)
            )))
        }
    }

    /// GETs `path` from the guest, from the probe namespace: status and body.
    pub fn guest_get(&self, path: &str) -> Result<(u16, Vec<u8>), QemuError> {
        let addr = std::net::SocketAddr::from((self.names.guest_ip, linux_guest::api::PORT));
        crate::netns::run_in_netns(&self.names.probe_ns, || http_get(addr, path))
            .map_err(|e| QemuError::State(format!("entering the probe namespace: {e}")))?
            .map_err(io_err(format!("GET {path} from the guest")))
    }

    /// Starts the guest's bench runner (`POST /bench`): the native suite
    /// of `migbench bench native`, run inside the guest.
    pub fn bench_start(
        &self,
        req: &linux_guest::api::BenchRequest,
    ) -> Result<linux_guest::api::BenchStatus, QemuError> {
        let body = serde_json::to_vec(req).map_err(|e| QemuError::Guest(format!("encoding the bench request: {e}")))?;
        let addr = std::net::SocketAddr::from((self.names.guest_ip, linux_guest::api::PORT));
        let (code, reply) = crate::netns::run_in_netns(&self.names.probe_ns, || {
            http_request(addr, "POST", linux_guest::api::BENCH_PATH, Some(&body))
        })
        .map_err(|e| QemuError::State(format!("entering the probe namespace: {e}")))?
        .map_err(io_err("POST /bench to the guest"))?;
        if code != 200 {
            return Err(QemuError::Guest(format!(
                "POST /bench answered {code}: {}",
                String::from_utf8_lossy(&reply).trim()
            )));
        }
        serde_json::from_slice(&reply).map_err(|e| QemuError::Guest(format!("POST /bench: {e}")))
    }

    /// The guest's bench runner's state (`GET /bench`): the rows so far.
    pub fn bench_status(&self) -> Result<linux_guest::api::BenchStatus, QemuError> {
        let (code, body) = self.guest_get(linux_guest::api::BENCH_PATH)?;
        if code != 200 {
            return Err(QemuError::Guest(format!("GET /bench answered {code}")));
        }
        serde_json::from_slice(&body).map_err(|e| QemuError::Guest(format!("GET /bench: {e}")))
    }

    /// The guest's memcheck report (workload `memcheck`).
    pub fn memcheck(&self) -> Result<linux_guest::api::MemcheckReport, QemuError> {
        let (code, body) = self.guest_get(linux_guest::api::MEMCHECK_PATH)?;
        if code != 200 {
            return Err(QemuError::Guest(format!("GET /memcheck answered {code}")));
        }
        serde_json::from_slice(&body).map_err(|e| QemuError::Guest(format!("GET /memcheck: {e}")))
    }

    /// `query-status` of the source or destination: whether it runs and its run state.
    pub fn status(&self, destination: bool) -> Result<(bool, String), QemuError> {
        let p = if destination { &self.dest } else { &self.source };
        let p = p.as_ref().ok_or_else(|| QemuError::State("that QEMU is not running".into()))?;
        let s = self.rt.block_on(p.qmp.execute(qmp::query_status {}))?;
        Ok((s.running, format!("{:?}", s.status)))
    }

    /// Kills the destination QEMU (fault injection and cleanup).
    pub fn kill_destination(&mut self) {
        self.dest = None;
    }

    /// Migrates the source to the destination.
    pub fn migrate(&mut self, opts: &QemuMigrateOptions) -> Result<QemuMigration, QemuError> {
        self.migrate_with_progress(opts, &mut |_| {})
    }

    /// Migrates the source to the destination; `progress` sees every
    /// `query-migrate` poll's RAM counters.
    pub fn migrate_with_progress(
        &mut self,
        opts: &QemuMigrateOptions,
        progress: &mut dyn FnMut(&RamSample),
    ) -> Result<QemuMigration, QemuError> {
        let (downtime_ms, timeout_ms, on_timeout, bw_mbps) = match &opts.policy {
            Policy::Downtime { downtime_ms, timeout_ms, on_timeout, max_bandwidth_mbps } => {
                (*downtime_ms, *timeout_ms, *on_timeout, *max_bandwidth_mbps)
            }
            Policy::Xen { .. } => {
                return Err(QemuError::NotApplicable(
                    "policy xen is n/a for QEMU: QEMU has no Xen-style dynamic rate limiting (its rate is a fixed max-bandwidth); use the downtime policy".into(),
                ))
            }
        };
        let to = self.incoming.clone().ok_or_else(|| QemuError::State("start the destination first".into()))?;
        let ram_bytes = u64::from(self.cfg.memory_mib) << 20;
        let mut src = self.source.take().ok_or_else(|| QemuError::State("no source QEMU".into()))?;
        let mut dst = self.dest.take().ok_or_else(|| QemuError::State("no destination QEMU".into()))?;
        let plan = MigrationPlan {
            dir: &self.dir,
            to: &to,
            ram_bytes,
            accel: self.accel.clone(),
            downtime_ms,
            timeout_ms,
            on_timeout,
            bw_mbps,
            opts,
            dest_paused: self.dest_paused,
        };
        let res = self.rt.block_on(run_migration(&mut src, &mut dst, &plan, progress));
        let out = match res {
            Ok(m) => m,
            Err(e) => {
                // Keep exactly one copy: the source, running.
                self.rt.block_on(ensure_running(&src));
                drop(dst);
                self.source = Some(src);
                return Err(e);
            }
        };
        if out.stats.outcome == Outcome::Completed {
            // The destination runs the guest now; the source's copy is
            // stale: it is told to quit, and how it ended is kept.
            self.old_source_exit = self.quit(src);
            self.source = Some(dst);
        } else {
            self.rt.block_on(ensure_running(&src));
            drop(dst);
            self.source = Some(src);
        }
        self.incoming = None;
        Ok(out)
    }
}

/// Holds a child until QMP is up, so an early return kills it.
struct QemuProcessPending {
    child: Option<Child>,
}

impl Drop for QemuProcessPending {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `cont` the source if a failed migration left it paused.
async fn ensure_running(src: &QemuProcess) {
    if let Ok(s) = src.qmp.execute(qmp::query_status {}).await {
        if !s.running {
            let _ = src.qmp.execute(qmp::cont {}).await;
        }
    }
}

fn ram_sample(t: u64, info: &qmp::MigrationInfo) -> Option<RamSample> {
    let r = info.ram.as_ref()?;
    Some(RamSample {
        mono_ns: t,
        active: matches!(info.status, Some(qmp::MigrationStatus::active)),
        dirty_sync_count: r.dirty_sync_count,
        transferred: r.transferred,
        remaining: r.remaining,
        duplicate: r.duplicate,
        normal: r.normal,
        dirty_pages_rate: r.dirty_pages_rate,
        page_size: r.page_size,
        cpu_throttle_pct: info.cpu_throttle_percentage,
    })
}

/// A throttle percentage as QEMU's parameters take it (whole percent,
/// 1–99; the policy has validated the range).
fn throttle_pct(p: f64) -> u8 {
    p.round().clamp(1.0, 99.0) as u8
}

fn event_time(events: &[TimedEvent], want: impl Fn(&qmp::Event) -> bool) -> Option<u64> {
    events.iter().find(|e| want(&e.event)).map(|e| e.mono_ns)
}

async fn run_migration(
    src: &mut QemuProcess,
    dst: &mut QemuProcess,
    plan: &MigrationPlan<'_>,
    progress: &mut dyn FnMut(&RamSample),
) -> Result<QemuMigration, QemuError> {
    let MigrationPlan { dir, to, ram_bytes, downtime_ms, timeout_ms, on_timeout, bw_mbps, opts, dest_paused, .. } =
        *plan;
    debug_assert!(src.role == Role::Source && dst.role == Role::Destination);
    src.qmp
        .execute(qmp::migrate_set_capabilities {
            capabilities: vec![qmp::MigrationCapabilityStatus {
                capability: qmp::MigrationCapability::auto_converge,
                state: opts.auto_converge.is_some(),
            }],
        })
        .await?;
    let max_bandwidth = bw_mbps.map(|m| (m * 1e6 / 8.0) as u64);
    src.qmp
        .execute(qmp::migrate_set_parameters(qmp::MigrateSetParameters {
            downtime_limit: Some(downtime_ms.max(1.0) as u64),
            max_bandwidth,
            cpu_throttle_initial: opts.auto_converge.map(|t| throttle_pct(t.initial_pct)),
            cpu_throttle_increment: opts.auto_converge.map(|t| throttle_pct(t.increment_pct)),
            max_cpu_throttle: opts.auto_converge.map(|t| throttle_pct(t.max_pct)),
            throttle_trigger_threshold: opts.auto_converge.map(|t| throttle_pct(t.trigger_pct)),
            ..Default::default()
        }))
        .await?;
    // QEMU's own default cap when none is given: 128 MiB/s (7.2 and later).
    let limit_mbps = bw_mbps.or(Some(128.0 * 1048576.0 * 8.0 / 1e6));
    let _ = src.qmp.take_events();
    let _ = dst.qmp.take_events();
    let start = mono_ns();
    src.qmp
        .execute(qmp::migrate { uri: Some(format!("tcp:{to}")), channels: None, detach: None, resume: None })
        .await?;
    let mut polls = Vec::new();
    let mut src_events = Vec::new();
    let mut forced = false;
    let mut cancelled_by_policy = false;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut status, info) = loop {
        tick.tick().await;
        let info = src.qmp.execute(qmp::query_migrate {}).await?;
        let t = mono_ns();
        src_events.extend(src.qmp.take_events());
        if let Some(s) = ram_sample(t, &info) {
            progress(&s);
            polls.push(s);
        }
        match info.status {
            Some(qmp::MigrationStatus::completed) => break (Outcome::Completed, info),
            Some(qmp::MigrationStatus::failed) => break (Outcome::Failed, info),
            Some(qmp::MigrationStatus::cancelled) => break (Outcome::Cancelled, info),
            _ => {}
        }
        if !forced && !cancelled_by_policy && ms_between(start, t) > timeout_ms {
            match on_timeout {
                OnTimeout::Cancel => {
                    src.qmp.execute(qmp::migrate_cancel {}).await?;
                    cancelled_by_policy = true;
                }
                OnTimeout::Force => {
                    // QEMU cannot be told to switch over now; a downtime
                    // limit of 2000 s makes the next check switch over.
                    src.qmp
                        .execute(qmp::migrate_set_parameters(qmp::MigrateSetParameters {
                            downtime_limit: Some(2_000_000),
                            ..Default::default()
                        }))
                        .await?;
                    forced = true;
                }
            }
        }
    };
    let mut verify = None;
    let mut mismatched = None;
    let mut resume_ns = None;
    let mut verify_span_ms = 0.0;
    let mut mismatch_reason = None;
    if status == Outcome::Completed {
        if opts.verify && !dest_paused {
            return Err(QemuError::State("--verify needs a destination started with -S".into()));
        }
        if dest_paused {
            // Wait for the destination to finish loading (it stays paused: -S).
            let t_v = Instant::now();
            loop {
                let s = dst.qmp.execute(qmp::query_status {}).await?;
                if !matches!(s.status, qmp::RunState::inmigrate) {
                    break;
                }
                if t_v.elapsed() > Duration::from_secs(30) {
                    return Err(QemuError::Guest("the destination did not finish loading within 30 s".into()));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if !opts.verify && dest_paused {
            dst.qmp.execute(qmp::cont {}).await?;
        }
        if opts.verify {
            // Both sides dump at once, into memory (tmpfs) where there is
            // room: the destination stays paused until the comparison is
            // done, and a pause longer than the probe's 5 s no-progress
            // timeout would cost the guest's TCP connections.
            let dumps = DumpFiles::new(dir, ram_bytes);
            let (sd, dd) = (&dumps.source, &dumps.destination);
            let v0 = mono_ns();
            let source_dump = async {
                src.qmp.execute(qmp::pmemsave { val: 0, size: ram_bytes, filename: sd.display().to_string() }).await?;
                Ok::<u64, QemuError>(mono_ns())
            };
            let dest_dump = async {
                dst.qmp.execute(qmp::pmemsave { val: 0, size: ram_bytes, filename: dd.display().to_string() }).await?;
                Ok::<u64, QemuError>(mono_ns())
            };
            let (v1, _) = tokio::try_join!(source_dump, dest_dump)?;
            let (bad, first) = compare_dumps(sd, dd)?;
            drop(dumps);
            let v2 = mono_ns();
            verify_span_ms = ms_between(v0, v2);
            // `source_ms`: the source's dump; `destination_ms`: the rest
            // (the destination's dump, overlapping, and the comparison).
            verify =
                Some(VerifyStats { ok: bad == 0, source_ms: ms_between(v0, v1), destination_ms: ms_between(v1, v2) });
            mismatched = Some(bad);
            if bad > 0 {
                // A mismatch fails the migration: the source resumes, the
                // destination (never run) is dropped by the caller.
                src.qmp.execute(qmp::cont {}).await?;
                status = Outcome::Failed;
                mismatch_reason = Some(format!(
                    "memory verification: {bad} pages differ, the first at {}",
                    first.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" ")
                ));
            } else {
                dst.qmp.execute(qmp::cont {}).await?;
            }
        }
        if status == Outcome::Completed {
            let (ev, _) = dst.qmp.wait_event(Duration::from_secs(30), |e| matches!(e, qmp::Event::RESUME { .. })).await;
            resume_ns = ev.map(|e| e.mono_ns);
        }
        src_events.extend(src.qmp.take_events());
    }
    let reason = mismatch_reason.or(match status {
        Outcome::Completed => None,
        Outcome::Cancelled => Some(if cancelled_by_policy {
            format!("cancelled after the {timeout_ms} ms timeout")
        } else {
            "cancelled".into()
        }),
        // QEMU's own migration has no commitment phase of ours: it never
        // reports an indeterminate outcome.
        Outcome::Failed | Outcome::Indeterminate => {
            Some(format!("QEMU: {}", info.error_desc.clone().unwrap_or_else(|| "migration failed".into())))
        }
    });
    Ok(QemuMigration {
        stats: common_stats(
            status,
            reason,
            start,
            &info,
            &polls,
            ram_bytes,
            limit_mbps,
            &src_events,
            resume_ns,
            verify,
            verify_span_ms,
            &opts.policy,
        ),
        qemu: totals(&info, polls.len(), mismatched, plan),
    })
}

fn totals(info: &qmp::MigrationInfo, polls: usize, mismatched: Option<u64>, plan: &MigrationPlan<'_>) -> QemuTotals {
    QemuTotals {
        total_time_ms: info.total_time,
        downtime_ms: info.downtime,
        setup_time_ms: info.setup_time,
        polls,
        error: info.error_desc.clone(),
        accel: plan.accel.clone(),
        verify_mismatched_pages: mismatched,
    }
}

#[allow(clippy::too_many_arguments)]
fn common_stats(
    outcome: Outcome,
    reason: Option<String>,
    start: u64,
    info: &qmp::MigrationInfo,
    polls: &[RamSample],
    ram_bytes: u64,
    limit_mbps: Option<f64>,
    src_events: &[TimedEvent],
    resume_ns: Option<u64>,
    verify: Option<VerifyStats>,
    verify_span_ms: f64,
    policy: &Policy,
) -> MigrationStats {
    let stop_ns = event_time(src_events, |e| matches!(e, qmp::Event::STOP { .. }));
    let ram = info.ram.as_ref();
    let last_active = polls.iter().rev().find(|p| p.active);
    let paused_total = match (stop_ns, resume_ns) {
        (Some(a), Some(b)) => Some(ms_between(a, b)),
        _ => None,
    };
    MigrationStats {
        outcome,
        reason,
        stop_reason: (outcome == Outcome::Completed)
            .then(|| "QEMU: the remaining RAM fits the downtime limit at the measured bandwidth".into()),
        policy: policy.clone(),
        start_mono_ns: start,
        total_ms: info.total_time.map_or(0.0, |t| t as f64),
        setup_ms: info.setup_time.map(|t| t as f64),
        ram_bytes,
        transferred_bytes: ram.map_or(0, |r| r.transferred.max(0) as u64),
        zero_pages: ram.map_or(0, |r| r.duplicate.max(0) as u64),
        rounds: rounds::derive(start, polls, limit_mbps),
        final_pages: last_active.map_or(0, |p| p.remaining.max(0) as u64 / p.page_size.max(1) as u64),
        paused_at_ms: stop_ns.map(|t| ms_between(start, t)),
        resumed_at_ms: resume_ns.map(|t| ms_between(start, t)),
        downtime_ms: paused_total.map(|p| (p - verify_span_ms).max(0.0)),
        downtime_breakdown: None,
        paused_total_ms: paused_total,
        verify,
        // migbench sets no priority on QEMU's threads.
        thread_priorities: None,
    }
}

/// The two RAM dumps of a verification, removed on drop (also on an error).
struct DumpFiles {
    source: PathBuf,
    destination: PathBuf,
}

impl DumpFiles {
    /// In `/dev/shm` (memory) when the host has memory available for both
    /// dumps and a margin, else in the run directory `dir`.
    fn new(dir: &Path, ram_bytes: u64) -> DumpFiles {
        let shm = Path::new("/dev/shm");
        let room = shm.is_dir() && mem_available().is_some_and(|free| free > ram_bytes.saturating_mul(4));
        let (base, tag) = if room {
            (shm.to_path_buf(), format!("migbench-{}-{}-", std::process::id(), mono_ns()))
        } else {
            (dir.to_path_buf(), String::new())
        };
        DumpFiles {
            source: base.join(format!("{tag}source.ram")),
            destination: base.join(format!("{tag}destination.ram")),
        }
    }
}

impl Drop for DumpFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.source);
        let _ = std::fs::remove_file(&self.destination);
    }
}

/// The host's available memory (`MemAvailable` of `/proc/meminfo`), bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Pages (4 KiB) that differ between two RAM dumps (a length difference
/// counts its pages as differing), and the guest-physical addresses of the
/// first few.
fn compare_dumps(a: &Path, b: &Path) -> Result<(u64, Vec<u64>), QemuError> {
    let mut fa = File::open(a).map_err(io_err(format!("opening {}", a.display())))?;
    let mut fb = File::open(b).map_err(io_err(format!("opening {}", b.display())))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let (mut bad, mut first, mut off) = (0u64, Vec::new(), 0u64);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err("reading the source dump"))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err("reading the destination dump"))?;
        let n = na.min(nb);
        for (i, (x, y)) in ba[..n].chunks(4096).zip(bb[..n].chunks(4096)).enumerate() {
            if x != y {
                bad += 1;
                if first.len() < 8 {
                    first.push(off + i as u64 * 4096);
                }
            }
        }
        bad += (na.max(nb) - n).div_ceil(4096) as u64;
        off += n as u64;
        if na == 0 || nb == 0 {
            return Ok((bad, first));
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A one-shot HTTP/1.1 GET with `Connection: close`: status and body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, None)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): the
/// status code and body of the reply. `body` is sent as JSON.
fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", addr.ip()).into_bytes();
    if let Some(b) = body {
        req.extend_from_slice(
            format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(),
        );
        req.extend_from_slice(b);
    } else {
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let status = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad())?;
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    Ok((code, buf[head_end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_compared_page_by_page() {
        let d = std::env::temp_dir().join(format!("mbq-cmp-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (a, b) = (d.join("a"), d.join("b"));
        let mut x = vec![7u8; 5 * 4096];
        std::fs::write(&a, &x).unwrap();
        std::fs::write(&b, &x).unwrap();
        assert_eq!(compare_dumps(&a, &b).unwrap(), (0, vec![]));
        x[4096 * 3 + 17] = 0;
        x[10] = 1;
        std::fs::write(&b, &x).unwrap();
        assert_eq!(compare_dumps(&a, &b).unwrap(), (2, vec![0, 3 * 4096]));
        std::fs::write(&b, &x[..4096 * 4]).unwrap();
        assert_eq!(compare_dumps(&a, &b).unwrap().0, 3, "2 changed pages + 1 missing");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let names = Names::for_run("t9").unwrap();
        let cfg = QemuConfig { binary: "qemu-system-nonexistent".into(), ..QemuConfig::new("/k".into(), "/i".into()) };
        let e = QemuSystem::new(cfg, &names, 4096, Workload::Idle, Path::new("/tmp/unused")).err().unwrap();
        assert!(e.to_string().contains("apt-get install qemu-system-x86"), "{e}");
    }
}
