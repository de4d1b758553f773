//! Emulated devices and the MMIO bus that routes vCPU exits to them.

pub mod control;
pub mod net;
pub mod tap;
pub mod uart;
pub mod virtio_mmio;

use crate::abi;

/// Which device an MMIO address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioTarget {
    /// The 16550 UART, with the register offset.
    Uart(u8),
    /// The control device, with the register offset.
    Control(u64),
    /// Virtio-mmio device `index`, with the register offset.
    Virtio(usize, u64),
    /// Nothing is mapped there.
    Unmapped,
}

/// Routes a guest-physical MMIO address.
pub fn route(addr: u64) -> MmioTarget {
    match addr {
        a if (abi::UART_ADDR..abi::UART_ADDR + 8).contains(&a) => MmioTarget::Uart((a - abi::UART_ADDR) as u8),
        a if (abi::CTRL_ADDR..abi::CTRL_ADDR + 0x1000).contains(&a) => MmioTarget::Control(a - abi::CTRL_ADDR),
        a if (abi::VIRTIO_MMIO_ADDR..abi::MMIO_BASE + abi::MMIO_SIZE).contains(&a) => {
            let off = a - abi::VIRTIO_MMIO_ADDR;
            MmioTarget::Virtio((off / abi::VIRTIO_MMIO_STRIDE) as usize, off % abi::VIRTIO_MMIO_STRIDE)
        }
        _ => MmioTarget::Unmapped,
    }
}
