//! The KVM VM: one memory slot over guest RAM, dirty logging, and the
//! VM-wide state a migration carries ([`VmState`]).
//!
//! Dirty logging is on from the VM's creation: the slot is registered with
//! `KVM_MEM_LOG_DIRTY_PAGES` once and never re-registered. Turning it on
//! later means `KVM_SET_USER_MEMORY_REGION` on a running VM, which waits
//! for every vCPU thread to leave its KVM read-side section: 0.1–2 ms on an
//! idle host, 12 ms and more with busy vCPUs on a small one (measured at a
//! migration's setup). Until someone reads the log it costs nothing but one
//! write fault per page, once.

use crate::config::MemoryBackend;
use crate::error::{Error, Result, StateError};
use crate::memory::{self, GuestMem};
use kvm_bindings::{kvm_clock_data, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VmFd};
use serde::{Deserialize, Serialize};

/// The VM-wide state. The VMM creates no irqchip and no PIT (the guest polls
/// and takes no interrupts), so there is no PIC, IOAPIC or PIT state to carry:
/// the KVM clock is all of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(Default))]
pub struct VmState {
    clock: kvm_clock_data,
}

/// A KVM VM and its RAM.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    /// Guest RAM.
    pub mem: GuestMem,
    ram: u64,
    /// Held by whoever reads the dirty log (a migration, a dirty-rate
    /// measurement): reading clears it, so two readers would steal pages
    /// from each other.
    pub(crate) dirty_log_owner: std::sync::Mutex<()>,
    /// A migration waits for [`Vm::dirty_log_owner`]: a dirty-rate
    /// measurement holding it ends at once.
    pub(crate) dirty_log_wanted: std::sync::atomic::AtomicBool,
}

/// Opens `/dev/kvm` with an error that says what to do.
/// The device is `/dev/kvm`, or `$MIGBENCH_KVM_DEVICE` where that is set.
pub fn open_kvm() -> Result<Kvm> {
    use std::os::unix::ffi::OsStrExt;
    let Some(path) = std::env::var_os("MIGBENCH_KVM_DEVICE") else {
        return Kvm::new().map_err(Error::KvmUnavailable);
    };
    let path = std::ffi::CString::new(path.as_bytes())
        .map_err(|_| Error::Config("MIGBENCH_KVM_DEVICE contains a NUL byte".into()))?;
    Kvm::new_with_path(&path).map_err(Error::KvmUnavailable)
}

/// The most vCPUs KVM allows here.
pub fn max_vcpus(kvm: &Kvm) -> usize {
    kvm.get_max_vcpus()
}

impl Vm {
    /// Creates a VM with `ram` bytes of RAM at guest-physical 0.
    pub fn new(kvm: Kvm, ram: u64, backend: MemoryBackend) -> Result<Self> {
        Self::with_memory(kvm, memory::create(ram, backend)?, ram)
    }

    /// Creates a VM over RAM made beforehand (`ram` bytes of `mem`): a
    /// migration destination receives pages into `mem` while this runs.
    pub fn with_memory(kvm: Kvm, mem: GuestMem, ram: u64) -> Result<Self> {
        let t0 = results::clock::mono_ns();
        let fd = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
        let t1 = results::clock::mono_ns();
        let t2 = t1;
        let vm = Vm { kvm, fd, mem, ram, dirty_log_owner: Default::default(), dirty_log_wanted: Default::default() };
        vm.set_slot(KVM_MEM_LOG_DIRTY_PAGES)?;
        let ms = |a, b| results::clock::ms_between(a, b);
        tracing::debug!(create_vm_ms = ms(t0, t1), slot_ms = ms(t2, results::clock::mono_ns()), "VM created");
        Ok(vm)
    }

    fn set_slot(&self, flags: u32) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags,
            guest_phys_addr: 0,
            memory_size: self.ram,
            userspace_addr: memory::host_base(&self.mem)? as u64,
        };
        // SAFETY: the region is a live mapping of exactly `ram` bytes owned
        // by `self.mem`, which outlives the VM fd (both are fields of `self`,
        // and the slot is never pointed elsewhere).
        unsafe { self.fd.set_user_memory_region(region) }.map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))
    }

    /// The VM handle (vCPU creation, ioeventfds).
    pub(crate) fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The MSRs this host's KVM can save and restore.
    pub fn msr_index_list(&self) -> std::result::Result<Vec<u32>, StateError> {
        Ok(self.kvm.get_msr_index_list().map_err(StateError::MsrIndexList)?.as_slice().to_vec())
    }

    /// Saves the VM-wide state. Call with every vCPU paused.
    pub fn save_state(&self) -> std::result::Result<VmState, StateError> {
        Ok(VmState { clock: self.fd.get_clock().map_err(StateError::VmGetClock)? })
    }

    /// Restores the VM-wide state, before any vCPU runs. Only the clock value
    /// is set: the flags the source's KVM reported (e.g. TSC-stable) are its
    /// own and KVM_SET_CLOCK rejects most of them.
    pub fn restore_state(&self, s: &VmState) -> std::result::Result<(), StateError> {
        let clock = kvm_clock_data { clock: s.clock.clock, ..Default::default() };
        self.fd.set_clock(&clock).map_err(StateError::VmSetClock)
    }

    /// Fetches and clears KVM's dirty bitmap (one bit per 4 KiB page). KVM
    /// write-protects the reported pages again before returning, so a write
    /// after this call is reported by the next one.
    pub fn take_dirty_log(&self) -> Result<Vec<u64>> {
        self.fd.get_dirty_log(0, self.ram as usize).map_err(Error::kvm("KVM_GET_DIRTY_LOG"))
    }
}
