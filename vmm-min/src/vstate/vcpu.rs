//! A vCPU: its KVM handle, its thread's run loop, exit accounting, and the
//! kick that forces it out of `KVM_RUN` (immediate_exit plus a signal whose
//! handler does nothing else, installed without SA_RESTART).

use crate::devices::{self, control::ControlAction, MmioTarget};
use crate::error::{Error, Result};
use crate::machine::{lock, GuestExit, Machine};
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::Serialize;
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
    pub fd: Mutex<VcpuFd>,
    stats: ExitStats,
    thread: OnceLock<libc::pthread_t>,
}

impl Vcpu {
    /// Wraps a created, configured vCPU.
    pub fn new(index: usize, fd: VcpuFd) -> Result<Self> {
        install_kick_handler()?;
        Ok(Self { index, fd: Mutex::new(fd), stats: ExitStats::default(), thread: OnceLock::new() })
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

/// Longest single sleep a "wait for work" may ask for.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Longest result line the VMM accepts from the guest.
const MAX_LINE: usize = 4096;

/// The vCPU thread's body: runs the guest until the VM stops.
pub fn run_loop(vcpu: Arc<Vcpu>, m: Arc<Machine>) {
    {
        let mut fd = lock(&vcpu.fd);
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|r| r.set(run));
    }
    // SAFETY: pthread_self has no preconditions.
    let _ = vcpu.thread.set(unsafe { libc::pthread_self() });
    if m.run.stopping() {
        return;
    }
    let mut bell_seen = 0u64;
    let _ = m.first_run_ns.compare_exchange(0, results::clock::mono_ns(), Ordering::AcqRel, Ordering::Relaxed);
    loop {
        if m.run.needs_attention() && !m.run.park_if_requested() {
            break;
        }
        let mut fd = lock(&vcpu.fd);
        let action = match fd.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                vcpu.stats.mmio_read.fetch_add(1, Ordering::Relaxed);
                mmio_read(&m, addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                vcpu.stats.mmio_write.fetch_add(1, Ordering::Relaxed);
                mmio_write(&m, addr, data)
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
                m.finish(crash(&fd, "triple fault (KVM_EXIT_SHUTDOWN)"));
                break;
            }
            Ok(VcpuExit::InternalError) => {
                m.finish(crash(&fd, "KVM internal error (emulation failure)"));
                break;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                m.finish(GuestExit::Crash { reason: format!("VM entry failed: reason {reason:#x} on CPU {cpu}") });
                break;
            }
            Ok(other) => {
                vcpu.stats.other.fetch_add(1, Ordering::Relaxed);
                let reason = format!("unexpected exit {other:?}");
                m.finish(crash(&fd, &reason));
                break;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.stats.interrupted.fetch_add(1, Ordering::Relaxed);
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => {
                m.finish(GuestExit::Crash { reason: format!("KVM_RUN failed: {e}") });
                break;
            }
        };
        let Some(action) = action else { continue };
        match action {
            ControlAction::Wait(us) => {
                vcpu.stats.wait.fetch_add(1, Ordering::Relaxed);
                drop(fd);
                m.run.wait_bell(&mut bell_seen, Duration::from_micros(us).min(MAX_WAIT));
            }
            ControlAction::Exit(code) => {
                m.finish(GuestExit::PowerOff { code });
                break;
            }
            ControlAction::Fault(rsp) => {
                let exit = fault_report(&m, &fd, vcpu.index, rsp);
                m.finish(exit);
                break;
            }
            ControlAction::Result(addr, len) => {
                if let Some(line) = guest_line(&m, addr, len) {
                    tracing::debug!(vcpu = vcpu.index, %line, "guest result");
                    lock(&m.results).push(line);
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

fn mmio_read(m: &Machine, addr: u64, data: &mut [u8]) {
    match devices::route(addr) {
        MmioTarget::Uart(off) => data.fill(lock(&m.uart).read(off)),
        MmioTarget::Control(off) => {
            let v = devices::control::read(off).to_le_bytes();
            let n = data.len().min(8);
            data[..n].copy_from_slice(&v[..n]);
        }
        MmioTarget::Virtio(0, off) if m.net.is_some() => {
            if let Some(net) = &m.net {
                net.mmio_read(off, data);
            }
        }
        MmioTarget::Virtio(..) | MmioTarget::Unmapped => data.fill(0xff),
    }
}

fn mmio_write(m: &Machine, addr: u64, data: &[u8]) -> Option<ControlAction> {
    match devices::route(addr) {
        MmioTarget::Uart(off) => {
            lock(&m.uart).write(off, data.first().copied().unwrap_or(0));
            None
        }
        MmioTarget::Control(off) => {
            let mut v = [0u8; 8];
            let n = data.len().min(8);
            v[..n].copy_from_slice(&data[..n]);
            Some(devices::control::write(off, u64::from_le_bytes(v)))
        }
        MmioTarget::Virtio(0, off) if m.net.is_some() => {
            if let Some(net) = &m.net {
                net.mmio_write(off, data);
            }
            None
        }
        MmioTarget::Virtio(..) | MmioTarget::Unmapped => {
            tracing::debug!(addr = format_args!("{addr:#x}"), "write to unmapped MMIO ignored");
            None
        }
    }
}

/// Reads a guest-supplied line; a bad address or length is logged, not fatal.
fn guest_line(m: &Machine, addr: u64, len: usize) -> Option<String> {
    if len > MAX_LINE {
        tracing::warn!(len, "guest line too long; ignored");
        return None;
    }
    let mut buf = vec![0u8; len];
    match m.vm.mem.read_slice(&mut buf, GuestAddress(addr)) {
        Ok(()) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => {
            tracing::warn!("guest line at {addr:#x} unreadable: {e}");
            None
        }
    }
}

/// Builds the fault report from the stub's frame: vector, error code, RIP.
fn fault_report(m: &Machine, fd: &VcpuFd, vcpu: usize, rsp: u64) -> GuestExit {
    let frame: std::result::Result<[u64; 3], _> = m.vm.mem.read_obj(GuestAddress(rsp));
    let address = fd.get_sregs().map(|s| s.cr2).unwrap_or(0);
    match frame {
        Ok([vector, error_code, rip]) => GuestExit::Fault { vector, error_code, rip, address, vcpu },
        Err(e) => GuestExit::Crash { reason: format!("fault report with unreadable frame at {rsp:#x}: {e}") },
    }
}
