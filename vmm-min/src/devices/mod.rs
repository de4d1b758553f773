//! Emulated devices and the MMIO bus that routes vCPU exits to them.

pub mod bus;
pub mod control;
pub mod net;
pub mod tap;
pub mod uart;
pub mod virtio_mmio;
