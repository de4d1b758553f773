//! KVM state: the VM (memory slot, dirty logging) and the vCPUs (threads,
//! run loop, kicking, pausing).

pub mod vcpu;
pub mod vm;
