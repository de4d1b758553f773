//! QEMU with the Linux guest as a system under test: the boundary's calls
//! mapped onto [`QemuSystem`] (QMP) and the guest agent's HTTP endpoints.
//!
//! | boundary | QEMU |
//! |---|---|
//! | `start` | the destination with `-incoming` (and `-S`, so `--verify` can compare RAM before it runs), then the source, until the agent answers `/health`; with simulated hosts each on its host, the stream over the migration link |
//! | `migrate` | the policy mapped by [`migrate_options`]: `downtime` → `downtime-limit` + `max-bandwidth` (over a shaped link, twice the link's rate unless the policy caps it, so the link is the limit); the throttle → `auto-converge`; `xen` → n/a, with the reason |
//! | progress | each `query-migrate` poll: `dirty-sync-count`, `remaining`, `transferred` |
//! | `heartbeat` | the agent's `/status` uptime while QMP says that side runs; a paused side's counter stands still |
//! | `guest_memcheck` | the agent's `/memcheck` (workload `memcheck`) |
//! | `pause` / `resume` | QMP `stop` / `cont` |
//! | `resolve_indeterminate` | QEMU has no commitment phase of ours and never reports it; keeps whichever copy runs |
//! | `teardown` | QMP `quit`, wait, then SIGKILL by pid |
//!
//! After a completed migration the QEMU that received the guest is the
//! destination side; the source QEMU was told to quit by the driver.

use super::{GuestSpec, MigrationProgress, RunContext, Side, SystemUnderTest, Teardown};
use crate::error::RunnerError;
use crate::qemu::driver::RemoteDestination;
use crate::qemu::driver::{find_binary, HostNic, QemuConfig, QemuError, QemuMigrateOptions, QemuSystem, QemuTotals};
use crate::qemu::remote::{Client, RemoteGuest};
use linux_guest::api::AgentStatus;
use results::{MigrationStats, Outcome, Policy, Throttle};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the Linux guest may take from launch to its first `/health`
/// answer (4–6 s under TCG here; more on a loaded machine).
const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// The QEMU options for a policy: the one place where migbench's policy
/// becomes QEMU's parameters and capabilities.
///
/// - `downtime`: `downtime-limit` and `max-bandwidth` (the driver sets both
///   from the policy; without a cap QEMU keeps its own 128 MiB/s default,
///   except over a shaped `link`, where the cap becomes twice the link's
///   rate, so that the link and not QEMU's default limits the stream);
/// - the throttle (`--throttle`, `throttle = true`): QEMU's `auto-converge`
///   capability, with `cpu-throttle-initial`, `cpu-throttle-increment`,
///   `max-cpu-throttle` and `throttle-trigger-threshold` from
///   [`results::Throttle`] (whose defaults are QEMU's);
/// - `xen`: n/a for QEMU, with the reason.
pub fn migrate_options(
    policy: &Policy,
    throttle: Option<Throttle>,
    verify: bool,
    link: Option<&results::Link>,
) -> Result<QemuMigrateOptions, QemuError> {
    if let Policy::Xen { .. } = policy {
        return Err(QemuError::NotApplicable(
            "policy xen is n/a for QEMU: QEMU has no Xen-style dynamic rate limiting (its rate is one fixed \
             max-bandwidth), so use the downtime policy"
                .into(),
        ));
    }
    let mut policy = policy.clone();
    if let (Policy::Downtime { max_bandwidth_mbps: cap @ None, .. }, Some(bps)) =
        (&mut policy, link.and_then(|l| l.bandwidth_bps))
    {
        *cap = Some(2.0 * bps as f64 / 1e6);
    }
    Ok(QemuMigrateOptions { policy, auto_converge: throttle, verify })
}

/// Why the `qemu` system cannot run here, if it cannot: the binary, kernel
/// and initrd of `cfg` must exist.
pub fn unavailable(cfg: &QemuConfig) -> Option<String> {
    if find_binary(&cfg.binary).is_none() {
        return Some(QemuError::NoBinary(cfg.binary.display().to_string()).to_string());
    }
    for (what, path) in [("kernel", &cfg.kernel), ("initrd", &cfg.initrd)] {
        if !path.is_file() {
            return Some(QemuError::NoFile { what, path: path.clone() }.to_string());
        }
    }
    None
}

