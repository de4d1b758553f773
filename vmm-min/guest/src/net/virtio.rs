//! A polling virtio-net driver for ring 3 (virtio-mmio, version 2 registers,
//! split virtqueues), exposed to smoltcp as a `phy::Device`.
//!
//! - The device is found from `virtio_mmio.device=SIZE@ADDR:IRQ` on the
//!   command line; its registers are identity-mapped and user-accessible.
//! - Setup (a few dozen register accesses, each an exit to the VMM) happens
//!   once. After that the hot path touches only RAM: the rings and buffers
//!   live on the guest heap, identity-mapped, so a guest-virtual address is
//!   the guest-physical address the device sees.
//! - Queue 0 receives, queue 1 transmits. Every receive descriptor owns one
//!   buffer big enough for a whole frame and its 12-byte `virtio_net_hdr_v1`;
//!   so does every transmit descriptor.
//! - Notifications: the driver writes `QueueNotify` (a KVM ioeventfd, no exit
//!   to the VMM) only when the device has not set `VRING_USED_F_NO_NOTIFY`,
//!   and at most once per queue per poll round ([`VirtioNet::flush`]).
//! - No interrupts: the server loop polls the used rings, and sleeps in the
//!   VMM (`hw::wait_us`) when idle; the device's thread wakes it.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;
use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, fence, Ordering};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::abi::virtio_mmio::net::{CONFIG_MAC, CONFIG_MTU, DEVICE_ID, F_MAC, F_MTU, F_STATUS};
use crate::abi::virtio_mmio::{reg, status, F_VERSION_1, MAGIC, VERSION};

/// Size of `virtio_net_hdr_v1`.
pub const HDR_LEN: usize = 12;
/// Ethernet header length.
const ETH_HDR: usize = 14;
/// Largest MTU the driver accepts (buffers are sized from it).
pub const MAX_MTU: usize = 9000;
/// Entries per queue the driver asks for.
const QUEUE_SIZE: u16 = 256;

const DESC_F_WRITE: u16 = 2;
const USED_F_NO_NOTIFY: u16 = 1;

/// Why the device could not be set up.
#[derive(Debug, Clone, Copy)]
pub enum InitError {
    /// Nothing (or not a version-2 virtio-net device) at the address.
    NoDevice,
    /// The device refused our features.
    FeaturesRefused,
    /// A queue is missing or too small.
    BadQueue,
    /// Out of heap for rings or buffers.
    NoMemory,
}

/// Finds the first `virtio_mmio.device=SIZE@ADDR:IRQ` and returns ADDR.
pub fn find_device(cmdline: &str) -> Option<usize> {
    cmdline.split_ascii_whitespace().find_map(|tok| {
        let spec = tok.strip_prefix("virtio_mmio.device=")?;
        let (_, rest) = spec.split_once('@')?;
        let addr = rest.split(':').next()?;
        let hex = addr.strip_prefix("0x").or_else(|| addr.strip_prefix("0X"))?;
        usize::from_str_radix(hex, 16).ok()
    })
}

#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// One split virtqueue: descriptor table, available and used rings, all in
/// one zeroed, page-aligned block.
struct Virtq {
    desc: *mut Desc,
    avail: *mut u16,
    used: *mut u16,
    size: u16,
    /// Our copy of `avail.idx`.
    avail_idx: u16,
    /// Next used-ring entry to consume.
    last_used: u16,
    /// Entries published since the last notification check.
    unnotified: bool,
}

fn alloc_block(bytes: usize) -> Result<*mut u8, InitError> {
    let layout = Layout::from_size_align(bytes, 4096).map_err(|_| InitError::NoMemory)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        Err(InitError::NoMemory)
    } else {
        Ok(p)
    }
}

impl Virtq {
    fn new(size: u16) -> Result<Virtq, InitError> {
        let n = size as usize;
        let desc_bytes = 16 * n;
        let avail_bytes = 6 + 2 * n;
        let used_off = (desc_bytes + avail_bytes + 3) & !3;
        let total = used_off + 6 + 8 * n;
        let base = alloc_block(total)?;
        // SAFETY: all three offsets lie inside the `total`-byte block.
        unsafe {
            Ok(Virtq {
                desc: base.cast(),
                avail: base.add(desc_bytes).cast(),
                used: base.add(used_off).cast(),
                size,
                avail_idx: 0,
                last_used: 0,
                unnotified: false,
            })
        }
    }

