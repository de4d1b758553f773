//! The MMIO bus: routes a vCPU's MMIO exit to the device that owns the
//! address (the UART, the control device, or a virtio-mmio slot).
//!
//! The layout is [`crate::abi`]'s: the UART at `UART_ADDR` (8 one-byte
//! registers), the control device at `CTRL_ADDR` (one 4 KiB page), then
//! virtio-mmio slot `i` at `VIRTIO_MMIO_ADDR + i * VIRTIO_MMIO_STRIDE` up to
//! the end of the MMIO window. A read of an address nothing owns returns all
//! ones, as on real hardware; a write there is ignored.

use super::control::{self, ControlAction};
use super::uart::Uart;
use crate::abi;
use crate::sync::lock;
use std::sync::{Arc, Mutex};

/// A device in a virtio-mmio slot, driven by register accesses.
pub trait MmioDevice: Send + Sync {
    /// A guest read of `data.len()` bytes at register `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at register `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Which device an MMIO address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The 16550 UART, with the register offset.
    Uart(u8),
    /// The control device, with the register offset.
    Control(u64),
    /// Virtio-mmio slot `index`, with the register offset.
    Virtio(usize, u64),
    /// Nothing is mapped there.
    Unmapped,
}

fn route(addr: u64) -> Target {
    match addr {
        a if (abi::UART_ADDR..abi::UART_ADDR + 8).contains(&a) => Target::Uart((a - abi::UART_ADDR) as u8),
        a if (abi::CTRL_ADDR..abi::CTRL_ADDR + 0x1000).contains(&a) => Target::Control(a - abi::CTRL_ADDR),
        a if (abi::VIRTIO_MMIO_ADDR..abi::MMIO_BASE + abi::MMIO_SIZE).contains(&a) => {
            let off = a - abi::VIRTIO_MMIO_ADDR;
            Target::Virtio((off / abi::VIRTIO_MMIO_STRIDE) as usize, off % abi::VIRTIO_MMIO_STRIDE)
        }
        _ => Target::Unmapped,
    }
}

/// The VM's MMIO devices.
pub struct MmioBus {
    uart: Mutex<Uart>,
    virtio: Vec<Arc<dyn MmioDevice>>,
}

impl MmioBus {
    /// A bus with the console UART and no virtio devices.
    pub fn new(uart: Uart) -> Self {
        MmioBus { uart: Mutex::new(uart), virtio: Vec::new() }
    }

    /// Puts `dev` into the next free virtio-mmio slot; returns the slot's
    /// guest-physical base address.
    pub fn add_virtio(&mut self, dev: Arc<dyn MmioDevice>) -> u64 {
        self.virtio.push(dev);
        abi::VIRTIO_MMIO_ADDR + (self.virtio.len() as u64 - 1) * abi::VIRTIO_MMIO_STRIDE
    }

    /// The console UART (its state travels with a migration).
    pub fn uart(&self) -> &Mutex<Uart> {
        &self.uart
    }

    /// A guest read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match route(addr) {
            Target::Uart(off) => data.fill(lock(&self.uart).read(off)),
            Target::Control(off) => {
                let v = control::read(off).to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v[..n]);
                data[n..].fill(0);
            }
            Target::Virtio(slot, off) => match self.virtio.get(slot) {
                Some(dev) => dev.read(off, data),
                None => data.fill(0xff),
            },
            Target::Unmapped => data.fill(0xff),
        }
    }

    /// A guest write at `addr`; a write to the control device returns what
    /// the vCPU must do.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<ControlAction> {
        match route(addr) {
            Target::Uart(off) => lock(&self.uart).write(off, data.first().copied().unwrap_or(0)),
            Target::Control(off) => {
                let mut v = [0u8; 8];
                let n = data.len().min(8);
                v[..n].copy_from_slice(&data[..n]);
                return Some(control::write(off, u64::from_le_bytes(v)));
            }
            Target::Virtio(slot, off) if slot < self.virtio.len() => self.virtio[slot].write(off, data),
            Target::Virtio(..) | Target::Unmapped => {
                tracing::debug!(addr = format_args!("{addr:#x}"), "write to unmapped MMIO ignored");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ctrl;

    /// A device that records the accesses it sees and answers its offset.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(&'static str, u64, Vec<u8>)>>);

    impl MmioDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
            lock(&self.0).push(("read", offset, data.to_vec()));
        }
        fn write(&self, offset: u64, data: &[u8]) {
            lock(&self.0).push(("write", offset, data.to_vec()));
        }
    }

    #[test]
    fn addresses_reach_their_device() {
        let mut bus = MmioBus::new(Uart::new(false));
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        assert_eq!(bus.add_virtio(a.clone()), abi::VIRTIO_MMIO_ADDR);
        assert_eq!(bus.add_virtio(b.clone()), abi::VIRTIO_MMIO_ADDR + abi::VIRTIO_MMIO_STRIDE);

        // Slot 1 gets its own offset, slot 0 sees nothing of it.
        let mut d = [0u8; 4];
        bus.read(abi::VIRTIO_MMIO_ADDR + abi::VIRTIO_MMIO_STRIDE + 0x70, &mut d);
        assert_eq!(d, [0x70; 4]);
        assert_eq!(bus.write(abi::VIRTIO_MMIO_ADDR + 0x50, &1u32.to_le_bytes()), None);
        assert_eq!(*lock(&a.0), vec![("write", 0x50, vec![1, 0, 0, 0])]);
        assert_eq!(*lock(&b.0), vec![("read", 0x70, vec![0x70; 4])]);

        // An empty slot and an address outside every device read as all ones.
        bus.read(abi::VIRTIO_MMIO_ADDR + 2 * abi::VIRTIO_MMIO_STRIDE, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.read(abi::MMIO_BASE + abi::MMIO_SIZE, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert_eq!(bus.write(abi::MMIO_BASE + 0x2000, &[1]), None);
    }

    #[test]
    fn the_control_device_answers_and_decodes() {
        let bus = MmioBus::new(Uart::new(false));
        let mut d = [0u8; 8];
        bus.read(abi::CTRL_ADDR + ctrl::MAGIC, &mut d);
        assert_eq!(u64::from_le_bytes(d), abi::CTRL_MAGIC);
        assert_eq!(bus.write(abi::CTRL_ADDR + ctrl::EXIT, &7u64.to_le_bytes()), Some(ControlAction::Exit(7)));
        let line = (5u64 << 48) | 0x1234;
        assert_eq!(
            bus.write(abi::CTRL_ADDR + ctrl::RESULT, &line.to_le_bytes()),
            Some(ControlAction::Result(0x1234, 5))
        );
    }

    #[test]
    fn the_uart_is_at_its_address() {
        let bus = MmioBus::new(Uart::new(false));
        // The scratch register (offset 7) keeps what was written.
        assert_eq!(bus.write(abi::UART_ADDR + 7, &[0x5a]), None);
        let mut d = [0u8; 1];
        bus.read(abi::UART_ADDR + 7, &mut d);
        assert_eq!(d, [0x5a]);
        assert_eq!(lock(bus.uart()).state().regs[8], 0x5a);
    }
}