/// The `qemu` system: one [`QemuSystem`] per run, created by `start`.
pub struct Qemu {
    cfg: QemuConfig,
    /// Auto-converge for the next migration.
    throttle: Option<Throttle>,
    sys: Option<QemuSystem>,
    /// A migration completed: the guest runs in the QEMU that received it.
    migrated: bool,
    /// The last heartbeat seen on each side (source, destination).
    last_heartbeat: Cell<[u64; 2]>,
    /// The accelerator's reason and QEMU's version, once started.
    note: Option<String>,
    /// The launch-to-first-`/health` time of the source, ms.
    boot_ms: Option<f64>,
    /// QEMU's own totals of the last migration.
    totals: Option<QemuTotals>,
    /// The shaped migration link of the run, if any.
    link: Option<results::Link>,
    /// A destination on another machine: `migbench qemu-incoming`'s
    /// control address, its TLS directory, and the guest's NIC here.
    remote: Option<RemoteSpec>,
}

/// Where a remote destination is and how the source reaches it.
#[derive(Debug, Clone)]
struct RemoteSpec {
    to: String,
    tls_dir: Option<PathBuf>,
    nic: HostNic,
}

/// Aborts the remote destination unless taken (a start that fails half-way).
struct AbortOnDrop(Option<Client>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            c.abort();
        }
    }
}

/// Both QEMUs here, on the run's topology.
fn start_local(guest: &GuestSpec, cfg: QemuConfig, ctx: &RunContext) -> Result<QemuSystem, RunnerError> {
    let (Some(names), Some(file_bytes)) = (ctx.names, ctx.file_bytes) else {
        return Err(RunnerError::System {
            system: "qemu",
            message: "the Linux guest needs the run's network (its agent is reached over HTTP)".into(),
        });
    };
    let workload: linux_guest::params::Workload = guest
        .workload
        .parse()
        .map_err(|e| RunnerError::System { system: "qemu", message: format!("the guest's workload: {e}") })?;
    let mut sys = QemuSystem::new(cfg, names, file_bytes, workload, &ctx.dir.join("qemu"))?;
    sys.start_destination(true)?;
    sys.start_source()?;
    Ok(sys)
}

/// The source here and the destination over there.
fn start_remote(r: &RemoteSpec, cfg: QemuConfig, workload: &str, dir: &Path) -> Result<QemuSystem, RunnerError> {
    let sys_err = |message: String| RunnerError::System { system: "qemu", message };
    let parsed = workload.parse().map_err(|e| sys_err(format!("the guest's workload: {e}")))?;
    let mut sys = QemuSystem::on_host(cfg.clone(), &r.nic, None, parsed, dir)?;
    let creds = match &r.tls_dir {
        Some(d) => Some(vmm_min::migration::tls::TlsCredentials::load(d).map_err(|e| sys_err(e.to_string()))?),
        None => None,
    };
    let mut client = Client::connect(&r.to, creds.as_ref()).map_err(|e| sys_err(e.to_string()))?;
    let guest = RemoteGuest {
        machine: cfg.machine.clone(),
        accel: cfg.accel,
        memory_mib: cfg.memory_mib,
        smp: cfg.smp,
        ip: r.nic.ip,
        prefix: r.nic.prefix,
        mac: r.nic.mac.clone(),
        file_bytes: r.nic.file_bytes,
        workload: workload.to_string(),
    };
    let (listen, tls) = client.start(&guest).map_err(|e| sys_err(e.to_string()))?;
    let mut client = AbortOnDrop(Some(client));
    if r.tls_dir.is_some() != tls {
        return Err(sys_err(format!(
            "the destination's QEMU waits on {listen} {}, but this side has {}: give both sides the same --tls-dir",
            if tls { "over TLS" } else { "without TLS" },
            if r.tls_dir.is_some() { "TLS credentials" } else { "none" }
        )));
    }
    if let Some(d) = &r.tls_dir {
        let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h);
        sys.use_tls(d, host.trim_start_matches('[').trim_end_matches(']'))?;
    }
    sys.start_source()?;
    let client = client.0.take().ok_or_else(|| sys_err("the control channel vanished".into()))?;
    sys.set_remote_destination(Box::new(client), listen);
    Ok(sys)
}

impl Qemu {
    /// The system for `cfg` (its memory and vCPUs are taken from the
    /// experiment's guest).
    pub fn new(cfg: QemuConfig) -> Qemu {
        Qemu {
            cfg,
            throttle: None,
            sys: None,
            migrated: false,
            last_heartbeat: Cell::new([0; 2]),
            note: None,
            boot_ms: None,
            totals: None,
            link: None,
            remote: None,
        }
    }