    fn desc_addr(&self) -> u64 {
        self.desc as u64
    }
    fn avail_addr(&self) -> u64 {
        self.avail as u64
    }
    fn used_addr(&self) -> u64 {
        self.used as u64
    }

    fn set_desc(&mut self, i: u16, addr: u64, len: u32, flags: u16) {
        // SAFETY: `i < size`; the table has `size` entries.
        unsafe {
            let d = self.desc.add((i % self.size) as usize);
            write_volatile(addr_of_mut!((*d).addr), addr);
            write_volatile(addr_of_mut!((*d).len), len);
            write_volatile(addr_of_mut!((*d).flags), flags);
            write_volatile(addr_of_mut!((*d).next), 0);
        }
    }

    fn set_len(&mut self, i: u16, len: u32) {
        // SAFETY: as in `set_desc`.
        unsafe { write_volatile(addr_of_mut!((*self.desc.add((i % self.size) as usize)).len), len) }
    }

    /// Makes descriptor `i` available to the device.
    fn publish(&mut self, i: u16) {
        let slot = (self.avail_idx % self.size) as usize;
        // SAFETY: avail = [flags, idx, ring[size], used_event]; slot < size.
        unsafe { write_volatile(self.avail.add(2 + slot), i) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The ring entry (and the buffer before it) must be visible before
        // the index; x86 keeps stores in order, the compiler must too.
        compiler_fence(Ordering::Release);
        // SAFETY: index 1 is `avail.idx`.
        unsafe { write_volatile(self.avail.add(1), self.avail_idx) };
        self.unnotified = true;
    }

    /// The next used entry `(id, len)`, if the device returned one.
    fn pop_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: used = [flags, idx, ring[size] of (u32 id, u32 len), avail_event].
        let idx = unsafe { read_volatile(self.used.add(1)) };
        if idx == self.last_used {
            return None;
        }
        compiler_fence(Ordering::Acquire);
        let slot = (self.last_used % self.size) as usize;
        // SAFETY: the element lies inside the used ring (4 + 8 * slot).
        let (id, len) = unsafe {
            let e = self.used.cast::<u8>().add(4 + 8 * slot).cast::<u32>();
            (read_volatile(e), read_volatile(e.add(1)))
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some(((id % u32::from(self.size)) as u16, len))
    }

    /// Whether the device wants a notification for what was published.
    fn wants_notify(&mut self) -> bool {
        if !self.unnotified {
            return false;
        }
        self.unnotified = false;
        // Order the avail.idx store before the flags load (store-load).
        fence(Ordering::SeqCst);
        // SAFETY: index 0 is `used.flags`.
        unsafe { read_volatile(self.used) & USED_F_NO_NOTIFY == 0 }
    }
}

/// The receive side: a queue whose every descriptor owns one buffer.
pub struct RxQueue {
    q: Virtq,
    bufs: *mut u8,
    buf_len: usize,
    /// Frames handed to smoltcp since the last check.
    pub frames: u64,
}

/// The transmit side: a queue and its free descriptors.
pub struct TxQueue {
    q: Virtq,
    bufs: *mut u8,
    buf_len: usize,
    free: Vec<u16>,
    /// Frames sent since the last check.
    pub frames: u64,
}

impl RxQueue {
    fn buf(&self, id: u16) -> *mut u8 {
        // SAFETY: `id < size`; the block has `size * buf_len` bytes.
        unsafe { self.bufs.add(id as usize * self.buf_len) }
    }

    fn recycle(&mut self, id: u16) {
        self.q.publish(id);
    }
}

impl TxQueue {
    fn buf(&self, id: u16) -> *mut u8 {
        // SAFETY: as in `RxQueue::buf`.
        unsafe { self.bufs.add(id as usize * self.buf_len) }
    }

    /// Takes back the descriptors the device has finished with.
    fn reclaim(&mut self) {
        while let Some((id, _)) = self.q.pop_used() {
            self.free.push(id);
        }
    }

