//! The migration state: everything but RAM, as one versioned structure.
//!
//! Each owner saves and restores its own part, as in Firecracker:
//! [`Vcpu::save_state`](crate::vstate::vcpu::Vcpu::save_state) (registers,
//! MSRs, CPUID; the ordering rules are at the top of that function),
//! [`Vm::save_state`](crate::vstate::vm::Vm::save_state) (the KVM clock; the
//! VMM creates no irqchip or PIT), the UART's registers and the virtio-net
//! transport. This module only composes them into [`MigrationState`], and on
//! the destination checks the incoming state field by field against the VM
//! built there ([`check`]) before anything is restored.

use crate::devices::net::NetState;
use crate::devices::uart::UartState;
use crate::error::{Incompatible, StateError};
use crate::machine::Machine;
use crate::sync::lock;
use crate::vstate::vcpu::VcpuState;
use crate::vstate::vm::VmState;
use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The layout version of [`MigrationState`]. Bump it whenever you change
/// `MigrationState` or anything it contains (`VcpuState`, `VmState`,
/// `UartState`, `NetState`, `TransportState`, `QueueSnapshot`): a
/// destination refuses a state whose version is not its own.
/// Version 2: `NetState::rx_queued`, the frames for the guest that the
/// source held at the pause.
pub const VERSION: u32 = 2;

/// Everything of a paused VM but its RAM. Bump [`VERSION`] when you change
/// this struct or any struct in it.
#[derive(Serialize, Deserialize)]
pub struct MigrationState {
    /// [`VERSION`] of the VMM that saved it.
    pub version: u32,
    /// Each vCPU's state, by index.
    pub vcpus: Vec<VcpuState>,
    /// The VM-wide state.
    pub vm: VmState,
    /// The console UART's registers.
    pub uart: UartState,
    /// The virtio-net device's state, when the VM has a NIC.
    pub net: Option<NetState>,
}

/// What the VM built on the destination offers, for
/// [`MigrationState::check_compatible`].
#[derive(Debug, Clone)]
pub struct Here {
    /// The CPUID each vCPU got from this host's KVM (by vCPU index).
    pub cpuids: Vec<Vec<kvm_cpuid_entry2>>,
    /// Whether the VM has a NIC.
    pub nic: bool,
}

/// CPUID bits that KVM rewrites while the guest runs, from the guest's own
/// state (CR4, XCR0, the APIC base and MISC_ENABLE MSRs): they differ
/// between a vCPU that ran and a fresh one without the CPUs differing, and
/// are recomputed when that state is restored. `(leaf, subleaf, register,
/// mask)`.
const RUNTIME_BITS: [(u32, u32, usize, u32); 5] = [
    (1, 0, ECX, (1 << 27) | (1 << 3)), // OSXSAVE, MONITOR
    (1, 0, EDX, 1 << 9),               // APIC
    (7, 0, ECX, 1 << 4),               // OSPKE
    (0xd, 0, EBX, !0),                 // XSAVE area size for XCR0
    (0xd, 1, EBX, !0),                 // XSAVE area size for XCR0 | XSS
];
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;
const REGISTERS: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

/// CPUID entries by `(leaf, subleaf)`, the subleaf 0 where it is not
/// significant.
fn by_leaf(entries: &[kvm_cpuid_entry2]) -> BTreeMap<(u32, u32), [u32; 4]> {
    entries
        .iter()
        .map(|e| {
            let sub = if e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 { e.index } else { 0 };
            ((e.function, sub), [e.eax, e.ebx, e.ecx, e.edx])
        })
        .collect()
}

fn check_cpuid(vcpu: usize, theirs: &[kvm_cpuid_entry2], ours: &[kvm_cpuid_entry2]) -> Result<(), Incompatible> {
    let (theirs, ours) = (by_leaf(theirs), by_leaf(ours));
    for (&(leaf, subleaf), t) in &theirs {
        let Some(o) = ours.get(&(leaf, subleaf)) else {
            return Err(Incompatible::CpuidLeaf { vcpu, leaf, subleaf, on_source: true });
        };
        for r in 0..4 {
            let ignored = RUNTIME_BITS
                .iter()
                .filter(|&&(l, s, reg, _)| (l, s, reg) == (leaf, subleaf, r))
                .fold(0, |m, &(.., mask)| m | mask);
            if t[r] & !ignored != o[r] & !ignored {
                return Err(Incompatible::CpuidRegister {
                    vcpu,
                    leaf,
                    subleaf,
                    register: REGISTERS[r],
                    theirs: t[r],
                    ours: o[r],
                });
            }
        }
    }
    if let Some(&(leaf, subleaf)) = ours.keys().find(|k| !theirs.contains_key(k)) {
        return Err(Incompatible::CpuidLeaf { vcpu, leaf, subleaf, on_source: false });
    }
    Ok(())
}