    /// Migrates to a destination on another machine, started there with
    /// `migbench qemu-incoming --control TO` (over mutual TLS with the
    /// credentials of `tls_dir`, required unless TO is loopback); the
    /// source QEMU runs here with the guest's NIC on `nic`'s TAP, and the
    /// guest's HTTP is reached from here.
    pub fn with_remote(mut self, to: String, tls_dir: Option<PathBuf>, nic: HostNic) -> Qemu {
        self.remote = Some(RemoteSpec { to, tls_dir, nic });
        self
    }

    /// QEMU's own figures for the last migration (`total-time`, `downtime`,
    /// `setup-time`, the accelerator), if one ran.
    pub fn totals(&self) -> Option<&QemuTotals> {
        self.totals.as_ref()
    }

    fn sys(&self) -> Result<&QemuSystem, RunnerError> {
        self.sys.as_ref().ok_or_else(|| RunnerError::System { system: "qemu", message: "not started".into() })
    }

    /// Which QEMU holds `side`: `Ok(true)` the destination slot, `Ok(false)`
    /// the source slot. After a completed migration the receiving QEMU sits
    /// in the driver's source slot and the source is gone.
    fn slot(&self, side: Side) -> Result<bool, RunnerError> {
        match (side, self.migrated) {
            (Side::Source, false) => Ok(false),
            (Side::Destination, false) => Ok(true),
            (Side::Destination, true) => Ok(false),
            (Side::Source, true) => Err(RunnerError::System {
                system: "qemu",
                message: "the source QEMU quit after the completed migration".into(),
            }),
        }
    }

    fn running(&self, side: Side) -> Result<bool, RunnerError> {
        let dest = self.slot(side)?;
        Ok(self.sys()?.status(dest)?.0)
    }
}

