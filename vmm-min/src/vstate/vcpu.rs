//! A vCPU: its KVM handle, its thread's run loop, exit accounting, the kick
//! that forces it out of `KVM_RUN` (immediate_exit plus a signal whose
//! handler does nothing else, installed without SA_RESTART), and its
//! migration state ([`VcpuState`], saved and restored by the vCPU itself).
//!
//! [`VcpuSet`] is all of a VM's vCPUs with their run control and doorbell;
//! it is what the VMM pauses. The run loop reaches the rest of the VM only
//! through [`VcpuHost`]: the MMIO bus, guest memory, and where the guest's
//! exit and result lines go.

use crate::devices::bus::MmioBus;
use crate::devices::control::ControlAction;
use crate::error::{Error, Result, VcpuStateError};
use crate::exit::GuestExit;
use crate::memory::GuestMem;
use crate::run_control::{Doorbell, Pausable, RunControl};
use crate::sync::lock;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_run, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

thread_local! {
    /// This thread's `kvm_run`, for the kick signal's handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's mapped `kvm_run`, valid while
        // the vCPU exists; a volatile byte store is async-signal-safe.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), 1) }
    }
}

/// The signal used to kick vCPU threads.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| Error::State(format!("cannot install the vCPU kick handler: {e}")));
    });
    res
}

/// Exit counts of one vCPU.
#[derive(Default)]
pub struct ExitStats {
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    wait: AtomicU64,
    hlt: AtomicU64,
    interrupted: AtomicU64,
    other: AtomicU64,
}

/// A snapshot of [`ExitStats`].
#[derive(Debug, Clone, Serialize)]
pub struct ExitCounts {
    /// vCPU index.
    pub vcpu: usize,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes (including waits).
    pub mmio_write: u64,
    /// Of the MMIO writes, "wait for work" requests.
    pub wait: u64,
    /// HLT exits.
    pub hlt: u64,
    /// Returns from `KVM_RUN` because of a kick or a signal.
    pub interrupted: u64,
    /// Any other exit.
    pub other: u64,
    /// All exits.
    pub total: u64,
}

/// A vCPU and its thread's identity.
pub struct Vcpu {
    /// Index, also the APIC id.
    pub index: usize,
    /// The KVM handle; the vCPU thread holds the lock while in `KVM_RUN`.
    pub(crate) fd: Mutex<VcpuFd>,
    stats: ExitStats,
    thread: OnceLock<libc::pthread_t>,
    /// The thread's kernel id, for its scheduling priority (0: not started).
    tid: std::sync::atomic::AtomicI32,
    /// Auto-converge: how long the thread is asked to stay out of the guest
    /// at its next exit, ns (set before a kick, taken by the thread).
    hold_ns: AtomicU64,
    /// Auto-converge: how long the thread has been held off in all, ns.
    held_ns: AtomicU64,
    /// The priority the thread set itself at its start (only vCPU 0 of a VM
    /// with workers sets one).
    priority: OnceLock<results::ThreadPriority>,
}

impl Vcpu {
    /// Wraps a created, configured vCPU.
    pub fn new(index: usize, fd: VcpuFd) -> Result<Self> {
        install_kick_handler()?;
        Ok(Self {
            index,
            fd: Mutex::new(fd),
            stats: ExitStats::default(),
            thread: OnceLock::new(),
            tid: Default::default(),
            hold_ns: AtomicU64::new(0),
            held_ns: AtomicU64::new(0),
            priority: OnceLock::new(),
        })
    }

    /// Asks the vCPU to stay out of the guest for `ns` (auto-converge's duty
    /// cycle) and kicks it so that it does at once. A pause or stop ends
    /// the hold early.
    pub fn hold_off(&self, ns: u64) {
        self.hold_ns.store(ns, Ordering::Release);
        self.kick();
    }

    /// The priority the vCPU's thread set itself, once it has started
    /// (`None`: it set none).
    pub fn priority(&self) -> Option<&results::ThreadPriority> {
        self.priority.get()
    }

