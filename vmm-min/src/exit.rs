//! How a guest ended: powered off, faulted, or crashed in a way KVM reported.

use serde::Serialize;

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
