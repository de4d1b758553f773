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
//! - **Remote destination** ([`RemoteDestination`], implemented by
//!   [`super::remote::Client`]): the source runs here and the destination
//!   QEMU on another machine (`migbench qemu-incoming`); both sides use
//!   `tls-creds-x509` ([`qemu_tls_dir`] makes QEMU's file names from a
//!   `tls-init` directory) and `tls-hostname`; `--verify` compares page
//!   digests ([`super::pages`]) instead of the dumps, and a failure
//!   resumes the source and aborts the destination over there.
//! - **On a real host** ([`QemuSystem::on_host`]): no run topology; the
//!   QEMUs and the guest's HTTP in one given namespace (or this one), the
//!   NIC on a given TAP.

use super::accel::{self, AccelChoice, AccelDecision};
use super::pages::{self, Dump, PageDigests};
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

/// The guest's NIC on a real host (not a run's topology): the TAP it
/// uses there, and the address and MAC it keeps wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNic {
    /// The TAP on this host (bridged to the guest's LAN).
    pub tap: String,
    /// The guest's address.
    pub ip: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The guest's MAC.
    pub mac: String,
    /// Size of the file the guest serves, bytes.
    pub file_bytes: u64,
}

impl HostNic {
    /// The same NIC as vmm-min's configuration of it
    /// (`scenarios::scenario::host_nic` makes one from the user's keys).
    pub fn from_net_config(n: &vmm_min::config::NetConfig) -> Result<HostNic, String> {
        let bad = || format!("guest address '{}': expected A.B.C.D/PREFIX", n.ip);
        let (ip, prefix) = n.ip.split_once('/').ok_or_else(bad)?;
        Ok(HostNic {
            tap: n.tap.clone(),
            ip: ip.parse().map_err(|_| bad())?,
            prefix: prefix.parse().map_err(|_| bad())?,
            mac: n.mac.clone(),
            file_bytes: n.file_bytes,
        })
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
    /// Over TLS: the source's `tls-creds` object and the `tls-hostname`.
    tls: Option<(&'a str, &'a str)>,
}

/// A destination on another machine, driven by the source-side migbench
/// (over `migbench qemu-incoming`'s control channel): what the migration
/// needs from it besides the stream. It waits paused (`-S`).
pub trait RemoteDestination {
    /// Asks it for the page digests of its RAM once it has loaded the
    /// migration; [`Self::digests`] reads the answer, so the source can
    /// dump its own RAM meanwhile.
    fn ask_digests(&mut self) -> Result<(), QemuError>;
    /// The answer to [`Self::ask_digests`].
    fn digests(&mut self) -> Result<PageDigests, QemuError>;
    /// `cont`s it once it has loaded the migration, and returns once it runs.
    fn resume(&mut self) -> Result<(), QemuError>;
    /// Kills its QEMU (a failed or cancelled migration), best effort.
    fn abort(&mut self);
}

/// Where the guest goes.
enum Receiver<'a> {
    /// A destination QEMU here.
    Local(&'a mut QemuProcess),
    /// One on another machine.
    Remote(&'a mut dyn RemoteDestination),
}

/// The id of the `tls-creds-x509` object on either side.
const TLS_ID: &str = "mbtls";

/// `-object tls-creds-x509` with QEMU's file names in `dir`.
fn tls_object(id: &str, endpoint: &str, dir: &Path) -> String {
    format!("tls-creds-x509,id={id},endpoint={endpoint},dir={},verify-peer=on", dir.display())
}

/// Makes `into` a directory of QEMU's `tls-creds-x509` file names
/// (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`, `client-cert.pem`,
/// `client-key.pem`) from a `migbench tls-init` directory (`ca.pem`,
/// `cert.pem`, `key.pem`: the one certificate serves as server and client
/// certificate); keys get mode 0600. Copies, not links, so that the
/// directory stays valid whatever happens to the original.
pub fn qemu_tls_dir(from: &Path, into: &Path) -> Result<(), QemuError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(into).map_err(io_err(format!("creating {}", into.display())))?;
    let files = [
        ("ca.pem", "ca-cert.pem", 0o644),
        ("cert.pem", "server-cert.pem", 0o644),
        ("key.pem", "server-key.pem", 0o600),
        ("cert.pem", "client-cert.pem", 0o644),
        ("key.pem", "client-key.pem", 0o600),
    ];
    for (ours, qemus, mode) in files {
        let (a, b) = (from.join(ours), into.join(qemus));
        let text = std::fs::read(&a).map_err(|e| QemuError::Io {
            what: format!(
                "reading {} (a TLS directory holds ca.pem, cert.pem and key.pem; see `migbench tls-init`)",
                a.display()
            ),
            source: e,
        })?;
        let _ = std::fs::remove_file(&b);
        let mut f = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(f.write(true).create_new(true), mode);
        let mut f = f.open(&b).map_err(io_err(format!("creating {}", b.display())))?;
        std::io::Write::write_all(&mut f, &text).map_err(io_err(format!("writing {}", b.display())))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io_err(format!("chmod {}", b.display())))?;
    }
    Ok(())
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
    /// On a real host instead of the run's topology: the QEMUs run, and
    /// the guest's HTTP is reached, in this namespace (`None`: here).
    host: Option<Option<String>>,
    /// A destination on another machine ([`RemoteDestination`]), instead of
    /// the local destination QEMU.
    remote: Option<Box<dyn RemoteDestination>>,
    /// Migrate over TLS: the source's `tls-creds` object, and the name the
    /// destination's certificate must carry.
    tls: Option<(String, String)>,
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
            host: None,
            remote: None,
            tls: None,
        })
    }

    /// A system on a real host rather than a run's topology: the guest's
    /// NIC on `nic.tap` (both QEMUs use that TAP; only one runs the guest
    /// at a time on a host), its address and MAC from `nic`, the QEMUs and
    /// the guest's HTTP in namespace `netns` (`None`: this process's).
    pub fn on_host(
        cfg: QemuConfig,
        nic: &HostNic,
        netns: Option<String>,
        workload: Workload,
        dir: &Path,
    ) -> Result<QemuSystem, QemuError> {
        let run_id = crate::netns::new_run_id();
        let mut names = Names::for_run(&run_id[..run_id.len().min(11)])
            .map_err(|e| QemuError::State(format!("naming the run: {e}")))?;
        names.tap_src = nic.tap.clone();
        names.tap_dst = nic.tap.clone();
        names.guest_ip = nic.ip;
        names.prefix = nic.prefix;
        names.guest_mac = nic.mac.clone();
        let mut sys = QemuSystem::new(cfg, &names, nic.file_bytes, workload, dir)?;
        sys.host = Some(netns);
        Ok(sys)
    }

    /// Where the QEMU of `role` lives: its namespace's name, or `None` for
    /// this process's.
    fn netns_of(&self, role: Role) -> Option<&str> {
        match (&self.host, role) {
            (Some(ns), _) => ns.as_deref(),
            (None, Role::Source) => Some(self.names.source_ns()),
            (None, Role::Destination) => Some(self.names.destination_ns()),
        }
    }

    /// Runs `f` where the guest's HTTP is reached from: the run's probe
    /// namespace, or on a real host its namespace (or here).
    fn at_probe<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, QemuError> {
        let ns = match &self.host {
            Some(ns) => ns.as_deref(),
            None => Some(self.names.probe_ns.as_str()),
        };
        match ns {
            Some(ns) => {
                crate::netns::run_in_netns(ns, f).map_err(|e| QemuError::State(format!("entering namespace {ns}: {e}")))
            }
            None => Ok(f()),
        }
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
        let ns = match self.netns_of(role) {
            Some(ns_name) => Some(
                File::open(Path::new("/var/run/netns").join(ns_name))
                    .map_err(io_err(format!("opening network namespace {ns_name}")))?,
            ),
            None => None,
        };
        let ns_fd = ns.as_ref().map(|f| f.as_raw_fd());
        let stderr = File::create(self.dir.join(format!("{tag}.stderr"))).map_err(io_err("creating the QEMU log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: runs in the child between fork and exec; setns and prctl
        // are async-signal-safe and `ns_fd` stays open in the parent until
        // spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
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
        let extra = match &self.tls {
            Some((id, _)) => vec!["-object".to_string(), tls_object(id, "client", &self.dir.join("tls"))],
            None => Vec::new(),
        };
        self.source = Some(self.spawn(Role::Source, &extra)?);
        Ok(())
    }

    /// Migrates over TLS with the credentials of `tls_dir` (`migbench
    /// tls-init`'s), checking that the destination's certificate names
    /// `hostname`; call before [`Self::start_source`].
    pub fn use_tls(&mut self, tls_dir: &Path, hostname: &str) -> Result<(), QemuError> {
        qemu_tls_dir(tls_dir, &self.dir.join("tls"))?;
        self.tls = Some((TLS_ID.to_string(), hostname.to_string()));
        Ok(())
    }

    /// Migrates to `remote` (a destination on another machine, waiting on
    /// `listen`, `HOST:PORT`) instead of a local destination QEMU. The
    /// remote destination waits paused (`-S`): without `--verify` it is
    /// `cont`ed as soon as it has loaded the state.
    pub fn set_remote_destination(&mut self, remote: Box<dyn RemoteDestination>, listen: String) {
        self.dest = None;
        self.remote = Some(remote);
        self.incoming = Some(listen);
        self.dest_paused = true;
    }

    /// The remote destination, if there is one.
    pub fn remote_destination(&mut self) -> Option<&mut (dyn RemoteDestination + 'static)> {
        self.remote.as_deref_mut()
    }

    /// Starts the destination QEMU for a source on another machine: it
    /// waits (`-incoming defer`, `-S` when `paused`) for a migration on
    /// `listen` (`HOST:PORT`; port 0 picks a free one) over TLS with the
    /// credentials of `tls_dir`, where given (`tls-creds-x509`,
    /// `endpoint=server`, `verify-peer=on`). Returns the address it listens on.
    pub fn start_incoming(&mut self, listen: &str, paused: bool, tls_dir: Option<&Path>) -> Result<String, QemuError> {
        if self.dest.is_some() {
            return Err(QemuError::State("a destination QEMU already runs here; abort it first".into()));
        }
        let addr: std::net::SocketAddr =
            listen.parse().map_err(|_| QemuError::State(format!("--listen {listen}: expected ADDR:PORT")))?;
        let port = if addr.port() == 0 {
            let bind = || std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()).map(|a| a.port());
            self.at_probe(bind)?.map_err(io_err(format!("choosing a port on {}", addr.ip())))?
        } else {
            addr.port()
        };
        let listen = std::net::SocketAddr::new(addr.ip(), port).to_string();
        let mut extra = vec!["-incoming".to_string(), "defer".to_string()];
        if paused {
            extra.push("-S".into());
        }
        if let Some(d) = tls_dir {
            qemu_tls_dir(d, &self.dir.join("tls"))?;
            extra.extend(["-object".to_string(), tls_object(TLS_ID, "server", &self.dir.join("tls"))]);
        }
        let dst = self.spawn(Role::Destination, &extra)?;
        let setup = async {
            if tls_dir.is_some() {
                dst.qmp
                    .execute(qmp::migrate_set_parameters(qmp::MigrateSetParameters {
                        tls_creds: Some(qmp::StrOrNull::s(TLS_ID.into())),
                        ..Default::default()
                    }))
                    .await?;
            }
            dst.qmp
                .execute(qmp::migrate_incoming {
                    uri: Some(format!("tcp:{listen}")),
                    channels: None,
                    exit_on_error: None,
                })
                .await?;
            Ok::<(), QemuError>(())
        };
        self.rt.block_on(setup)?;
        self.dest = Some(dst);
        self.incoming = Some(listen.clone());
        self.dest_paused = paused;
        Ok(listen)
    }

    /// Waits (at most `limit`) until the destination has loaded an incoming
    /// migration; its run state then.
    fn wait_loaded(&self, limit: Duration) -> Result<qmp::StatusInfo, QemuError> {
        let dst = self.process(true)?;
        let t = Instant::now();
        loop {
            let s = self.rt.block_on(dst.qmp.execute(qmp::query_status {}))?;
            if !matches!(s.status, qmp::RunState::inmigrate) {
                return Ok(s);
            }
            if t.elapsed() > limit {
                return Err(QemuError::Guest(format!(
                    "the destination has not loaded a migration within {limit:?} (is the source migrating to it?)"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The page digests of the paused destination's RAM, once it has loaded
    /// the migration (waiting at most `limit`): `pmemsave` into memory (or
    /// the run directory), then a hash of every page.
    pub fn destination_digests(&self, limit: Duration) -> Result<PageDigests, QemuError> {
        let s = self.wait_loaded(limit)?;
        if s.running {
            return Err(QemuError::State(
                "the destination runs already: page digests are only meaningful while it is paused (-S)".into(),
            ));
        }
        let ram_bytes = u64::from(self.cfg.memory_mib) << 20;
        let dump = Dump::new(&self.dir, ram_bytes, "destination");
        let dst = self.process(true)?;
        self.rt.block_on(dst.qmp.execute(qmp::pmemsave {
            val: 0,
            size: ram_bytes,
            filename: dump.path.display().to_string(),
        }))?;
        PageDigests::of_file(&dump.path).map_err(io_err("hashing the destination's RAM dump"))
    }

    /// Resumes the destination once it has loaded the migration (waiting
    /// at most `limit`), and waits until it runs.
    pub fn destination_resume(&self, limit: Duration) -> Result<(), QemuError> {
        let s = self.wait_loaded(limit)?;
        let dst = self.process(true)?;
        if !s.running {
            self.rt.block_on(dst.qmp.execute(qmp::cont {}))?;
        }
        let t = Instant::now();
        while !self.rt.block_on(dst.qmp.execute(qmp::query_status {}))?.running {
            if t.elapsed() > limit {
                return Err(QemuError::Guest("the destination did not run after `cont`".into()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
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
        let ok = self.at_probe(|| {
            while t.elapsed() < limit {
                if let Ok(200) = http_get(addr, linux_guest::api::HEALTH_PATH).map(|(c, _)| c) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })?;
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
        self.at_probe(|| http_get(addr, path))?.map_err(io_err(format!("GET {path} from the guest")))
    }

    /// Starts the guest's bench runner (`POST /bench`): the native suite
    /// of `migbench bench native`, run inside the guest.
    pub fn bench_start(
        &self,
        req: &linux_guest::api::BenchRequest,
    ) -> Result<linux_guest::api::BenchStatus, QemuError> {
        self.guest_post(linux_guest::api::BENCH_PATH, req)
    }

    /// The guest's bench runner's state (`GET /bench`): the rows so far.
    pub fn bench_status(&self) -> Result<linux_guest::api::BenchStatus, QemuError> {
        self.guest_get_json(linux_guest::api::BENCH_PATH)
    }

    /// Starts the Figure 3 stand-ins in the guest (`POST /macro`).
    pub fn macro_start(
        &self,
        req: &linux_guest::api::MacroRequest,
    ) -> Result<linux_guest::api::MacroStatus, QemuError> {
        self.guest_post(linux_guest::api::MACRO_PATH, req)
    }

    /// The guest's macro runner (`GET /macro`): the bars so far.
    pub fn macro_status(&self) -> Result<linux_guest::api::MacroStatus, QemuError> {
        self.guest_get_json(linux_guest::api::MACRO_PATH)
    }

    /// Starts one ttcp transfer at the guest's end (`POST /ttcp`); for a
    /// `Receive` the guest listens when this returns.
    pub fn ttcp_start(&self, req: &linux_guest::api::TtcpRequest) -> Result<linux_guest::api::TtcpStatus, QemuError> {
        self.guest_post(linux_guest::api::TTCP_PATH, req)
    }

    /// The guest's ttcp transfer (`GET /ttcp`).
    pub fn ttcp_status(&self) -> Result<linux_guest::api::TtcpStatus, QemuError> {
        self.guest_get_json(linux_guest::api::TTCP_PATH)
    }

    /// `POST path` of `req` as JSON to the guest's agent; its JSON reply.
    fn guest_post<Req: serde::Serialize, Reply: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Reply, QemuError> {
        let body = serde_json::to_vec(req).map_err(|e| QemuError::Guest(format!("encoding POST {path}: {e}")))?;
        let addr = std::net::SocketAddr::from((self.names.guest_ip, linux_guest::api::PORT));
        let (code, reply) = self
            .at_probe(|| http_request(addr, "POST", path, Some(&body)))?
            .map_err(io_err(format!("POST {path} to the guest")))?;
        if code != 200 {
            return Err(QemuError::Guest(format!(
                "POST {path} answered {code}: {}",
                String::from_utf8_lossy(&reply).trim()
            )));
        }
        serde_json::from_slice(&reply).map_err(|e| QemuError::Guest(format!("POST {path}: {e}")))
    }

    /// `GET path` from the guest's agent; its JSON reply.
    fn guest_get_json<Reply: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Reply, QemuError> {
        let (code, body) = self.guest_get(path)?;
        if code != 200 {
            return Err(QemuError::Guest(format!("GET {path} answered {code}")));
        }
        serde_json::from_slice(&body).map_err(|e| QemuError::Guest(format!("GET {path}: {e}")))
    }

    /// The guest's memcheck report (workload `memcheck`).
    pub fn memcheck(&self) -> Result<linux_guest::api::MemcheckReport, QemuError> {
        self.guest_get_json(linux_guest::api::MEMCHECK_PATH)
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
        if self.dest.is_none() && self.remote.is_none() {
            return Err(QemuError::State("no destination QEMU".into()));
        }
        let mut src = self.source.take().ok_or_else(|| QemuError::State("no source QEMU".into()))?;
        let mut local_dst = self.dest.take();
        let mut remote = self.remote.take();
        let dst = match (&mut local_dst, &mut remote) {
            (Some(d), _) => Receiver::Local(d),
            (None, Some(r)) => Receiver::Remote(r.as_mut()),
            (None, None) => return Err(QemuError::State("no destination QEMU".into())),
        };
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
            tls: self.tls.as_ref().map(|(id, host)| (id.as_str(), host.as_str())),
        };
        let res = self.rt.block_on(run_migration(&mut src, dst, &plan, progress));
        self.incoming = None;
        let completed = matches!(&res, Ok(m) if m.stats.outcome == Outcome::Completed);
        if completed {
            // The destination runs the guest now; the source's copy is
            // stale: it is told to quit, and how it ended is kept. A local
            // destination takes the source's slot; a remote one runs
            // elsewhere and leaves it empty.
            self.old_source_exit = self.quit(src);
            self.source = local_dst;
        } else {
            // Keep exactly one copy: the source, running; the destination
            // (which never ran) is killed, here or over there.
            self.rt.block_on(ensure_running(&src));
            drop(local_dst);
            if let Some(r) = &mut remote {
                r.abort();
            }
            self.source = Some(src);
        }
        res
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
    mut dst: Receiver<'_>,
    plan: &MigrationPlan<'_>,
    progress: &mut dyn FnMut(&RamSample),
) -> Result<QemuMigration, QemuError> {
    let MigrationPlan {
        dir, to, ram_bytes, downtime_ms, timeout_ms, on_timeout, bw_mbps, opts, dest_paused, tls, ..
    } = *plan;
    debug_assert!(src.role == Role::Source);
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
            tls_creds: tls.map(|(id, _)| qmp::StrOrNull::s(id.into())),
            tls_hostname: tls.map(|(_, host)| qmp::StrOrNull::s(host.into())),
            ..Default::default()
        }))
        .await?;
    // QEMU's own default cap when none is given: 128 MiB/s (7.2 and later).
    let limit_mbps = bw_mbps.or(Some(128.0 * 1048576.0 * 8.0 / 1e6));
    let _ = src.qmp.take_events();
    if let Receiver::Local(d) = &mut dst {
        let _ = d.qmp.take_events();
    }
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
        let v = match dst {
            Receiver::Local(dst) => finish_local(src, dst, dir, ram_bytes, opts.verify, dest_paused).await?,
            Receiver::Remote(r) => finish_remote(src, r, dir, ram_bytes, opts.verify).await?,
        };
        verify = v.verify;
        mismatched = v.mismatched;
        resume_ns = v.resume_ns;
        verify_span_ms = v.span_ms;
        if let Some(why) = v.mismatch {
            status = Outcome::Failed;
            mismatch_reason = Some(why);
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

/// How the switchover ended after QEMU's `completed`.
#[derive(Default)]
struct Finish {
    verify: Option<VerifyStats>,
    mismatched: Option<u64>,
    resume_ns: Option<u64>,
    /// The time spent verifying (taken out of the downtime), ms.
    span_ms: f64,
    /// Why verification failed the migration.
    mismatch: Option<String>,
}

impl Finish {
    /// A verification that started at `v0`, finished the source's side at
    /// `v1` and compared at `v2`, with `bad` pages differing (the first at
    /// `first`). `source_ms` is the source's side; `destination_ms` the
    /// rest (the destination's side, overlapping, and the comparison).
    fn verified(v0: u64, v1: u64, v2: u64, bad: u64, first: &[u64]) -> Finish {
        Finish {
            verify: Some(VerifyStats {
                ok: bad == 0,
                source_ms: ms_between(v0, v1),
                destination_ms: ms_between(v1, v2),
            }),
            mismatched: Some(bad),
            resume_ns: None,
            span_ms: ms_between(v0, v2),
            mismatch: (bad > 0).then(|| {
                format!(
                    "memory verification: {bad} pages differ, the first at {}",
                    first.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" ")
                )
            }),
        }
    }
}

/// After `completed`, with a local destination: waits for it to load,
/// verifies both paused sides' RAM byte by byte (`--verify`), then `cont`s
/// the destination, or on a mismatch the source.
async fn finish_local(
    src: &mut QemuProcess,
    dst: &mut QemuProcess,
    dir: &Path,
    ram_bytes: u64,
    verify: bool,
    dest_paused: bool,
) -> Result<Finish, QemuError> {
    let mut out = Finish::default();
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
    if !verify && dest_paused {
        dst.qmp.execute(qmp::cont {}).await?;
    }
    if verify {
        // Both sides dump at once, into memory (tmpfs) where there is
        // room: the destination stays paused until the comparison is
        // done, and a pause longer than the probe's 5 s no-progress
        // timeout would cost the guest's TCP connections.
        let (sd, dd) = (Dump::new(dir, ram_bytes, "source"), Dump::new(dir, ram_bytes, "destination"));
        let v0 = mono_ns();
        let source_dump = async {
            src.qmp.execute(qmp::pmemsave { val: 0, size: ram_bytes, filename: sd.path.display().to_string() }).await?;
            Ok::<u64, QemuError>(mono_ns())
        };
        let dest_dump = async {
            dst.qmp.execute(qmp::pmemsave { val: 0, size: ram_bytes, filename: dd.path.display().to_string() }).await?;
            Ok::<u64, QemuError>(mono_ns())
        };
        let (v1, _) = tokio::try_join!(source_dump, dest_dump)?;
        let (bad, first) = compare_dumps(&sd.path, &dd.path)?;
        drop((sd, dd));
        out = Finish::verified(v0, v1, mono_ns(), bad, &first);
        if bad > 0 {
            // A mismatch fails the migration: the source resumes, the
            // destination (never run) is dropped by the caller.
            src.qmp.execute(qmp::cont {}).await?;
            return Ok(out);
        }
        dst.qmp.execute(qmp::cont {}).await?;
    }
    let (ev, _) = dst.qmp.wait_event(Duration::from_secs(30), |e| matches!(e, qmp::Event::RESUME { .. })).await;
    out.resume_ns = ev.map(|e| e.mono_ns);
    Ok(out)
}

/// After `completed`, with a destination on another machine: with
/// `--verify`, the source dumps and hashes its paused RAM while the
/// destination does the same, and the page digests are compared; then the
/// destination is `cont`ed (or on a mismatch the source). The resume time
/// is when the destination's "resumed" reply arrives here (the clocks of
/// two machines are not comparable), so the downtime includes one
/// round trip of the control channel.
async fn finish_remote(
    src: &mut QemuProcess,
    r: &mut dyn RemoteDestination,
    dir: &Path,
    ram_bytes: u64,
    verify: bool,
) -> Result<Finish, QemuError> {
    let mut out = Finish::default();
    if verify {
        let v0 = mono_ns();
        r.ask_digests()?;
        let sd = Dump::new(dir, ram_bytes, "source");
        src.qmp.execute(qmp::pmemsave { val: 0, size: ram_bytes, filename: sd.path.display().to_string() }).await?;
        let ours = PageDigests::of_file(&sd.path).map_err(io_err("hashing the source's RAM dump"))?;
        drop(sd);
        let v1 = mono_ns();
        let theirs = r.digests()?;
        let (bad, first) = ours.compare(&theirs);
        out = Finish::verified(v0, v1, mono_ns(), bad, &first);
        if bad > 0 {
            src.qmp.execute(qmp::cont {}).await?;
            return Ok(out);
        }
    }
    r.resume()?;
    out.resume_ns = Some(mono_ns());
    Ok(out)
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

/// Pages (4 KiB) that differ between two RAM dumps (a length difference
/// counts its pages as differing), and the guest-physical addresses of the
/// first few.
fn compare_dumps(a: &Path, b: &Path) -> Result<(u64, Vec<u64>), QemuError> {
    let mut fa = File::open(a).map_err(io_err(format!("opening {}", a.display())))?;
    let mut fb = File::open(b).map_err(io_err(format!("opening {}", b.display())))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let (mut bad, mut first, mut off) = (0u64, Vec::new(), 0u64);
    loop {
        let na = pages::read_full(&mut fa, &mut ba).map_err(io_err("reading the source dump"))?;
        let nb = pages::read_full(&mut fb, &mut bb).map_err(io_err("reading the destination dump"))?;
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
    use std::io::{Read, Write};
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
