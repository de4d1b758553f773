//! The virtio-mmio transport (virtio 1.x, register layout version 2): the
//! register file a driver uses to negotiate features, set up the split
//! virtqueues and read the device's configuration space.
//!
//! The transport knows nothing about the device behind it beyond its id, its
//! feature bits and its configuration bytes. It does not notify anyone: a
//! write to `QueueNotify` normally never reaches it, because the VMM registers
//! a KVM ioeventfd on that register and the device thread waits on it; the
//! rare exit that does arrive is reported as [`WriteEffect::Notify`].
//! Interrupts are not used (the guest polls), so `InterruptStatus` reads 0.
//! The register map is [`crate::abi::virtio_mmio`], shared with the guest's
//! driver.

use crate::abi::virtio_mmio::{reg, status, F_VERSION_1, MAGIC, VENDOR, VERSION};
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

/// What a register write means for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing beyond the register change.
    None,
    /// The driver set DRIVER_OK: the device may start using its queues.
    Activated,
    /// The driver wrote 0 to `Status`: the device was reset.
    Reset,
    /// A `QueueNotify` write that reached the VMM (no ioeventfd).
    Notify(u32),
}

/// The transport's state, for the migration stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// Device status register.
    pub status: u32,
    /// Feature bits the driver accepted.
    pub driver_features: u64,
    /// `DEVICE_FEATURES_SEL`.
    pub device_features_sel: u32,
    /// `DRIVER_FEATURES_SEL`.
    pub driver_features_sel: u32,
    /// `QUEUE_SEL`.
    pub queue_sel: u32,
    /// `CONFIG_GENERATION`.
    pub config_generation: u32,
    /// Every queue.
    pub queues: Vec<QueueSnapshot>,
}