    /// How long the vCPU has been held off by [`Vcpu::hold_off`] in all, ns.
    pub fn held_ns(&self) -> u64 {
        self.held_ns.load(Ordering::Acquire)
    }

    /// The vCPU thread's kernel thread id, once it runs.
    pub fn tid(&self) -> Option<libc::pid_t> {
        Some(self.tid.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// Serves a pending hold: sleeps for it in slices of at most 1 ms, so
    /// that a pause or a stop (`interrupted`) is never held up.
    fn serve_hold(&self, interrupted: impl Fn() -> bool) {
        if self.hold_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        let ns = self.hold_ns.swap(0, Ordering::AcqRel);
        if ns == 0 {
            return;
        }
        let t0 = std::time::Instant::now();
        let want = Duration::from_nanos(ns);
        while !interrupted() {
            let Some(left) = want.checked_sub(t0.elapsed()).filter(|d| !d.is_zero()) else { break };
            std::thread::sleep(left.min(Duration::from_millis(1)));
        }
        self.held_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::AcqRel);
    }

    /// Forces the vCPU out of `KVM_RUN`, or makes its next entry return at once.
    pub fn kick(&self) {
        if let Some(t) = self.thread.get() {
            // SAFETY: the thread is joined only after the VM stops, and the
            // VMM kicks only before joining, so the id is valid.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// The exit counts so far.
    pub fn exit_counts(&self) -> ExitCounts {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = [g(&s.mmio_read), g(&s.mmio_write), g(&s.hlt), g(&s.interrupted), g(&s.other)];
        ExitCounts {
            vcpu: self.index,
            mmio_read: c[0],
            mmio_write: c[1],
            wait: g(&s.wait),
            hlt: c[2],
            interrupted: c[3],
            other: c[4],
            total: c.iter().sum(),
        }
    }
}

/// One vCPU's architectural state, as a migration carries it.
#[derive(Serialize, Deserialize)]
#[cfg_attr(test, derive(Default))]
pub struct VcpuState {
    /// The CPUID the vCPU runs with (checked against the destination's).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    /// `(index, value)` of every MSR that could be read.
    msrs: Vec<(u32, u64)>,
    events: kvm_vcpu_events,
}

#[cfg(test)]
impl VcpuState {
    /// A zero state with this CPUID, for tests of the compatibility check.
    pub(crate) fn with_cpuid(cpuid: Vec<kvm_cpuid_entry2>) -> Self {
        VcpuState { cpuid, ..Default::default() }
    }
}

type StateResult<T> = std::result::Result<T, VcpuStateError>;

impl Vcpu {
    /// The CPUID the vCPU runs with (what KVM_SET_CPUID2 gave it).
    pub fn cpuid(&self) -> StateResult<Vec<kvm_cpuid_entry2>> {
        let cpuid = lock(&self.fd).get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(VcpuStateError::VcpuGetCpuid)?;
        Ok(cpuid.as_slice().to_vec())
    }

    /// Saves the vCPU's state. Call only while every vCPU of the VM is
    /// paused: KVM_GET_VCPU_EVENTS is not safe while other vCPUs run.
    /// `msr_indices` is the host's MSR list (`Vm::msr_index_list`).
    ///
    /// Order (see HOST-KVM.md):
    /// - CPUID first: reading it changes nothing.
    /// - mp_state before everything else: KVM_GET_MP_STATE lets KVM accept
    ///   pending events, which can change the other registers, so they must
    ///   be read after it to be consistent with it.
    /// - MSRs in batches: KVM_GET_MSRS stops at the first MSR it cannot read;
    ///   that one is skipped and the rest read on.
    /// - vcpu_events last: the other GET ioctls may still move pending
    ///   exception or interrupt state into it.
    pub fn save_state(&self, msr_indices: &[u32]) -> StateResult<VcpuState> {
        let cpuid = self.cpuid()?;
        let fd = lock(&self.fd);
        Ok(VcpuState {
            cpuid,
            mp_state: fd.get_mp_state().map_err(VcpuStateError::VcpuGetMpState)?,
            regs: fd.get_regs().map_err(VcpuStateError::VcpuGetRegs)?,
            sregs: fd.get_sregs().map_err(VcpuStateError::VcpuGetSregs)?,
            xsave: fd.get_xsave().map_err(VcpuStateError::VcpuGetXsave)?,
            xcrs: fd.get_xcrs().map_err(VcpuStateError::VcpuGetXcrs)?,
            debugregs: fd.get_debug_regs().map_err(VcpuStateError::VcpuGetDebugRegs)?,
            msrs: read_msrs(&fd, msr_indices)?,
            events: fd.get_vcpu_events().map_err(VcpuStateError::VcpuGetVcpuEvents)?,
        })
    }

    /// Restores a saved state into a vCPU that has not run yet.
    ///
    /// Order (see HOST-KVM.md):
    /// - CPUID first, and only before the first KVM_RUN (KVM refuses a new
    ///   CPUID after it): which MSRs exist and the xsave layout depend on it.
    /// - mp_state, then regs: KVM_SET_REGS clears a pending exception, so it
    ///   comes before vcpu_events, which restores it.
    /// - sregs before MSRs: KVM_SET_SREGS writes EFER and the APIC base,
    ///   which KVM_SET_MSRS must not see overwritten afterwards.
    /// - xsave after sregs (CR4 decides which state components are live),
    ///   then xcrs and debugregs.
    /// - MSRs in batches, skipping those KVM refuses while holding their
    ///   reset value (see `write_msrs`).
    /// - vcpu_events last: it restores the pending exception and interrupt
    ///   state that the earlier SET ioctls may have cleared.
    pub fn restore_state(&self, s: &VcpuState) -> StateResult<()> {
        let cpuid = CpuId::from_entries(&s.cpuid).map_err(|source| VcpuStateError::TooManyEntries {
            what: "CPUID",
            entries: s.cpuid.len(),
            source,
        })?;
        let fd = lock(&self.fd);
        fd.set_cpuid2(&cpuid).map_err(VcpuStateError::VcpuSetCpuid)?;
        fd.set_mp_state(s.mp_state).map_err(VcpuStateError::VcpuSetMpState)?;
        fd.set_regs(&s.regs).map_err(VcpuStateError::VcpuSetRegs)?;
        fd.set_sregs(&s.sregs).map_err(VcpuStateError::VcpuSetSregs)?;
        // SAFETY: `s.xsave` is a complete kvm_xsave read from a vCPU whose
        // CPUID was just set here too; KVM validates its content.
        unsafe { fd.set_xsave(&s.xsave) }.map_err(VcpuStateError::VcpuSetXsave)?;
        fd.set_xcrs(&s.xcrs).map_err(VcpuStateError::VcpuSetXcrs)?;
        fd.set_debug_regs(&s.debugregs).map_err(VcpuStateError::VcpuSetDebugRegs)?;
        write_msrs(&fd, &s.msrs)?;
        fd.set_vcpu_events(&s.events).map_err(VcpuStateError::VcpuSetVcpuEvents)
    }
}

fn msr_batch(entries: &[kvm_msr_entry]) -> StateResult<Msrs> {
    Msrs::from_entries(entries).map_err(|source| VcpuStateError::TooManyEntries {
        what: "MSR",
        entries: entries.len(),
        source,
    })
}

fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> StateResult<Vec<(u32, u64)>> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = msr_batch(&entries)?;
        let n = fd.get_msrs(&mut msrs).map_err(VcpuStateError::VcpuGetMsrs)?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // Entry `n` failed to read: skip it and go on after it.
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Writes MSRs in batches. KVM_SET_MSRS stops at the first MSR it refuses;
/// one still holding its reset value (0) is skipped, as a fresh vCPU already
/// has it (KVM's paravirtual MSRs refuse writes in a VM without an irqchip),
/// while refusing any other value is an error.
fn write_msrs(fd: &VcpuFd, msrs: &[(u32, u64)]) -> StateResult<()> {
    let mut rest = msrs;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let n = fd.set_msrs(&msr_batch(&entries)?).map_err(VcpuStateError::VcpuSetMsrs)?;
        if let Some(&(index, value)) = rest.get(n) {
            if value != 0 {
                return Err(VcpuStateError::VcpuMsrRefused { index, value });
            }
            tracing::debug!("MSR {index:#x} refused with its reset value; skipped");
        }
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(())
}

/// How long [`VcpuSet::pause`] waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A VM's vCPUs, their run control and the doorbell a waiting vCPU sleeps on.
pub struct VcpuSet {
    vcpus: Vec<Arc<Vcpu>>,
    run: RunControl,
    bell: Doorbell,
    /// CLOCK_MONOTONIC when a vCPU first entered `KVM_RUN` (0: not yet).
    first_run_ns: AtomicU64,
}

impl VcpuSet {
    /// The set of created, configured vCPUs.
    pub fn new(vcpus: Vec<Arc<Vcpu>>) -> Self {
        VcpuSet { vcpus, run: RunControl::default(), bell: Doorbell::new(), first_run_ns: AtomicU64::new(0) }
    }

    /// The vCPUs, by index.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Vcpu>> {
        self.vcpus.iter()
    }

    /// The doorbell devices ring to wake a vCPU waiting for work.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// CLOCK_MONOTONIC ns when a vCPU first entered `KVM_RUN`, once one has.
    pub fn first_run_ns(&self) -> Option<u64> {
        Some(self.first_run_ns.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// Asks every vCPU to stop and forces it out of `KVM_RUN` or its wait.
    pub fn stop(&self) {
        self.run.request_stop();
        self.bell.ring();
        self.kick_all();
    }

    fn kick_all(&self) {
        for v in &self.vcpus {
            v.kick();
        }
    }
}

impl Pausable for VcpuSet {
    /// Parks every vCPU outside `KVM_RUN`.
    fn pause(&self) -> Result<()> {
        self.run.request_pause();
        self.bell.ring();
        self.kick_all();
        if !self.run.wait_parked(self.vcpus.len(), PAUSE_TIMEOUT) {
            self.run.resume();
            return Err(Error::PauseTimeout { what: "vCPUs", timeout: PAUSE_TIMEOUT });
        }
        Ok(())
    }

    fn resume(&self) {
        self.run.resume();
    }
}

/// What a vCPU thread needs from the VM around it.
pub trait VcpuHost: Send + Sync {
    /// The vCPU set the thread belongs to.
    fn vcpus(&self) -> &VcpuSet;
    /// Where MMIO exits go.
    fn bus(&self) -> &MmioBus;
    /// Guest RAM (result lines and fault frames are read from it).
    fn memory(&self) -> &GuestMem;
    /// Records how the guest ended and stops the VM.
    fn finish(&self, exit: GuestExit);
    /// A result line the guest sent.
    fn guest_result(&self, line: String);
}

/// Longest single sleep a "wait for work" may ask for.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Longest result line the VMM accepts from the guest.
const MAX_LINE: usize = 4096;

/// The vCPU thread's body: runs the guest until the VM stops.
pub fn run_loop(vcpu: Arc<Vcpu>, host: Arc<dyn VcpuHost>) {
    {
        let mut fd = lock(&vcpu.fd);
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|r| r.set(run));
    }
    // SAFETY: pthread_self and gettid have no preconditions.
    let _ = vcpu.thread.set(unsafe { libc::pthread_self() });
    vcpu.tid.store(unsafe { libc::gettid() }, Ordering::Release);
    let set = host.vcpus();
    if vcpu.index == 0 && set.iter().len() > 1 {
        // vCPU 0 runs the guest's network and heartbeat: busy workers must
        // not starve it (see `run_control::LATENCY_NICE`).
        let _ = vcpu.priority.set(crate::run_control::raise_current(results::ThreadRole::NetVcpu));
    }
    if !set.run.stopping() {
        let _ = set.first_run_ns.compare_exchange(0, results::clock::mono_ns(), Ordering::AcqRel, Ordering::Relaxed);
        run_guest(&vcpu, &*host);
    }
    set.run.leave();
}

fn run_guest(vcpu: &Vcpu, host: &dyn VcpuHost) {
    let set = host.vcpus();
    let mut bell_seen = 0u64;
    loop {
        if set.run.needs_attention() && !set.run.park_if_requested() {
            break;
        }
        vcpu.serve_hold(|| set.run.needs_attention());
        let mut fd = lock(&vcpu.fd);
        let action = match fd.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                vcpu.stats.mmio_read.fetch_add(1, Ordering::Relaxed);
                host.bus().read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                vcpu.stats.mmio_write.fetch_add(1, Ordering::Relaxed);
                host.bus().write(addr, data)
            }
            Ok(VcpuExit::Hlt) => {
                vcpu.stats.hlt.fetch_add(1, Ordering::Relaxed);
                Some(ControlAction::Wait(1000))
            }
            Ok(VcpuExit::Intr) => {
                vcpu.stats.interrupted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(VcpuExit::Shutdown) => {
                host.finish(crash(&fd, "triple fault (KVM_EXIT_SHUTDOWN)"));
                break;
            }
            Ok(VcpuExit::InternalError) => {
                host.finish(crash(&fd, "KVM internal error (emulation failure)"));
                break;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                host.finish(GuestExit::Crash { reason: format!("VM entry failed: reason {reason:#x} on CPU {cpu}") });
                break;
            }
            Ok(other) => {
                vcpu.stats.other.fetch_add(1, Ordering::Relaxed);
                let reason = format!("unexpected exit {other:?}");
                host.finish(crash(&fd, &reason));
                break;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.stats.interrupted.fetch_add(1, Ordering::Relaxed);
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => {
                host.finish(GuestExit::Crash { reason: format!("KVM_RUN failed: {e}") });
                break;
            }
        };
        let Some(action) = action else { continue };
        match action {
            ControlAction::Wait(us) => {
                vcpu.stats.wait.fetch_add(1, Ordering::Relaxed);
                drop(fd);
                let timeout = Duration::from_micros(us).min(MAX_WAIT);
                set.bell.wait(&mut bell_seen, timeout, || set.run.needs_attention());
            }
            ControlAction::Exit(code) => {
                host.finish(GuestExit::PowerOff { code });
                break;
            }
            ControlAction::Fault(rsp) => {
                let exit = fault_report(host.memory(), &fd, vcpu.index, rsp);
                host.finish(exit);
                break;
            }
            ControlAction::Result(addr, len) => {
                if let Some(line) = guest_line(host.memory(), addr, len) {
                    tracing::debug!(vcpu = vcpu.index, %line, "guest result");
                    host.guest_result(line);
                }
            }
            ControlAction::Ignore => {}
        }
    }
}

fn crash(fd: &VcpuFd, what: &str) -> GuestExit {
    let rip = fd.get_regs().map(|r| r.rip).unwrap_or(0);
    GuestExit::Crash { reason: format!("{what} at RIP {rip:#x}") }
}

/// Reads a guest-supplied line; a bad address or length is logged, not fatal.
fn guest_line(mem: &GuestMem, addr: u64, len: usize) -> Option<String> {
    if len > MAX_LINE {
        tracing::warn!(len, "guest line too long; ignored");
        return None;
    }
    let mut buf = vec![0u8; len];
    match mem.read_slice(&mut buf, GuestAddress(addr)) {
        Ok(()) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => {
            tracing::warn!("guest line at {addr:#x} unreadable: {e}");
            None
        }
    }
}

/// Builds the fault report from the stub's frame: vector, error code, RIP.
fn fault_report(mem: &GuestMem, fd: &VcpuFd, vcpu: usize, rsp: u64) -> GuestExit {
    let frame: std::result::Result<[u64; 3], _> = mem.read_obj(GuestAddress(rsp));
    let address = fd.get_sregs().map(|s| s.cr2).unwrap_or(0);
    match frame {
        Ok([vector, error_code, rip]) => GuestExit::Fault { vector, error_code, rip, address, vcpu },
        Err(e) => GuestExit::Crash { reason: format!("fault report with unreadable frame at {rsp:#x}: {e}") },
    }
}
