//! The environment record attached to every result: CPU model and counts,
//! memory, kernel, whether this machine is itself a virtual machine, and
//! the KVM flavour. `bench_suites::env::collect` fills it on a machine;
//! [`Environment::guest_ring0_emulated`] is filled by the VMM side after
//! timing a ring-0 loop against a ring-3 loop in the guest.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmInfo {
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// `/dev/kvm` can be opened read-write by this process.
    pub dev_kvm_accessible: bool,
    /// `/sys/module/kvm` exists.
    pub kvm_module: bool,
    /// `/sys/module/kvm_intel` exists (VMX).
    pub kvm_intel: bool,
    /// `/sys/module/kvm_amd` exists (SVM).
    pub kvm_amd: bool,
    /// `/sys/module/kvm_pvm` exists (PVM: KVM without hardware
    /// virtualization, guest ring 0 run in a lower privilege).
    pub kvm_pvm: bool,
    /// "kvm_intel", "kvm_amd", "kvm_pvm", several joined by "+", or "none".
    pub flavour: String,
    /// Contents of the vendor module's `parameters/nested`, if readable.
    #[serde(default)]
    pub nested: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model string (e.g. "Intel(R) Xeon(R) ...").
    pub cpu_model: String,
    /// Logical CPUs the OS reports.
    pub logical_cpus: usize,
    /// Physical cores, when known.
    #[serde(default)]
    pub physical_cores: Option<usize>,
    /// CPUs this process may run on (its affinity mask).
    #[serde(default)]
    pub usable_cpus: Option<usize>,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// Kernel version (e.g. "6.18.44").
    pub kernel_version: String,
    /// Long kernel string (`uname -srv`-like).
    #[serde(default)]
    pub kernel_long_version: String,
    /// OS name and version.
    #[serde(default)]
    pub os: String,
    /// CPU architecture.
    #[serde(default)]
    pub arch: String,
    /// The CPU flags include `hypervisor`: this host is itself a VM.
    #[serde(default)]
    pub host_is_virtualized: Option<bool>,
    /// KVM modules and device.
    pub kvm: KvmInfo,
    /// Whether the guest's ring 0 is emulated (measured by the VMM side: a
    /// ring-0 loop timed against a ring-3 loop); `None` until measured.
    #[serde(default)]
    pub guest_ring0_emulated: Option<bool>,
    /// Version of this crate.
    #[serde(default)]
    pub bench_suites_version: String,
}

impl Environment {
    /// One Markdown line summarising the record.
    pub fn summary_line(&self) -> String {
        let gib = self.memory_bytes as f64 / (1u64 << 30) as f64;
        format!(
            "{} ({} logical CPUs{}), {:.1} GiB RAM, kernel {}, KVM: {}{}{}, guest ring 0 emulated: {}",
            if self.cpu_model.is_empty() { "unknown CPU" } else { &self.cpu_model },
            self.logical_cpus,
            self.physical_cores.map(|c| format!(", {c} cores")).unwrap_or_default(),
            gib,
            if self.kernel_version.is_empty() { "unknown" } else { &self.kernel_version },
            self.kvm.flavour,
            if self.kvm.dev_kvm { ", /dev/kvm present" } else { ", no /dev/kvm" },
            match self.host_is_virtualized {
                Some(true) => ", host is itself a VM",
                _ => "",
            },
            match self.guest_ring0_emulated {
                Some(true) => "yes",
                Some(false) => "no",
                None => "not measured",
            }
        )
    }
}