impl MigrationState {
    /// Checks the state against the VM built here, field by field: the
    /// version, the vCPU count, each vCPU's CPUID against the one this
    /// host's KVM gave the vCPU here (bits KVM rewrites at run time aside),
    /// and whether both have a NIC. The first difference is the refusal.
    pub fn check_compatible(&self, here: &Here) -> Result<(), Incompatible> {
        if self.version != VERSION {
            return Err(Incompatible::Version { theirs: self.version, ours: VERSION });
        }
        if self.vcpus.len() != here.cpuids.len() {
            return Err(Incompatible::VcpuCount { theirs: self.vcpus.len(), ours: here.cpuids.len() });
        }
        for (i, (v, ours)) in self.vcpus.iter().zip(&here.cpuids).enumerate() {
            check_cpuid(i, &v.cpuid, ours)?;
        }
        match (self.net.is_some(), here.nic) {
            (theirs, ours) if theirs == ours => Ok(()),
            (_, here) => Err(Incompatible::Nic { here }),
        }
    }
}

/// Saves the state of a paused machine.
pub fn save(m: &Machine) -> Result<MigrationState, StateError> {
    let msrs = m.vm.msr_index_list()?;
    let vcpus = m
        .vcpus
        .iter()
        .map(|v| v.save_state(&msrs).map_err(|source| StateError::Vcpu { index: v.index, source }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MigrationState {
        version: VERSION,
        vcpus,
        vm: m.vm.save_state()?,
        uart: lock(m.bus.uart()).state(),
        net: m.net.as_ref().map(|n| n.state()),
    })
}

/// Checks an incoming state against the machine built here (see
/// [`MigrationState::check_compatible`]).
pub fn check(m: &Machine, s: &MigrationState) -> Result<(), StateError> {
    let cpuids = m
        .vcpus
        .iter()
        .map(|v| v.cpuid().map_err(|source| StateError::Vcpu { index: v.index, source }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(s.check_compatible(&Here { cpuids, nic: m.net.is_some() })?)
}

/// Restores a saved state into a machine that has not run yet, after
/// [`check`]ing it. Order: the VM clock, then each vCPU (its own order is
/// in `Vcpu::restore_state`), then the devices.
pub fn restore(m: &Machine, s: &MigrationState) -> Result<(), StateError> {
    check(m, s)?;
    m.vm.restore_state(&s.vm)?;
    for (v, st) in m.vcpus.iter().zip(&s.vcpus) {
        v.restore_state(st).map_err(|source| StateError::Vcpu { index: v.index, source })?;
    }
    lock(m.bus.uart()).restore(&s.uart, m.console).map_err(StateError::Uart)?;
    if let (Some(dev), Some(st)) = (&m.net, &s.net) {
        dev.restore(st).map_err(|e| StateError::Net(Box::new(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        let [eax, ebx, ecx, edx] = regs;
        let flags = if function == 0xd { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
        kvm_cpuid_entry2 { function, index, flags, eax, ebx, ecx, edx, ..Default::default() }
    }

    fn cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(1, 0, [0x00a0_0f11, 0x0000_0800, 0xf6f8_3203, 0x178b_fbff]),
            entry(0xd, 0, [0x7, 0x240, 0x340, 0]),
            entry(0xd, 1, [0x1, 0, 0, 0]),
        ]
    }

    fn state(vcpus: usize, nic: bool) -> MigrationState {
        MigrationState {
            version: VERSION,
            vcpus: (0..vcpus).map(|_| VcpuState::with_cpuid(cpuid())).collect(),
            vm: VmState::default(),
            uart: UartState::default(),
            net: nic.then(|| NetState {
                mac: [2, 0, 0, 0, 0, 1],
                transport: crate::devices::virtio_mmio::Transport::new(1, 0, vec![], 2, 256).state(),
                rx_queued: vec![],
            }),
        }
    }

    fn here(vcpus: usize, nic: bool) -> Here {
        Here { cpuids: vec![cpuid(); vcpus], nic }
    }

    #[test]
    fn the_same_vm_is_accepted() {
        assert_eq!(state(2, true).check_compatible(&here(2, true)), Ok(()));
        assert_eq!(state(1, false).check_compatible(&here(1, false)), Ok(()));
    }

    #[test]
    fn a_different_vcpu_count_is_refused() {
        let err = state(2, false).check_compatible(&here(3, false)).unwrap_err();
        assert_eq!(err, Incompatible::VcpuCount { theirs: 2, ours: 3 });
        assert!(err.to_string().contains("2 vCPUs, the VM here 3"), "{err}");
    }

    #[test]
    fn a_cpuid_difference_names_the_leaf_and_register() {
        let mut h = here(2, false);
        h.cpuids[1][1].ecx &= !(1 << 20); // SSE4.2 missing here
        let err = state(2, false).check_compatible(&h).unwrap_err();
        assert_eq!(
            err,
            Incompatible::CpuidRegister {
                vcpu: 1,
                leaf: 1,
                subleaf: 0,
                register: "ecx",
                theirs: 0xf6f8_3203,
                ours: 0xf6e8_3203
            }
        );
        assert!(err.to_string().contains("CPUID leaf 0x1 subleaf 0x0 ecx"), "{err}");

        let mut h = here(1, false);
        h.cpuids[0].retain(|e| !(e.function == 0xd && e.index == 1));
        let err = state(1, false).check_compatible(&h).unwrap_err();
        assert_eq!(err, Incompatible::CpuidLeaf { vcpu: 0, leaf: 0xd, subleaf: 1, on_source: true });

        let mut h = here(1, false);
        h.cpuids[0].push(entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]));
        let err = state(1, false).check_compatible(&h).unwrap_err();
        assert_eq!(err, Incompatible::CpuidLeaf { vcpu: 0, leaf: 0x8000_0000, subleaf: 0, on_source: false });
    }

    #[test]
    fn bits_kvm_rewrites_at_run_time_do_not_count() {
        let mut s = state(1, false);
        s.vcpus[0].cpuid[1].edx &= !(1 << 9); // the guest disabled its APIC
        s.vcpus[0].cpuid[2].ebx = 0x340; // XCR0 changed the XSAVE size
        assert_eq!(s.check_compatible(&here(1, false)), Ok(()));
    }

    #[test]
    fn nic_presence_and_version_must_match() {
        assert_eq!(state(1, true).check_compatible(&here(1, false)), Err(Incompatible::Nic { here: false }));
        assert_eq!(state(1, false).check_compatible(&here(1, true)), Err(Incompatible::Nic { here: true }));
        let mut s = state(1, false);
        s.version = VERSION + 1;
        assert_eq!(
            s.check_compatible(&here(1, false)),
            Err(Incompatible::Version { theirs: VERSION + 1, ours: VERSION })
        );
    }

    /// Real KVM: a state saved from a running guest passes the check on a
    /// fresh VM of the same shape on this host (so the run-time CPUID bits
    /// are masked right), and is refused by one with another vCPU count or
    /// once a CPUID bit differs.
    #[test]
    fn a_real_state_fits_its_own_shape_and_no_other() {
        use crate::config::{MemoryBackend, VmConfig, Workload};
        use crate::vmm::{new_machine, Vmm};
        use std::time::Duration;
        let cfg =
            VmConfig { memory: 64 << 20, vcpus: 1, workload: Workload::Idle, backend: MemoryBackend::Anon, net: None };
        let vmm = Vmm::boot(&cfg, false).expect("booting a guest");
        vmm.wait_first_heartbeat(Duration::from_secs(20)).expect("the guest runs");
        vmm.pause().expect("pausing");
        let saved = save(vmm.machine()).expect("saving the state");
        vmm.resume();
        assert_eq!(saved.version, VERSION);
        assert!(!saved.vcpus[0].cpuid.is_empty());
        let json = serde_json::to_vec(&saved).unwrap();

        let fresh = new_machine(&cfg, false).expect("building a VM");
        check(&fresh, &saved).expect("the same shape on the same host fits");

        let two = new_machine(&VmConfig { vcpus: 2, ..cfg.clone() }, false).expect("building a VM");
        match restore(&two, &saved) {
            Err(StateError::Incompatible(Incompatible::VcpuCount { theirs: 1, ours: 2 })) => {}
            other => panic!("expected a vCPU-count refusal, got {other:?}"),
        }

        let mut tampered: MigrationState = serde_json::from_slice(&json).unwrap();
        let leaf1 = tampered.vcpus[0].cpuid.iter_mut().find(|e| e.function == 1).expect("CPUID leaf 1");
        leaf1.ecx ^= 1 << 20;
        match check(&fresh, &tampered) {
            Err(StateError::Incompatible(Incompatible::CpuidRegister {
                vcpu: 0, leaf: 1, register: "ecx", ..
            })) => {}
            other => panic!("expected a CPUID refusal, got {other:?}"),
        }
        assert!(vmm.exited().is_none(), "the guest still runs");
        vmm.join();
    }
}
