//! The environment record attached to every result.
//!
//! This module owns what is recorded about the machine a run happened on:
//! CPU model and counts, memory, kernel, whether this machine is itself a
//! virtual machine, and the KVM flavour (`/dev/kvm` and which of
//! `/sys/module/kvm_intel`, `kvm_amd`, `kvm_pvm` exist). The field
//! [`Environment::guest_ring0_emulated`] is left `None` here; the VMM side
//! fills it after timing a ring-0 loop against a ring-3 loop in the guest.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Which KVM modules and device this host has.
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

impl KvmInfo {
    /// Read the KVM facts under `sys_module` (normally `/sys/module`) and
    /// `dev_kvm` (normally `/dev/kvm`).
    pub fn collect_from(sys_module: &Path, dev_kvm: &Path) -> Self {
        let has = |m: &str| sys_module.join(m).exists();
        let (kvm_intel, kvm_amd, kvm_pvm) = (has("kvm_intel"), has("kvm_amd"), has("kvm_pvm"));
        let mut names = Vec::new();
        for (present, name) in [(kvm_intel, "kvm_intel"), (kvm_amd, "kvm_amd"), (kvm_pvm, "kvm_pvm")] {
            if present {
                names.push(name);
            }
        }
        let flavour = if names.is_empty() { "none".to_string() } else { names.join("+") };
        let nested = ["kvm_intel", "kvm_amd"].iter().find_map(|m| {
            std::fs::read_to_string(sys_module.join(m).join("parameters/nested")).ok().map(|s| s.trim().to_string())
        });
        let dev = dev_kvm.exists();
        let accessible = dev && std::fs::OpenOptions::new().read(true).write(true).open(dev_kvm).is_ok();
        KvmInfo {
            dev_kvm: dev,
            dev_kvm_accessible: accessible,
            kvm_module: has("kvm"),
            kvm_intel,
            kvm_amd,
            kvm_pvm,
            flavour,
            nested,
        }
    }
}

/// Where a run happened.
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
    /// Collect the record for this machine (never fails; unknowns are
    /// empty or `None`).
    pub fn collect() -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cpu_model =
            sys.cpus().first().map(|c| c.brand().trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_default();
        let logical_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0).max(sys.cpus().len());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
        let host_is_virtualized = cpuinfo.as_ref().map(|s| {
            s.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        });
        Environment {
            cpu_model,
            logical_cpus,
            physical_cores: System::physical_core_count(),
            usable_cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
            memory_bytes: sys.total_memory(),
            kernel_version: System::kernel_version().unwrap_or_default(),
            kernel_long_version: System::kernel_long_version(),
            os: System::long_os_version().unwrap_or_default(),
            arch: System::cpu_arch(),
            host_is_virtualized,
            kvm: KvmInfo::collect_from(Path::new("/sys/module"), Path::new("/dev/kvm")),
            guest_ring0_emulated: None,
            bench_suites_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_fills_basics_and_round_trips() {
        let e = Environment::collect();
        assert!(e.logical_cpus >= 1);
        assert!(e.memory_bytes > 0);
        assert!(!e.kvm.flavour.is_empty());
        assert_eq!(e.guest_ring0_emulated, None);
        let j = serde_json::to_string(&e).unwrap();
        let back: Environment = serde_json::from_str(&j).unwrap();
        assert_eq!(back, e);
        assert!(!e.summary_line().is_empty());
    }

    #[test]
    fn kvm_flavour_from_a_fake_sysfs() {
        let dir = std::env::temp_dir().join(format!("bench-suites-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        std::fs::create_dir_all(dir.join("kvm_intel/parameters")).unwrap();
        std::fs::write(dir.join("kvm_intel/parameters/nested"), "Y\n").unwrap();
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        let k = KvmInfo::collect_from(&dir, &dir.join("no-such-kvm"));
        assert!(k.kvm_module && k.kvm_intel && k.kvm_pvm && !k.kvm_amd);
        assert_eq!(k.flavour, "kvm_intel+kvm_pvm");
        assert_eq!(k.nested.as_deref(), Some("Y"));
        assert!(!k.dev_kvm && !k.dev_kvm_accessible);
        let none = KvmInfo::collect_from(&dir.join("nothing"), &dir.join("no-such-kvm"));
        assert_eq!(none.flavour, "none");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
