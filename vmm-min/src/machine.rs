//! The state every VMM thread shares: the VM, the devices, the run control
//! (stop, pause, the doorbell a waiting vCPU sleeps on) and how the guest
//! ended.

use crate::devices::net::NetDevice;
use crate::devices::uart::Uart;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks a mutex, ignoring poisoning: a panicked thread's data is still the
/// best we have, and the VM must keep running.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestExit {
    /// The guest powered off with this code.
    PowerOff {
        /// The guest's exit code.
        code: u64,
    },
    /// The guest took an exception it could not handle.
    Fault {
        /// Exception vector.
        vector: u64,
        /// Error code pushed by the CPU (0 if none).
        error_code: u64,
        /// Faulting instruction.
        rip: u64,
        /// CR2: the faulting address, for a page fault.
        address: u64,
        /// vCPU that faulted.
        vcpu: usize,
    },
    /// KVM reported something the VMM cannot continue from.
    Crash {
        /// What happened.
        reason: String,
    },
}

impl GuestExit {
    /// The VMM process's exit code for this ending.
    pub fn process_code(&self) -> i32 {
        match self {
            GuestExit::PowerOff { code } => (*code).min(255) as i32,
            GuestExit::Fault { .. } => 125,
            GuestExit::Crash { .. } => 126,
        }
    }
}

impl std::fmt::Display for GuestExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestExit::PowerOff { code } => write!(f, "guest powered off with exit code {code}"),
            GuestExit::Fault { vector, error_code, rip, address, vcpu } => write!(
                f,
                "guest exception on vCPU {vcpu}: vector {vector} ({}), error code {error_code:#x}, RIP {rip:#x}, address {address:#x}",
                vector_name(*vector)
            ),
            GuestExit::Crash { reason } => write!(f, "guest crashed: {reason}"),
        }
    }
}

fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "#DE divide error",
        3 => "#BP breakpoint",
        6 => "#UD invalid opcode",
        8 => "#DF double fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        17 => "#AC alignment check",
        _ => "exception",
    }
}

#[derive(Default)]
struct Flags {
    stop: bool,
    pause: bool,
    parked: usize,
}

/// Stop, pause and wake-up coordination between the VMM and its vCPUs.
#[derive(Default)]
pub struct RunControl {
    attention: AtomicBool,
    flags: Mutex<Flags>,
    flags_cv: Condvar,
    bell: Mutex<u64>,
    bell_cv: Condvar,
}

impl RunControl {
    /// Whether a vCPU must look at the flags before entering the guest.
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::Acquire)
    }

    /// Called by a vCPU that saw `needs_attention`: parks while a pause is
    /// requested. Returns false when the vCPU must stop.
    pub fn park_if_requested(&self) -> bool {
        let mut f = lock(&self.flags);
        if f.pause && !f.stop {
            f.parked += 1;
            self.flags_cv.notify_all();
            while f.pause && !f.stop {
                f = self.flags_cv.wait(f).unwrap_or_else(|e| e.into_inner());
            }
            f.parked -= 1;
        }
        !f.stop
    }

    /// Requests a pause; returns once `n` vCPUs are parked or `timeout` passes.
    pub fn request_pause(&self) {
        lock(&self.flags).pause = true;
        self.attention.store(true, Ordering::Release);
        self.ring();
    }

    /// Waits until `n` vCPUs are parked (or stopped). Returns false on timeout.
    pub fn wait_parked(&self, n: usize, timeout: Duration) -> bool {
        let f = lock(&self.flags);
        let (f, res) = self
            .flags_cv
            .wait_timeout_while(f, timeout, |f| f.parked < n && !f.stop)
            .unwrap_or_else(|e| e.into_inner());
        drop(f);
        !res.timed_out()
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let mut f = lock(&self.flags);
        f.pause = false;
        self.attention.store(f.stop, Ordering::Release);
        self.flags_cv.notify_all();
    }

    /// Asks every vCPU to stop.
    pub fn request_stop(&self) {
        lock(&self.flags).stop = true;
        self.attention.store(true, Ordering::Release);
        self.flags_cv.notify_all();
        self.ring();
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        lock(&self.flags).stop
    }

    /// Rings the doorbell: device work arrived, or the flags changed.
    pub fn ring(&self) {
        *lock(&self.bell) += 1;
        self.bell_cv.notify_all();
    }

    /// A vCPU's "wait for work": returns at once if the bell rang since
    /// `seen`, else sleeps until it rings or `timeout` passes.
    pub fn wait_bell(&self, seen: &mut u64, timeout: Duration) {
        let bell = lock(&self.bell);
        let (bell, _) = self
            .bell_cv
            .wait_timeout_while(bell, timeout, |b| *b == *seen && !self.needs_attention())
            .unwrap_or_else(|e| e.into_inner());
        *seen = *bell;
    }
}

/// Everything the VMM's threads share.
pub struct Machine {
    /// The VM and its memory.
    pub vm: Vm,
    /// The vCPUs.
    pub vcpus: Vec<Arc<Vcpu>>,
    /// The console UART.
    pub uart: Mutex<Uart>,
    /// The virtio-net device (virtio-mmio slot 0), when the VM has a NIC.
    pub net: Option<Arc<NetDevice>>,
    /// Run coordination.
    pub run: RunControl,
    /// How the guest ended, once it has.
    pub exit: Mutex<Option<GuestExit>>,
    /// Result lines the guest sent.
    pub results: Mutex<Vec<String>>,
    /// Whether console output goes to stderr.
    pub console: bool,
    /// CLOCK_MONOTONIC when a vCPU first entered `KVM_RUN` (0: not yet).
    pub first_run_ns: std::sync::atomic::AtomicU64,
}

impl Machine {
    /// Records how the guest ended (the first report wins) and stops the VM.
    pub fn finish(&self, exit: GuestExit) {
        let mut e = lock(&self.exit);
        if e.is_none() {
            *e = Some(exit);
        }
        drop(e);
        self.run.request_stop();
        self.kick_all();
    }

    /// Forces every vCPU out of `KVM_RUN`.
    pub fn kick_all(&self) {
        for v in &self.vcpus {
            v.kick();
        }
    }
}