/// One split virtqueue's state (a serializable copy of virtio-queue's
/// `QueueState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Largest size the device offers.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Whether the driver marked it ready.
    pub ready: bool,
    /// Next available-ring index the device will read.
    pub next_avail: u16,
    /// Next used-ring index the device will write.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(s: QueueState) -> Self {
        QueueSnapshot {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(s: QueueSnapshot) -> Self {
        QueueState {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

/// A virtio-mmio register file in front of one device.
#[derive(Debug)]
pub struct Transport {
    device_id: u32,
    device_features: u64,
    /// The device's configuration space.
    pub config: Vec<u8>,
    /// The virtqueues.
    pub queues: Vec<Queue>,
    status: u32,
    driver_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    config_generation: u32,
}

impl Transport {
    /// A transport for device `device_id` offering `device_features`, with
    /// `num_queues` queues of at most `queue_max` entries each.
    pub fn new(device_id: u32, device_features: u64, config: Vec<u8>, num_queues: usize, queue_max: u16) -> Self {
        let queues = (0..num_queues).map(|_| Queue::new(queue_max).expect("queue_max is a power of two")).collect();
        Transport {
            device_id,
            device_features: device_features | F_VERSION_1,
            config,
            queues,
            status: 0,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            config_generation: 0,
        }
    }

    /// Whether the driver finished setup and the device may use its queues.
    pub fn active(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & (status::FAILED | status::DEVICE_NEEDS_RESET) == 0
    }

    /// The device found its queues broken: it stops using them until the
    /// driver resets it (virtio 1.x `DEVICE_NEEDS_RESET`).
    pub fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at register `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            let start = (offset - reg::CONFIG) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.config.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v: u32 = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => 0,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
    }

    /// A guest write of `data` at register `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> WriteEffect {
        if offset >= reg::CONFIG {
            // The net device's configuration is read-only.
            return WriteEffect::None;
        }
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(b);
        // Queue setup is only legal before DRIVER_OK; after it the queue
        // registers are ignored rather than corrupting a running queue.
        let setup = !self.active();
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return WriteEffect::None,
                };
                let mask = 0xffff_ffffu64 << shift;
                // The driver may accept only what the device offers.
                let accepted = (u64::from(v) << shift) & self.device_features;
                self.driver_features = (self.driver_features & !mask) | accepted;
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM if setup => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            reg::QUEUE_READY if setup => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            reg::QUEUE_NOTIFY => return WriteEffect::Notify(v),
            reg::INTERRUPT_ACK => {}
            reg::STATUS => return self.set_status(v),
            reg::QUEUE_DESC_LOW if setup => self.set_addr(v, |q, lo| q.set_desc_table_address(Some(lo), None)),
            reg::QUEUE_DESC_HIGH if setup => self.set_addr(v, |q, hi| q.set_desc_table_address(None, Some(hi))),
            reg::QUEUE_DRIVER_LOW if setup => self.set_addr(v, |q, lo| q.set_avail_ring_address(Some(lo), None)),
            reg::QUEUE_DRIVER_HIGH if setup => self.set_addr(v, |q, hi| q.set_avail_ring_address(None, Some(hi))),
            reg::QUEUE_DEVICE_LOW if setup => self.set_addr(v, |q, lo| q.set_used_ring_address(Some(lo), None)),
            reg::QUEUE_DEVICE_HIGH if setup => self.set_addr(v, |q, hi| q.set_used_ring_address(None, Some(hi))),
            _ => tracing::debug!(offset, v, "virtio-mmio write ignored"),
        }
        WriteEffect::None
    }

    fn set_addr(&mut self, v: u32, f: impl FnOnce(&mut Queue, u32)) {
        if let Some(q) = self.selected() {
            f(q, v);
        }
    }

    fn set_status(&mut self, v: u32) -> WriteEffect {
        if v == 0 {
            self.reset();
            return WriteEffect::Reset;
        }
        let was_active = self.active();
        let mut v = v;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // Without VERSION_1 the driver speaks legacy virtio, which a
            // version-2 transport does not offer: refuse FEATURES_OK.
            if self.driver_features & F_VERSION_1 == 0 {
                v &= !status::FEATURES_OK;
            }
        }
        if v & status::DRIVER_OK != 0 && !was_active {
            let ok = self.status & status::FEATURES_OK != 0 && self.queues.iter().all(|q| !q.ready() || q_valid(q));
            if !ok {
                tracing::warn!("virtio-mmio: DRIVER_OK without valid features or queues; marking the device failed");
                self.status = v | status::DEVICE_NEEDS_RESET;
                return WriteEffect::None;
            }
        }
        self.status = v;
        if self.active() && !was_active {
            WriteEffect::Activated
        } else {
            WriteEffect::None
        }
    }

    /// Returns the device to its power-on state.
    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
    }

    /// The registers and queues, for the migration stream.
    pub fn state(&self) -> TransportState {
        TransportState {
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    /// Restores the registers and queues from a migration stream.
    pub fn restore(&mut self, st: &TransportState) -> Result<(), String> {
        if st.queues.len() != self.queues.len() {
            return Err(format!("virtio state has {} queues, this device has {}", st.queues.len(), self.queues.len()));
        }
        if st.driver_features & !self.device_features != 0 {
            return Err(format!(
                "virtio state has features {:#x} this device does not offer ({:#x})",
                st.driver_features, self.device_features
            ));
        }
        let mut queues = Vec::with_capacity(st.queues.len());
        for (i, q) in st.queues.iter().enumerate() {
            let mut s: QueueState = (*q).into();
            if !s.ready && s.size == 0 {
                s.size = s.max_size;
            }
            queues.push(Queue::try_from(s).map_err(|e| format!("virtio queue {i} state rejected: {e}"))?);
        }
        self.queues = queues;
        self.status = st.status;
        self.driver_features = st.driver_features;
        self.device_features_sel = st.device_features_sel;
        self.driver_features_sel = st.driver_features_sel;
        self.queue_sel = st.queue_sel;
        self.config_generation = st.config_generation;
        Ok(())
    }
}

/// Whether a ready queue's addresses are plausible (aligned, sized); the
/// memory checks happen when the queue is used.
fn q_valid(q: &Queue) -> bool {
    let size = q.size();
    size != 0
        && size.is_power_of_two()
        && size <= q.max_size()
        && q.desc_table() & 0xf == 0
        && q.avail_ring() & 1 == 0
        && q.used_ring() & 3 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(t: &Transport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut Transport, off: u64, v: u32) -> WriteEffect {
        t.write(off, &v.to_le_bytes())
    }

    #[test]
    fn negotiation_and_queue_setup() {
        let mut t = Transport::new(1, 1 << 5, vec![1, 2, 3, 4, 5, 6], 2, 256);
        assert_eq!(rd(&t, reg::MAGIC), MAGIC);
        assert_eq!(rd(&t, reg::VERSION), VERSION);
        assert_eq!(rd(&t, reg::DEVICE_ID), 1);
        assert_eq!(rd(&t, reg::DEVICE_FEATURES), 1 << 5);
        wr(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&t, reg::DEVICE_FEATURES), 1);
        wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        wr(&mut t, reg::DRIVER_FEATURES, (1 << 5) | (1 << 7));
        wr(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&mut t, reg::DRIVER_FEATURES, 1);
        assert_eq!(t.state().driver_features, F_VERSION_1 | (1 << 5), "unoffered bit 7 is dropped");
        wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(rd(&t, reg::STATUS) & status::FEATURES_OK, 0);
        for q in 0..2u32 {
            wr(&mut t, reg::QUEUE_SEL, q);
            assert_eq!(rd(&t, reg::QUEUE_NUM_MAX), 256);
            wr(&mut t, reg::QUEUE_NUM, 128);
            wr(&mut t, reg::QUEUE_DESC_LOW, 0x10_0000 + q * 0x1000);
            wr(&mut t, reg::QUEUE_DRIVER_LOW, 0x10_0800 + q * 0x1000);
            wr(&mut t, reg::QUEUE_DEVICE_LOW, 0x10_0c00 + q * 0x1000);
            wr(&mut t, reg::QUEUE_READY, 1);
        }
        let eff =
            wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        assert_eq!(eff, WriteEffect::Activated);
        assert!(t.active());
        let mut mac = [0u8; 6];
        t.read(reg::CONFIG, &mut mac);
        assert_eq!(mac, [1, 2, 3, 4, 5, 6]);

        let st = t.state();
        let mut t2 = Transport::new(1, 1 << 5, vec![0; 6], 2, 256);
        t2.restore(&st).unwrap();
        assert_eq!(t2.state(), st);
        assert!(t2.active());
        assert_eq!(wr(&mut t2, reg::STATUS, 0), WriteEffect::Reset);
        assert!(!t2.active());
    }

    #[test]
    fn legacy_driver_is_refused() {
        let mut t = Transport::new(1, 0, vec![], 2, 256);
        wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_eq!(rd(&t, reg::STATUS) & status::FEATURES_OK, 0);
    }
}
