//! The VMM's error types: every failure names what was being done.
//!
//! - [`Error`]: building, running, pausing or migrating a VM;
//! - [`StateError`] and [`VcpuStateError`]: saving or restoring vCPU, VM and
//!   device state, one variant per ioctl (as Firecracker's `VcpuGetRegs`…);
//! - [`Incompatible`]: why a destination refuses an incoming state.
//!
//! They live in this leaf module, which imports nothing of the crate, so that
//! every module can return them without an import cycle.

use std::io;
use std::time::Duration;

/// Errors from building, running, pausing or migrating a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}; KVM must be available and you need read/write access to /dev/kvm (run as root or join the kvm group)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// Guest memory could not be set up or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest image could not be loaded.
    #[error("loading the guest image: {0}")]
    Load(String),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A vCPU thread failed.
    #[error("vCPU {vcpu}: {msg}")]
    Vcpu {
        /// The vCPU index.
        vcpu: usize,
        /// What went wrong.
        msg: String,
    },
    /// The VM is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// A component did not pause in time (nothing stays paused).
    #[error("{what} did not pause within {} s", timeout.as_secs_f64())]
    PauseTimeout {
        /// What did not pause.
        what: &'static str,
        /// How long the VMM waited.
        timeout: Duration,
    },
    /// Saving, checking or restoring vCPU, VM or device state failed.
    #[error("{0}")]
    SavedState(#[from] StateError),
}

/// A failed save or restore of one vCPU's state: the variant names the ioctl.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // Each variant is the ioctl its message names.
pub enum VcpuStateError {
    #[error("KVM_GET_CPUID2 failed: {0}")]
    VcpuGetCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_CPUID2 failed: {0}")]
    VcpuSetCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MP_STATE failed: {0}")]
    VcpuGetMpState(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MP_STATE failed: {0}")]
    VcpuSetMpState(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_REGS failed: {0}")]
    VcpuGetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS failed: {0}")]
    VcpuSetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SREGS failed: {0}")]
    VcpuGetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS failed: {0}")]
    VcpuSetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_XSAVE failed: {0}")]
    VcpuGetXsave(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_XSAVE failed: {0}")]
    VcpuSetXsave(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_XCRS failed: {0}")]
    VcpuGetXcrs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_XCRS failed: {0}")]
    VcpuSetXcrs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_DEBUGREGS failed: {0}")]
    VcpuGetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_DEBUGREGS failed: {0}")]
    VcpuSetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MSRS failed: {0}")]
    VcpuGetMsrs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS failed: {0}")]
    VcpuSetMsrs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")]
    VcpuMsrRefused { index: u32, value: u64 },
    #[error("KVM_GET_VCPU_EVENTS failed: {0}")]
    VcpuGetVcpuEvents(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_VCPU_EVENTS failed: {0}")]
    VcpuSetVcpuEvents(#[source] kvm_ioctls::Error),
    /// A CPUID or MSR list too long for KVM's array types.
    #[error("building a list of {entries} {what} entries: {source}")]
    TooManyEntries {
        what: &'static str,
        entries: usize,
        #[source]
        source: vmm_sys_util::fam::Error,
    },
}

/// A failed save, check or restore of the whole state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// One vCPU's state.
    #[error("vCPU {index}: {source}")]
    Vcpu {
        /// The vCPU.
        index: usize,
        /// The ioctl that failed.
        #[source]
        source: VcpuStateError,
    },
    /// KVM_GET_MSR_INDEX_LIST failed.
    #[error("KVM_GET_MSR_INDEX_LIST failed: {0}")]
    MsrIndexList(#[source] kvm_ioctls::Error),
    /// KVM_GET_CLOCK failed.
    #[error("KVM_GET_CLOCK failed: {0}")]
    VmGetClock(#[source] kvm_ioctls::Error),
    /// KVM_SET_CLOCK failed.
    #[error("KVM_SET_CLOCK failed: {0}")]
    VmSetClock(#[source] kvm_ioctls::Error),
    /// The UART refused its registers.
    #[error("{0}")]
    Uart(String),
    /// The virtio-net device refused its state.
    #[error("virtio-net: {0}")]
    Net(#[source] Box<Error>),
    /// The incoming state does not fit the VM built here.
    #[error("the incoming VM does not fit this host: {0}")]
    Incompatible(#[from] Incompatible),
}

/// Why a destination refuses an incoming state, field by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    /// The state's layout version is not the one this VMM reads.
    #[error("the state has version {theirs}, this VMM reads version {ours}; run the same migbench on both sides")]
    Version {
        /// The incoming state's version.
        theirs: u32,
        /// This VMM's.
        ours: u32,
    },
    /// Different vCPU counts.
    #[error("the state has {theirs} vCPUs, the VM here {ours}; start the destination with the source's --vcpus")]
    VcpuCount {
        /// vCPUs in the incoming state.
        theirs: usize,
        /// vCPUs of the VM here.
        ours: usize,
    },
    /// A CPUID register differs from what this host gives the vCPU.
    #[error("vCPU {vcpu}: CPUID leaf {leaf:#x} subleaf {subleaf:#x} {register} is {theirs:#010x} on the source, {ours:#010x} here; the hosts' CPUs or KVMs differ")]
    CpuidRegister {
        /// The vCPU.
        vcpu: usize,
        /// CPUID function.
        leaf: u32,
        /// CPUID index.
        subleaf: u32,
        /// `eax`, `ebx`, `ecx` or `edx`.
        register: &'static str,
        /// The source's value.
        theirs: u32,
        /// This host's value.
        ours: u32,
    },
    /// A CPUID leaf exists on one side only.
    #[error("vCPU {vcpu}: CPUID leaf {leaf:#x} subleaf {subleaf:#x} exists {}; the hosts' CPUs or KVMs differ", if *on_source { "on the source, not here" } else { "here, not on the source" })]
    CpuidLeaf {
        /// The vCPU.
        vcpu: usize,
        /// CPUID function.
        leaf: u32,
        /// CPUID index.
        subleaf: u32,
        /// The leaf is the source's (else this host's).
        on_source: bool,
    },
    /// The VM here has a NIC and the state has none, or the reverse.
    #[error("{}", if *here { "the VM here has a NIC, the incoming state none" } else { "the incoming state has a NIC, the VM here none" })]
    Nic {
        /// The NIC is here (else in the state).
        here: bool,
    },
}

impl Error {
    /// Wraps a KVM ioctl error with the operation's name.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }
    /// Wraps an I/O error with a description of the operation.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The VMM's result type.
pub type Result<T> = std::result::Result<T, Error>;
