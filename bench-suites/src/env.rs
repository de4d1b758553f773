//! Collecting the environment record ([`results::environment`]) on this
//! machine: CPU (sysinfo), memory, kernel, whether the host is itself a VM,
//! and the KVM flavour from `/sys/module` and `/dev/kvm`.

use std::path::Path;

pub use results::environment::{Environment, KvmInfo};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Read the KVM facts under `sys_module` (normally `/sys/module`) and
/// `dev_kvm` (normally `/dev/kvm`).
pub fn kvm_info(sys_module: &Path, dev_kvm: &Path) -> KvmInfo {
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

/// Collect the record for this machine (never fails; unknowns are
/// empty or `None`).
pub fn collect() -> Environment {
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpu_model =
        sys.cpus().first().map(|c| c.brand().trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_default();
    let logical_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0).max(sys.cpus().len());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
    let host_is_virtualized = cpuinfo
        .as_ref()
        .map(|s| s.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "hypervisor")));
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
        kvm: kvm_info(Path::new("/sys/module"), Path::new("/dev/kvm")),
        guest_ring0_emulated: None,
        bench_suites_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_fills_basics_and_round_trips() {
        let e = collect();
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
        let k = kvm_info(&dir, &dir.join("no-such-kvm"));
        assert!(k.kvm_module && k.kvm_intel && k.kvm_pvm && !k.kvm_amd);
        assert_eq!(k.flavour, "kvm_intel+kvm_pvm");
        assert_eq!(k.nested.as_deref(), Some("Y"));
        assert!(!k.dev_kvm && !k.dev_kvm_accessible);
        let none = kvm_info(&dir.join("nothing"), &dir.join("no-such-kvm"));
        assert_eq!(none.flavour, "none");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