    /// Sends `len` bytes built by `f` in a transmit buffer; false when no
    /// buffer is free.
    pub fn send_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let id = self.free.pop()?;
        let len = len.min(self.buf_len - HDR_LEN);
        let p = self.buf(id);
        // SAFETY: the buffer is `buf_len` bytes, owned by us until published.
        let buf = unsafe { core::slice::from_raw_parts_mut(p, HDR_LEN + len) };
        buf[..HDR_LEN].fill(0);
        let r = f(&mut buf[HDR_LEN..]);
        self.q.set_len(id, (HDR_LEN + len) as u32);
        self.q.publish(id);
        self.frames += 1;
        Some(r)
    }
}

/// A virtio-net device driven from ring 3.
pub struct VirtioNet {
    base: usize,
    /// The receive queue.
    pub rx: RxQueue,
    /// The transmit queue.
    pub tx: TxQueue,
    mtu: usize,
    mac: [u8; 6],
}

fn read32(base: usize, off: u64) -> u32 {
    // SAFETY: the device's register window is identity-mapped and user-accessible.
    unsafe { read_volatile((base + off as usize) as *const u32) }
}

fn write32(base: usize, off: u64, v: u32) {
    // SAFETY: as in `read32`.
    unsafe { write_volatile((base + off as usize) as *mut u32, v) }
}

