//! vCPU, VM and device state for the stop-and-copy phase, in the order that
//! works on these hosts (see HOST-KVM.md): read mp_state first; read MSRs in
//! batches because KVM_GET_MSRS stops at the first failing one; restore CPUID
//! (done at vCPU creation), mp_state, regs, sregs, xsave, xcrs, debugregs,
//! MSRs, vcpu_events. The VMM creates no irqchip or PIT (the guest polls), so
//! the VM-wide state is the KVM clock. Device state: the UART's registers and
//! the virtio-net transport (features, queues, indices).

use crate::devices::net::NetState;
use crate::devices::uart::UartState;
use crate::error::{Error, Result};
use crate::machine::{lock, Machine};
use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    kvm_xsave, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

/// One vCPU's architectural state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
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

/// Everything but RAM.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    clock: kvm_clock_data,
    vcpus: Vec<VcpuState>,
    uart: UartState,
    net: Option<NetState>,
}

fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| Error::State(format!("MSR list: {e:?}")))?;
        let n = fd.get_msrs(&mut msrs).map_err(Error::kvm("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // Entry `n` failed to read: skip it and go on after it.
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(out)
}

fn save_vcpu(fd: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState> {
    Ok(VcpuState {
        mp_state: fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?,
        regs: fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?,
        debugregs: fd.get_debug_regs().map_err(Error::kvm("KVM_GET_DEBUGREGS"))?,
        msrs: read_msrs(fd, msr_indices)?,
        events: fd.get_vcpu_events().map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?,
    })
}

/// Writes MSRs in batches. KVM_SET_MSRS stops at the first MSR it refuses;
/// one still holding its reset value (0) is skipped, as a fresh vCPU already
/// has it (KVM's paravirtual MSRs refuse writes in a VM without an irqchip),
/// while refusing any other value is an error.
fn write_msrs(fd: &VcpuFd, msrs: &[(u32, u64)]) -> Result<()> {
    let mut rest = msrs;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let batch = Msrs::from_entries(&entries).map_err(|e| Error::State(format!("MSR list: {e:?}")))?;
        let n = fd.set_msrs(&batch).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if let Some(&(index, value)) = rest.get(n) {
            if value != 0 {
                return Err(Error::State(format!("KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")));
            }
            tracing::debug!("MSR {index:#x} refused with its reset value; skipped");
        }
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(())
}

fn restore_vcpu(fd: &VcpuFd, s: &VcpuState) -> Result<()> {
    fd.set_mp_state(s.mp_state).map_err(Error::kvm("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    // SAFETY: `s.xsave` is a complete kvm_xsave read from a vCPU of the same
    // CPUID on this host; KVM validates its content.
    unsafe { fd.set_xsave(&s.xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&s.xcrs).map_err(Error::kvm("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&s.debugregs).map_err(Error::kvm("KVM_SET_DEBUGREGS"))?;
    write_msrs(fd, &s.msrs)?;
    fd.set_vcpu_events(&s.events).map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))
}

/// Saves the state of a paused machine.
pub fn save(m: &Machine) -> Result<MachineState> {
    let msr_list = m.vm.kvm.get_msr_index_list().map_err(Error::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let indices = msr_list.as_slice().to_vec();
    let vcpus = m.vcpus.iter().map(|v| save_vcpu(&lock(&v.fd), &indices)).collect::<Result<Vec<_>>>()?;
    Ok(MachineState {
        clock: m.vm.fd.get_clock().map_err(Error::kvm("KVM_GET_CLOCK"))?,
        vcpus,
        uart: lock(&m.uart).state(),
        net: m.net.as_ref().map(|n| n.state()),
    })
}

/// Restores a saved state into a machine that has not run yet.
pub fn restore(m: &Machine, s: &MachineState) -> Result<()> {
    if s.vcpus.len() != m.vcpus.len() {
        return Err(Error::State(format!("state has {} vCPUs, the VM {}", s.vcpus.len(), m.vcpus.len())));
    }
    let clock = kvm_clock_data { clock: s.clock.clock, ..Default::default() };
    m.vm.fd.set_clock(&clock).map_err(Error::kvm("KVM_SET_CLOCK"))?;
    for (v, st) in m.vcpus.iter().zip(&s.vcpus) {
        restore_vcpu(&lock(&v.fd), st).map_err(|e| Error::Vcpu { vcpu: v.index, msg: format!("restore: {e}") })?;
    }
    lock(&m.uart).restore(&s.uart, m.console).map_err(Error::State)?;
    match (&m.net, &s.net) {
        (Some(dev), Some(st)) => dev.restore(st),
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::State("the VM here has a NIC, the incoming state none".into())),
        (None, Some(_)) => Err(Error::State("the incoming state has a NIC, the VM here none".into())),
    }
}