impl SystemUnderTest for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&mut self, guest: &GuestSpec, ctx: &RunContext) -> Result<(), RunnerError> {
        let mut cfg = self.cfg.clone();
        cfg.memory_mib = u32::try_from(guest.memory >> 20).unwrap_or(u32::MAX).max(1);
        cfg.smp = guest.vcpus.max(1);
        let sys = match &self.remote {
            Some(r) => start_remote(r, cfg, &guest.workload, &ctx.dir.join("qemu"))?,
            None => start_local(guest, cfg, ctx)?,
        };
        self.boot_ms = Some(sys.wait_http_ready(BOOT_LIMIT)?.as_secs_f64() * 1e3);
        let version = sys.version().unwrap_or_else(|e| format!("version unknown ({e})"));
        self.note = Some(format!("QEMU {version}, -machine {}; accelerator {}", self.cfg.machine, sys.accel().reason));
        self.migrated = false;
        self.link = ctx.link.cloned();
        self.sys = Some(sys);
        Ok(())
    }

    fn destination_is_remote(&self) -> bool {
        self.remote.is_some()
    }

    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    fn boot_to_http_ms(&self) -> Option<f64> {
        self.boot_ms
    }

    fn set_throttle(&mut self, throttle: Option<Throttle>) {
        self.throttle = throttle;
    }

    fn migrate(
        &mut self,
        policy: &Policy,
        verify: bool,
        progress: &mut dyn FnMut(&MigrationProgress),
    ) -> Result<MigrationStats, RunnerError> {
        let opts = migrate_options(policy, self.throttle, verify, self.link.as_ref())?;
        let sys =
            self.sys.as_mut().ok_or_else(|| RunnerError::System { system: "qemu", message: "not started".into() })?;
        // The destination waits with -S; without --verify it is started
        // again without it, so the switchover has no extra `cont` in it.
        if self.remote.is_none() && sys.destination_paused() != verify {
            sys.kill_destination();
            sys.start_destination(verify)?;
        }
        let mut last: Option<(u64, i64)> = None;
        let m = sys.migrate_with_progress(&opts, &mut |s| {
            let rate_mbps = match last {
                Some((t, b)) if s.mono_ns > t => {
                    (s.transferred - b).max(0) as f64 * 8.0 / ((s.mono_ns - t) as f64 / 1e9) / 1e6
                }
                _ => 0.0,
            };
            last = Some((s.mono_ns, s.transferred));
            progress(&MigrationProgress {
                rounds: s.dirty_sync_count.max(0) as u32,
                dirty_pages: s.remaining.max(0) as u64 / s.page_size.max(1) as u64,
                rate_mbps,
                sent_bytes: s.transferred.max(0) as u64,
            });
        })?;
        self.migrated = m.stats.outcome == Outcome::Completed;
        self.totals = Some(m.qemu);
        Ok(m.stats)
    }

    fn heartbeat(&self, side: Side) -> Result<u64, RunnerError> {
        let i = usize::from(side == Side::Destination);
        if !self.running(side)? {
            // Paused: the guest on that side does not advance.
            return Ok(self.last_heartbeat.get()[i]);
        }
        let (code, body) = self.sys()?.guest_get(linux_guest::api::STATUS_PATH)?;
        if code != 200 {
            return Err(RunnerError::System { system: "qemu", message: format!("GET /status answered {code}") });
        }
        let st: AgentStatus = serde_json::from_slice(&body)
            .map_err(|e| RunnerError::System { system: "qemu", message: format!("GET /status: {e}") })?;
        let mut hb = self.last_heartbeat.get();
        hb[i] = st.uptime_ms;
        self.last_heartbeat.set(hb);
        Ok(st.uptime_ms)
    }

    fn guest_memcheck(&self, side: Side) -> Result<u64, RunnerError> {
        if !self.running(side)? {
            return Err(RunnerError::System {
                system: "qemu",
                message: format!("the guest is paused on the {}: resume it before its memory check", side.name()),
            });
        }
        Ok(self.sys()?.memcheck()?.mismatches)
    }

    fn resolve_indeterminate(&self) -> Result<Side, RunnerError> {
        // QEMU's migration never ends indeterminate (the driver maps every
        // end onto completed, cancelled or failed); should one be asked
        // for, the copy that runs is the guest.
        if self.migrated {
            return Ok(Side::Destination);
        }
        let sys = self.sys()?;
        if !sys.status(false)?.0 {
            sys.resume(false)?;
        }
        Ok(Side::Source)
    }

    fn pause(&self, side: Side) -> Result<(), RunnerError> {
        let dest = self.slot(side)?;
        self.sys()?.pause(dest).map_err(Into::into)
    }

    fn resume(&self, side: Side) -> Result<(), RunnerError> {
        let dest = self.slot(side)?;
        self.sys()?.resume(dest).map_err(Into::into)
    }

    fn teardown(&mut self) -> Teardown {
        let Some(mut sys) = self.sys.take() else { return Teardown::default() };
        let (in_source_slot, in_dest_slot) = sys.quit_all();
        if self.migrated {
            Teardown { source_exit: sys.old_source_exit(), destination_exit: in_source_slot }
        } else {
            Teardown { source_exit: in_source_slot, destination_exit: in_dest_slot }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::OnTimeout;

    #[test]
    fn policies_map_onto_qemu_or_say_why_not() {
        let d = Policy::Downtime {
            downtime_ms: 300.0,
            timeout_ms: 1000.0,
            on_timeout: OnTimeout::Cancel,
            max_bandwidth_mbps: Some(80_000.0),
        };
        let o = migrate_options(&d, None, true, None).unwrap();
        assert_eq!((o.policy.clone(), o.auto_converge, o.verify), (d.clone(), None, true));
        let t = Throttle::default();
        let o = migrate_options(&d, Some(t), false, None).unwrap();
        assert_eq!(o.auto_converge, Some(t));
        // Over a shaped link an uncapped policy is capped at twice the
        // link's rate; a policy's own cap stays.
        let gbit = results::Link { bandwidth_bps: Some(1_000_000_000), ..Default::default() };
        let Policy::Downtime { on_timeout, .. } = d else { unreachable!() };
        let uncapped =
            Policy::Downtime { downtime_ms: 300.0, timeout_ms: 1000.0, on_timeout, max_bandwidth_mbps: None };
        let o = migrate_options(&uncapped, None, false, Some(&gbit)).unwrap();
        assert!(matches!(o.policy, Policy::Downtime { max_bandwidth_mbps: Some(m), .. } if m == 2000.0), "{o:?}");
        let o = migrate_options(&d, None, false, Some(&gbit)).unwrap();
        assert_eq!(o.policy, d);
        let x = Policy::build("xen", &Default::default()).unwrap();
        let e = migrate_options(&x, None, false, None).unwrap_err().to_string();
        assert!(e.contains("n/a for QEMU") && e.contains("downtime policy"), "{e}");
    }

    #[test]
    fn a_missing_binary_or_image_is_a_reason_not_a_panic() {
        let cfg = QemuConfig { binary: "qemu-system-nonexistent".into(), ..QemuConfig::new("/k".into(), "/i".into()) };
        assert!(unavailable(&cfg).unwrap().contains("apt-get install qemu-system-x86"));
        let cfg = QemuConfig { binary: "/bin/sh".into(), ..QemuConfig::new("/nonexistent/k".into(), "/i".into()) };
        let why = unavailable(&cfg).unwrap();
        assert!(why.contains("/nonexistent/k") && why.contains("--kernel"), "{why}");
    }
}