impl VirtioNet {
    /// Resets and sets up the virtio-net device at `base`.
    pub fn init(base: usize) -> Result<VirtioNet, InitError> {
        if read32(base, reg::MAGIC) != MAGIC
            || read32(base, reg::VERSION) != VERSION
            || read32(base, reg::DEVICE_ID) != DEVICE_ID
        {
            return Err(InitError::NoDevice);
        }
        write32(base, reg::STATUS, 0);
        write32(base, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write32(base, reg::DEVICE_FEATURES_SEL, 0);
        let lo = u64::from(read32(base, reg::DEVICE_FEATURES));
        write32(base, reg::DEVICE_FEATURES_SEL, 1);
        let hi = u64::from(read32(base, reg::DEVICE_FEATURES));
        let offered = lo | (hi << 32);
        let wanted = (F_VERSION_1 | F_MAC | F_MTU | F_STATUS) & offered;
        if wanted & F_VERSION_1 == 0 {
            write32(base, reg::STATUS, status::FAILED);
            return Err(InitError::FeaturesRefused);
        }
        write32(base, reg::DRIVER_FEATURES_SEL, 0);
        write32(base, reg::DRIVER_FEATURES, wanted as u32);
        write32(base, reg::DRIVER_FEATURES_SEL, 1);
        write32(base, reg::DRIVER_FEATURES, (wanted >> 32) as u32);
        write32(base, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if read32(base, reg::STATUS) & status::FEATURES_OK == 0 {
            write32(base, reg::STATUS, status::FAILED);
            return Err(InitError::FeaturesRefused);
        }
        let mut mac = [0u8; 6];
        if wanted & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                // SAFETY: the configuration space is part of the register window.
                *b = unsafe { read_volatile((base + (reg::CONFIG + CONFIG_MAC) as usize + i) as *const u8) };
            }
        }
        let mut mtu = 1500usize;
        if wanted & F_MTU != 0 {
            let lo = usize::from(unsafe_read8(base, reg::CONFIG + CONFIG_MTU));
            let hi = usize::from(unsafe_read8(base, reg::CONFIG + CONFIG_MTU + 1));
            // 68 is IPv4's minimum link MTU; the ttcp table runs at 500.
            mtu = (lo | (hi << 8)).clamp(68, MAX_MTU);
        }
        let buf_len = (HDR_LEN + ETH_HDR + mtu + 63) & !63;

        let mut queues = [None, None];
        for (qi, slot) in queues.iter_mut().enumerate() {
            write32(base, reg::QUEUE_SEL, qi as u32);
            let max = read32(base, reg::QUEUE_NUM_MAX);
            if max == 0 {
                write32(base, reg::STATUS, status::FAILED);
                return Err(InitError::BadQueue);
            }
            let size = QUEUE_SIZE.min(max.min(0x8000) as u16);
            let size = 1u16 << (15 - size.leading_zeros()); // a power of two
            let q = Virtq::new(size)?;
            write32(base, reg::QUEUE_NUM, u32::from(size));
            write32(base, reg::QUEUE_DESC_LOW, q.desc_addr() as u32);
            write32(base, reg::QUEUE_DESC_HIGH, (q.desc_addr() >> 32) as u32);
            write32(base, reg::QUEUE_DRIVER_LOW, q.avail_addr() as u32);
            write32(base, reg::QUEUE_DRIVER_HIGH, (q.avail_addr() >> 32) as u32);
            write32(base, reg::QUEUE_DEVICE_LOW, q.used_addr() as u32);
            write32(base, reg::QUEUE_DEVICE_HIGH, (q.used_addr() >> 32) as u32);
            write32(base, reg::QUEUE_READY, 1);
            *slot = Some(q);
        }
        let [Some(rxq), Some(txq)] = queues else { return Err(InitError::BadQueue) };
        let rx_bufs = alloc_block(rxq.size as usize * buf_len)?;
        let tx_bufs = alloc_block(txq.size as usize * buf_len)?;
        let mut rx = RxQueue { q: rxq, bufs: rx_bufs, buf_len, frames: 0 };
        for i in 0..rx.q.size {
            let addr = rx.buf(i) as u64;
            rx.q.set_desc(i, addr, buf_len as u32, DESC_F_WRITE);
            rx.q.publish(i);
        }
        let mut tx = TxQueue { q: txq, bufs: tx_bufs, buf_len, free: Vec::new(), frames: 0 };
        for i in 0..tx.q.size {
            let addr = tx.buf(i) as u64;
            tx.q.set_desc(i, addr, buf_len as u32, 0);
            tx.free.push(i);
        }
        write32(base, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        let mut dev = VirtioNet { base, rx, tx, mtu, mac };
        dev.flush();
        Ok(dev)
    }

    /// The link MTU (IP packet size).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The MAC the device reports (zero if it reports none).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Notifies the device of what was published this round, where it asked
    /// for notifications.
    pub fn flush(&mut self) {
        if self.rx.q.wants_notify() {
            write32(self.base, reg::QUEUE_NOTIFY, 0);
        }
        if self.tx.q.wants_notify() {
            write32(self.base, reg::QUEUE_NOTIFY, 1);
        }
    }

    /// Frames received and sent since the last call.
    pub fn take_activity(&mut self) -> u64 {
        let n = self.rx.frames + self.tx.frames;
        self.rx.frames = 0;
        self.tx.frames = 0;
        n
    }
}

fn unsafe_read8(base: usize, off: u64) -> u8 {
    // SAFETY: the configuration space is part of the identity-mapped window.
    unsafe { read_volatile((base + off as usize) as *const u8) }
}

/// A received frame, lent to smoltcp; its buffer goes back to the device
/// when the token is dropped.
pub struct RxToken<'a> {
    rx: &'a mut RxQueue,
    id: u16,
    len: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let p = self.rx.buf(self.id);
        // SAFETY: the device wrote `len` (<= buf_len) bytes and handed the
        // buffer back; it is ours until recycled in `drop`.
        let frame = unsafe { core::slice::from_raw_parts(p.add(HDR_LEN), self.len) };
        f(frame)
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        self.rx.recycle(self.id);
    }
}

/// A transmit buffer for smoltcp.
pub struct TxToken<'a> {
    tx: &'a mut TxQueue,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut f = Some(f);
        match self.tx.send_with(len, |b| (f.take().expect("called once"))(b)) {
            Some(r) => r,
            // `transmit` only hands out a token when a buffer is free, so
            // this is unreachable; build the frame into scratch space anyway.
            None => (f.take().expect("not yet called"))(&mut alloc::vec![0u8; len]),
        }
    }
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.tx.reclaim();
        if self.tx.free.is_empty() {
            return None;
        }
        loop {
            let (id, len) = self.rx.q.pop_used()?;
            let len = (len as usize).min(self.rx.buf_len);
            if len <= HDR_LEN + ETH_HDR {
                // Empty (a frame the device dropped) or a runt: recycle.
                self.rx.recycle(id);
                continue;
            }
            self.rx.frames += 1;
            return Some((RxToken { rx: &mut self.rx, id, len: len - HDR_LEN }, TxToken { tx: &mut self.tx }));
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        self.tx.reclaim();
        if self.tx.free.is_empty() {
            None
        } else {
            Some(TxToken { tx: &mut self.tx })
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + ETH_HDR;
        caps.max_burst_size = None;
        caps
    }
}
