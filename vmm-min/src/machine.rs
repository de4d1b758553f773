//! The state every VMM thread shares: the VM and its memory, the vCPU set,
//! the MMIO bus with the devices, and how the guest ended.
//!
//! `Machine` is what a vCPU thread's [`VcpuHost`] and a device's
//! [`GuestLink`] are; neither the vCPU loop nor the devices import this
//! module. Outside the crate only [`Machine::vm`] (guest memory) and
//! [`Machine::net`] (the NIC) are visible, for tests that drive the device.

use crate::devices::bus::MmioBus;
use crate::devices::net::{GuestLink, NetDevice};
use crate::exit::GuestExit;
use crate::memory::GuestMem;
use crate::run_control::{Doorbell, Pausable};
use crate::sync::lock;
use crate::vstate::vcpu::{VcpuHost, VcpuSet};
use crate::vstate::vm::Vm;
use std::sync::{Arc, Mutex};

/// Everything the VMM's threads share.
pub struct Machine {
    /// The VM and its memory.
    pub vm: Vm,
    /// The virtio-net device (virtio-mmio slot 0), when the VM has a NIC.
    /// The bus holds it too, as an MMIO device.
    pub net: Option<Arc<NetDevice>>,
    pub(crate) vcpus: VcpuSet,
    pub(crate) bus: MmioBus,
    /// How the guest ended, once it has.
    pub(crate) exit: Mutex<Option<GuestExit>>,
    /// Result lines the guest sent.
    pub(crate) results: Mutex<Vec<String>>,
    /// Whether console output goes to stderr.
    pub(crate) console: bool,
}

impl Machine {
    /// Assembles a machine from its built parts; the NIC, if any, goes into
    /// the bus's first virtio-mmio slot.
    pub(crate) fn new(vm: Vm, vcpus: VcpuSet, mut bus: MmioBus, net: Option<Arc<NetDevice>>, console: bool) -> Self {
        if let Some(n) = &net {
            bus.add_virtio(n.clone());
        }
        Machine { vm, net, vcpus, bus, exit: Mutex::new(None), results: Mutex::new(Vec::new()), console }
    }

    /// Everything that pauses for a stop-and-copy, in pause order: the vCPUs
    /// first (so no guest code touches a device meanwhile), then the devices.
    pub(crate) fn pausables(&self) -> Vec<&dyn Pausable> {
        let mut v: Vec<&dyn Pausable> = vec![&self.vcpus];
        if let Some(n) = &self.net {
            v.push(&**n);
        }
        v
    }

    /// Asks the vCPUs and the device threads to stop.
    pub(crate) fn stop(&self) {
        self.vcpus.stop();
        if let Some(n) = &self.net {
            n.stop();
        }
    }
}

impl VcpuHost for Machine {
    fn vcpus(&self) -> &VcpuSet {
        &self.vcpus
    }

    fn bus(&self) -> &MmioBus {
        &self.bus
    }

    fn memory(&self) -> &GuestMem {
        &self.vm.mem
    }

    /// Records how the guest ended (the first report wins) and stops the vCPUs.
    fn finish(&self, exit: GuestExit) {
        let mut e = lock(&self.exit);
        if e.is_none() {
            *e = Some(exit);
        }
        drop(e);
        self.vcpus.stop();
    }

    fn guest_result(&self, line: String) {
        lock(&self.results).push(line);
    }
}

impl GuestLink for Machine {
    fn guest_memory(&self) -> &GuestMem {
        &self.vm.mem
    }

    fn guest_doorbell(&self) -> &Doorbell {
        self.vcpus.doorbell()
    }
}
