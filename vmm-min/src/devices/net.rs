//! virtio-net over a TAP device: the device model, its thread and its
//! migration state.
//!
//! - **Transport:** virtio-mmio ([`super::virtio_mmio`]) at
//!   `abi::VIRTIO_MMIO_ADDR`, two split virtqueues (0 = receive, 1 = transmit)
//!   handled with the virtio-queue crate.
//! - **Features:** VERSION_1, MAC, STATUS and MTU (the TAP's MTU at open).
//!   Frames carry the 12-byte `virtio_net_hdr_v1`, which the TAP
//!   (`IFF_VNET_HDR`) reads and writes as is.
//! - **Notifications:** the guest's `QueueNotify` writes go to KVM ioeventfds
//!   (no exit to the VMM). One device thread epolls them, the TAP and a
//!   control eventfd. The device suppresses notifications it does not need
//!   (`VRING_USED_F_NO_NOTIFY`): transmit ones while it is draining the
//!   queue, receive ones unless it ran out of receive buffers.
//! - **Waking the guest:** the guest polls, so there are no interrupts; when
//!   the device puts frames into the receive queue or completes transmits it
//!   rings the [`Doorbell`] it was started with, which wakes a vCPU sleeping
//!   in `hw::wait_us`.
//! - **Dirty tracking:** every write into guest memory (frames, used rings,
//!   ring flags) goes through vm-memory's `Bytes` API on the VM's
//!   `GuestMem`, so it lands in the VMM's own-write bitmap that migration
//!   merges with KVM's dirty log.
//! - **Migration:** [`Pausable::pause`] parks the thread outside any queue
//!   work (stop-and-copy), [`NetDevice::state`] and [`NetDevice::restore`]
//!   carry the transport and queue state, [`Pausable::resume`] restarts it
//!   and processes whatever the guest made available meanwhile.
//!   Frames for the guest that the source holds at the pause (queued on
//!   its TAP, or read but not yet given to the guest for want of buffers)
//!   travel in [`NetState::rx_queued`]; frames that reach the source TAP
//!   later, until Commit, travel with the Commit ([`NetDevice::take_arrived`],
//!   [`NetDevice::inject`]). The destination delivers all of them before
//!   anything it reads from its own TAP. The thread
//!   ends on [`NetDevice::stop`], which the VMM calls when the VM stops.
//!   [`NetDevice::announce`] sends a gratuitous ARP for the guest from the VMM,
//!   and [`request_guest_announce`] asks the guest to send its own.

use super::bus::MmioDevice;
use super::tap::{Tap, VNET_HDR_LEN};
use super::virtio_mmio::{Transport, TransportState, WriteEffect};
use crate::abi::virtio_mmio::net::{DEVICE_ID, F_MAC, F_MTU, F_STATUS};
use crate::abi::{self, virtio_mmio::reg, BootInfo};
use crate::config::NetConfig;
use crate::error::{Error, Result};
use crate::memory::GuestMem;
use crate::run_control::{Doorbell, Pausable, RunControl};
use crate::sync::lock;
use kvm_ioctls::{IoEventAddress, VmFd};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Receive queue index.
pub const RX: usize = 0;
/// Transmit queue index.
pub const TX: usize = 1;
/// Largest queue the device offers.
pub const QUEUE_MAX: u16 = 256;
/// Largest frame (header included) the device moves in one piece.
const MAX_FRAME: usize = 65_562 + VNET_HDR_LEN;
/// How long `pause` waits for the thread to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most frames a migration carries for the guest (a full TAP queue is
/// 500 to 1000); more are dropped and counted.
pub const MAX_CARRIED_FRAMES: usize = 1024;
/// The most bytes of such frames (well inside a wire frame's 8 MiB).
pub const MAX_CARRIED_BYTES: usize = 4 << 20;

/// Counters of the device, for statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest (frames only).
    pub rx_bytes: u64,
    /// Frames from the TAP dropped (no fit, malformed).
    pub rx_dropped: u64,
    /// Times the device ran out of guest receive buffers.
    pub rx_starved: u64,
    /// Frames the guest transmitted.
    pub tx_frames: u64,
    /// Bytes the guest transmitted (frames only).
    pub tx_bytes: u64,
    /// Transmitted frames the TAP refused or that were malformed.
    pub tx_dropped: u64,
    /// Frames for the guest handed to a migration (in the state and with
    /// the Commit), on a source.
    #[serde(default)]
    pub carried_out: u64,
    /// Frames for the guest that came with a migration, on a destination.
    #[serde(default)]
    pub carried_in: u64,
    /// Frames a destination's TAP held before the guest was announced
    /// there, discarded: copies of what the bridge flooded to the source.
    #[serde(default)]
    pub rx_stale: u64,
}

#[derive(Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    rx_starved: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    carried_out: AtomicU64,
    carried_in: AtomicU64,
    rx_stale: AtomicU64,
}

/// The device's migration state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The guest's MAC address (must match the destination's configuration).
    pub mac: [u8; 6],
    /// Transport registers and queues.
    pub transport: TransportState,
    /// Frames for the guest that the source held at the pause, oldest
    /// first, each with its virtio-net header: the destination delivers
    /// them before anything from its own TAP.
    pub rx_queued: Vec<Frame>,
}

/// One Ethernet frame with its 12-byte virtio-net header, as the TAP reads
/// it; base64 in the migration state's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(pub Vec<u8>);

impl Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use base64::Engine;
        let text = String::deserialize(d)?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)?;
        if bytes.len() <= VNET_HDR_LEN || bytes.len() > MAX_FRAME {
            return Err(serde::de::Error::custom(format!(
                "a carried frame of {} bytes: expected {} to {MAX_FRAME} (header included)",
                bytes.len(),
                VNET_HDR_LEN + 1
            )));
        }
        Ok(Frame(bytes))
    }
}

/// A virtio-net device backed by a TAP.
pub struct NetDevice {
    transport: Mutex<Transport>,
    tap: Tap,
    mem: GuestMem,
    mac: [u8; 6],
    ip: Ipv4Addr,
    /// Ioeventfds of the receive and transmit queues.
    notify: [EventFd; 2],
    /// Wakes the thread for pause, stop, activation and resume.
    control: EventFd,
    /// Pause and stop of the device thread.
    run: RunControl,
    counters: Counters,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Frames for the guest to deliver before reading the TAP: one read
    /// that did not fit the guest yet, and those a migration carried.
    carried: Mutex<VecDeque<Vec<u8>>>,
    /// The priority the device thread set itself at its start.
    priority: OnceLock<results::ThreadPriority>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::Config(format!("malformed MAC address '{s}': expected six hex bytes like 52:54:00:12:34:56"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// Parses `10.0.0.2/24` (the prefix is optional) into the address.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse().map_err(|_| Error::Config(format!("malformed IPv4 address '{s}': expected e.g. 10.53.1.2/24")))
}

impl NetDevice {
    /// Uses `tap`, or opens the TAP named in `cfg` (in the caller's network
    /// namespace), and registers the queue ioeventfds with the VM. The
    /// device thread starts with [`NetDevice::start`].
    pub fn new(cfg: &NetConfig, vm: &VmFd, mem: &GuestMem, tap: Option<Tap>) -> Result<Arc<NetDevice>> {
        let mac = parse_mac(&cfg.mac)?;
        let ip = parse_ip(&cfg.ip)?;
        let tap = match tap {
            Some(t) => t,
            None => Tap::open(&cfg.tap).map_err(Error::io(format!("opening TAP '{}'", cfg.tap)))?,
        };
        let mtu = tap.mtu().unwrap_or(1500).clamp(68, 65_535) as u16;
        // virtio_net_config: mac[6], status (LINK_UP), max_virtqueue_pairs, mtu.
        let mut config = Vec::with_capacity(12);
        config.extend_from_slice(&mac);
        config.extend_from_slice(&1u16.to_le_bytes());
        config.extend_from_slice(&1u16.to_le_bytes());
        config.extend_from_slice(&mtu.to_le_bytes());
        let transport = Transport::new(DEVICE_ID, F_MAC | F_STATUS | F_MTU, config, 2, QUEUE_MAX);
        let efd = || EventFd::new(EFD_NONBLOCK).map_err(Error::io("creating an eventfd"));
        let notify = [efd()?, efd()?];
        let addr = IoEventAddress::Mmio(abi::VIRTIO_MMIO_ADDR + reg::QUEUE_NOTIFY);
        for (q, fd) in notify.iter().enumerate() {
            vm.register_ioevent(fd, &addr, q as u32).map_err(Error::kvm("KVM_IOEVENTFD"))?;
        }
        tracing::info!(tap = tap.name(), mtu, "virtio-net device ready");
        Ok(Arc::new(NetDevice {
            transport: Mutex::new(transport),
            tap,
            mem: mem.clone(),
            mac,
            ip,
            notify,
            control: efd()?,
            run: RunControl::default(),
            counters: Counters::default(),
            thread: Mutex::new(None),
            carried: Mutex::new(VecDeque::new()),
            priority: OnceLock::new(),
        }))
    }

    /// Starts the device thread. It rings `bell` when it gave the guest work
    /// and ends on [`NetDevice::stop`].
    pub fn start(self: &Arc<Self>, bell: Doorbell) -> Result<()> {
        let mut t = lock(&self.thread);
        if t.is_some() {
            return Ok(());
        }
        let dev = self.clone();
        let handle = std::thread::Builder::new()
            .name("virtio-net".into())
            .spawn(move || {
                // The guest's network must not wait behind busy vCPUs.
                let _ = dev.priority.set(crate::run_control::raise_current(results::ThreadRole::VirtioNet));
                if let Err(e) = dev.run(&bell) {
                    tracing::error!("virtio-net device thread failed: {e}");
                }
                dev.run.leave();
            })
            .map_err(Error::io("starting the virtio-net thread"))?;
        *t = Some(handle);
        Ok(())
    }

    /// The priority the device thread set itself, once it has started.
    pub fn priority(&self) -> Option<&results::ThreadPriority> {
        self.priority.get()
    }

    /// Stops the device thread and waits for it.
    pub fn stop(&self) {
        self.run.request_stop();
        let _ = self.control.write(1);
        if let Some(h) = lock(&self.thread).take() {
            if h.thread().id() != std::thread::current().id() && h.join().is_err() {
                tracing::error!("the virtio-net thread panicked");
            }
        }
    }

    /// Parks the device thread outside any queue work, so that neither the
    /// queues nor guest memory change until [`NetDevice::resume`]. Frames from the TAP
    /// wait in the kernel meanwhile.
    pub fn pause(&self) -> Result<()> {
        self.run.request_pause();
        if lock(&self.thread).is_none() {
            return Ok(());
        }
        let _ = self.control.write(1);
        if !self.run.wait_parked(1, PAUSE_TIMEOUT) {
            self.resume();
            return Err(Error::PauseTimeout { what: "the virtio-net thread", timeout: PAUSE_TIMEOUT });
        }
        Ok(())
    }

    /// Lets a paused device thread run again; it then processes everything
    /// the guest made available and everything queued on the TAP.
    pub fn resume(&self) {
        self.run.resume();
        let _ = self.control.write(1);
    }

    /// The device's migration state. Call while the device and the vCPUs are
    /// paused, so that it is consistent with guest memory.
    ///
    /// Takes every frame queued on the TAP into the state too, after any
    /// the device already held: once the source stops, nothing else would
    /// deliver them (the client would have to retransmit them).
    pub fn state(&self) -> NetState {
        let mut carried = lock(&self.carried);
        self.drain_tap(&mut carried);
        self.counters.carried_out.fetch_add(carried.len() as u64, Ordering::Relaxed);
        let rx_queued = carried.iter().cloned().map(Frame).collect();
        NetState { mac: self.mac, transport: lock(&self.transport).state(), rx_queued }
    }

    /// Reads every frame queued on the TAP into `into`, up to the carried
    /// limits (more are dropped and counted). Only while the device thread
    /// is paused, or not started.
    fn drain_tap(&self, into: &mut VecDeque<Vec<u8>>) -> usize {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut bytes: usize = into.iter().map(Vec::len).sum();
        let mut n = 0;
        loop {
            match self.tap.read(&mut buf) {
                Ok(len) if len > VNET_HDR_LEN => {
                    if into.len() >= MAX_CARRIED_FRAMES || bytes + len > MAX_CARRIED_BYTES {
                        self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    bytes += len;
                    into.push_back(buf[..len].to_vec());
                    n += 1;
                }
                Ok(_) => {
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return n,
            }
        }
    }

    /// The frames that reached the TAP since [`NetDevice::state`] (call with
    /// the device paused): a source sends them with its Commit.
    pub fn take_arrived(&self) -> Vec<Frame> {
        let mut late = VecDeque::new();
        self.drain_tap(&mut late);
        self.counters.carried_out.fetch_add(late.len() as u64, Ordering::Relaxed);
        late.into_iter().map(Frame).collect()
    }

    /// Queues frames for the guest after those already carried, ahead of
    /// anything on the TAP (a destination, with the frames that came with
    /// the Commit).
    pub fn inject(&self, frames: Vec<Frame>) {
        let mut carried = lock(&self.carried);
        for f in frames {
            if carried.len() < MAX_CARRIED_FRAMES {
                self.counters.carried_in.fetch_add(1, Ordering::Relaxed);
                carried.push_back(f.0);
            } else {
                self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(carried);
        let _ = self.control.write(1);
    }

    /// Restores the migration state (on the destination, before resuming).
    pub fn restore(&self, st: &NetState) -> Result<()> {
        if st.mac != self.mac {
            return Err(Error::State(format!(
                "virtio-net state is for MAC {}, this device has {}",
                fmt_mac(&st.mac),
                fmt_mac(&self.mac)
            )));
        }
        lock(&self.transport).restore(&st.transport).map_err(Error::State)?;
        let mut carried = lock(&self.carried);
        carried.clear();
        carried.extend(st.rx_queued.iter().take(MAX_CARRIED_FRAMES).map(|f| f.0.clone()));
        self.counters.carried_in.fetch_add(carried.len() as u64, Ordering::Relaxed);
        drop(carried);
        let _ = self.control.write(1);
        Ok(())
    }

    /// The device's counters.
    pub fn stats(&self) -> NetStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            rx_frames: g(&c.rx_frames),
            rx_bytes: g(&c.rx_bytes),
            rx_dropped: g(&c.rx_dropped),
            rx_starved: g(&c.rx_starved),
            tx_frames: g(&c.tx_frames),
            tx_bytes: g(&c.tx_bytes),
            tx_dropped: g(&c.tx_dropped),
            carried_out: g(&c.carried_out),
            carried_in: g(&c.carried_in),
            rx_stale: g(&c.rx_stale),
        }
    }

    /// Discards what the TAP holds (a destination, before it announces the
    /// guest: until then the bridge sent the guest's frames to the source,
    /// and here only flooded copies of them queued).
    pub fn discard_queued(&self) {
        let mut stale = VecDeque::new();
        let n = self.drain_tap(&mut stale);
        self.counters.rx_stale.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Sends a gratuitous ARP (an ARP request for the guest's own address,
    /// from its MAC, to broadcast) on the TAP, so that the bridge learns the
    /// guest's new port at once. Used by a migration destination on resume.
    pub fn announce(&self) -> Result<()> {
        let frame = garp_frame(self.mac, self.ip);
        self.tap.write(&frame).map_err(Error::io("sending a gratuitous ARP on the TAP"))?;
        Ok(())
    }

    /// The device thread: waits for notifications, TAP frames and control
    /// requests, and moves frames between the TAP and the queues.
    fn run(&self, bell: &Doorbell) -> io::Result<()> {
        const TAP: u64 = 0;
        const NOTIFY_RX: u64 = 1;
        const NOTIFY_TX: u64 = 2;
        const CONTROL: u64 = 3;
        let epoll = Epoll::new()?;
        let add = |fd: i32, ev: EventSet, data: u64| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, data));
        add(self.tap.as_raw_fd(), EventSet::IN | EventSet::EDGE_TRIGGERED, TAP)?;
        add(self.notify[RX].as_raw_fd(), EventSet::IN, NOTIFY_RX)?;
        add(self.notify[TX].as_raw_fd(), EventSet::IN, NOTIFY_TX)?;
        add(self.control.as_raw_fd(), EventSet::IN, CONTROL)?;
        let mut events = [EpollEvent::default(); 8];
        let mut rx = RxPath { buf: vec![0u8; MAX_FRAME] };
        let mut txbuf = vec![0u8; MAX_FRAME];
        let mut last_error_log = Instant::now() - Duration::from_secs(60);
        loop {
            if self.run.needs_attention() && !self.run.park_if_requested() {
                return Ok(());
            }
            let n = match epoll.wait(100, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    NOTIFY_RX => drop(self.notify[RX].read()),
                    NOTIFY_TX => drop(self.notify[TX].read()),
                    CONTROL => drop(self.control.read()),
                    _ => {}
                }
            }
            let mut work = false;
            {
                let mut t = lock(&self.transport);
                if t.active() {
                    let res = self.process_tx(&mut t.queues[TX], &mut txbuf).and_then(|w| {
                        work |= w;
                        self.process_rx(&mut t.queues[RX], &mut rx)
                    });
                    match res {
                        Ok(w) => work |= w,
                        Err(e) => {
                            // The queues cannot be trusted: stop using them
                            // until the driver resets the device, rather than
                            // retrying (and spinning) on every event.
                            t.needs_reset();
                            if last_error_log.elapsed() > Duration::from_secs(5) {
                                tracing::warn!("virtio-net: {e}; the device needs a reset");
                                last_error_log = Instant::now();
                            }
                        }
                    }
                }
            }
            if work {
                bell.ring();
            }
        }
    }

    /// Sends every frame the guest queued for transmission to the TAP.
    fn process_tx(&self, q: &mut Queue, buf: &mut [u8]) -> std::result::Result<bool, String> {
        let mem = &self.mem;
        let mut work = false;
        if !q.ready() {
            return Ok(false);
        }
        loop {
            check_avail(q, mem, "TX")?;
            q.disable_notification(mem).map_err(|e| format!("TX queue: {e}"))?;
            while let Some(chain) = q.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let mut len = 0usize;
                let mut ok = true;
                for d in chain {
                    let n = d.len() as usize;
                    if d.is_write_only()
                        || len + n > buf.len()
                        || mem.read_slice(&mut buf[len..len + n], d.addr()).is_err()
                    {
                        ok = false;
                        break;
                    }
                    len += n;
                }
                let c = &self.counters;
                if ok && len > VNET_HDR_LEN && self.tap.write(&buf[..len]).is_ok() {
                    c.tx_frames.fetch_add(1, Ordering::Relaxed);
                    c.tx_bytes.fetch_add((len - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                } else {
                    c.tx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                q.add_used(mem, head, 0).map_err(|e| format!("TX used ring: {e}"))?;
                work = true;
            }
            if !q.enable_notification(mem).map_err(|e| format!("TX queue: {e}"))? {
                return Ok(work);
            }
        }
    }

    /// Moves frames from the TAP into the guest's receive buffers until the
    /// TAP is empty or the buffers run out.
    fn process_rx(&self, q: &mut Queue, rx: &mut RxPath) -> std::result::Result<bool, String> {
        let mem = &self.mem;
        let c = &self.counters;
        let mut work = false;
        if !q.ready() {
            return Ok(false);
        }
        loop {
            // Carried frames first, then the TAP.
            let carried = lock(&self.carried).pop_front();
            let len = match carried {
                Some(f) => {
                    rx.buf[..f.len()].copy_from_slice(&f);
                    f.len()
                }
                None => match self.tap.read(&mut rx.buf) {
                    Ok(n) if n > VNET_HDR_LEN => n,
                    Ok(_) => {
                        c.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(work),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("reading the TAP: {e}")),
                },
            };
            // Until it is in the guest, the frame waits at the head of the
            // carried queue, where a pause finds it.
            let hold = |rx: &RxPath| lock(&self.carried).push_front(rx.buf[..len].to_vec());
            if let Err(e) = check_avail(q, mem, "RX") {
                hold(rx);
                return Err(e);
            }
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                // Out of buffers: ask the guest to notify when it adds some,
                // unless it just did.
                hold(rx);
                if q.enable_notification(mem).map_err(|e| format!("RX queue: {e}"))? {
                    q.disable_notification(mem).map_err(|e| format!("RX queue: {e}"))?;
                    continue;
                }
                c.rx_starved.fetch_add(1, Ordering::Relaxed);
                return Ok(work);
            };
            // num_buffers = 1: the frame fits one chain (no MRG_RXBUF).
            rx.buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            let head = chain.head_index();
            let mut off = 0usize;
            for d in chain.writable() {
                let n = (d.len() as usize).min(len - off);
                if mem.write_slice(&rx.buf[off..off + n], d.addr()).is_err() {
                    break;
                }
                off += n;
                if off == len {
                    break;
                }
            }
            let used = if off == len {
                c.rx_frames.fetch_add(1, Ordering::Relaxed);
                c.rx_bytes.fetch_add((len - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                len as u32
            } else {
                // The frame does not fit the guest's buffer: drop it and give
                // the buffer back empty.
                c.rx_dropped.fetch_add(1, Ordering::Relaxed);
                0
            };
            q.add_used(mem, head, used).map_err(|e| format!("RX used ring: {e}"))?;
            work = true;
        }
    }
}

/// Refuses a queue whose driver index runs more than a queue's worth ahead
/// of the device's (a broken guest, or a bad migrated state): popping from
/// it fails while "more work" stays true, which would spin the device.
fn check_avail(q: &Queue, mem: &GuestMem, which: &str) -> std::result::Result<(), String> {
    let avail = q.avail_idx(mem, Ordering::Acquire).map_err(|e| format!("{which} avail ring: {e}"))?;
    let ahead = avail.0.wrapping_sub(q.next_avail());
    if ahead > q.size() {
        return Err(format!(
            "{which} queue: the driver's avail index {} is {ahead} entries past the device's {}, in a queue of {}",
            avail.0,
            q.next_avail(),
            q.size()
        ));
    }
    Ok(())
}

impl MmioDevice for NetDevice {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.transport).read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let effect = lock(&self.transport).write(offset, data);
        match effect {
            WriteEffect::None => {}
            WriteEffect::Activated | WriteEffect::Reset => {
                let _ = self.control.write(1);
            }
            WriteEffect::Notify(q) => {
                if let Some(fd) = self.notify.get(q as usize) {
                    let _ = fd.write(1);
                }
            }
        }
    }
}

/// The one pause protocol ([`Pausable`]); the inherent methods are the
/// same, for callers that hold the device itself.
impl Pausable for NetDevice {
    fn pause(&self) -> Result<()> {
        NetDevice::pause(self)
    }

    fn resume(&self) {
        NetDevice::resume(self)
    }
}

/// The receive path's frame buffer.
struct RxPath {
    buf: Vec<u8>,
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A gratuitous ARP request for `ip` from `mac`, with a zero virtio-net
/// header in front, padded to the Ethernet minimum.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(VNET_HDR_LEN + 60, 0);
    f
}

/// What asking the guest to announce itself needs of a VM: its memory (the
/// boot page) and the doorbell that wakes it. The machine provides both.
pub trait GuestLink {
    /// Guest RAM.
    fn guest_memory(&self) -> &GuestMem;
    /// The doorbell a waiting vCPU sleeps on.
    fn guest_doorbell(&self) -> &Doorbell;
}

impl<T: GuestLink + ?Sized> GuestLink for Arc<T> {
    fn guest_memory(&self) -> &GuestMem {
        (**self).guest_memory()
    }
    fn guest_doorbell(&self) -> &Doorbell {
        (**self).guest_doorbell()
    }
}

/// Asks the guest to announce itself (it sends gratuitous ARPs from its own
/// stack): bumps `BootInfo::announce_seq` and rings the doorbell.
pub fn request_guest_announce(guest: &impl GuestLink) -> Result<()> {
    let addr = GuestAddress(abi::BOOT_INFO_ADDR + std::mem::offset_of!(BootInfo, announce_seq) as u64);
    let mem = guest.guest_memory();
    let seq: u64 = mem.load(addr, Ordering::Acquire).map_err(|e| Error::Memory(e.to_string()))?;
    mem.store(seq.wrapping_add(1), addr, Ordering::Release).map_err(|e| Error::Memory(e.to_string()))?;
    guest.guest_doorbell().ring();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_ips_parse() {
        assert_eq!(parse_mac("52:54:00:12:34:56").unwrap(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert!(parse_mac("52:54:00:12:34").is_err());
        assert!(parse_mac("52:54:00:12:34:56:78").is_err());
        assert!(parse_mac("zz:54:00:12:34:56").is_err());
        assert_eq!(parse_ip("10.53.1.2/24").unwrap(), Ipv4Addr::new(10, 53, 1, 2));
        assert!(parse_ip("10.53.1/24").is_err());
    }

    #[test]
    fn an_avail_index_too_far_ahead_is_refused() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = crate::memory::create(2 << 20, crate::config::MemoryBackend::Anon).expect("memory");
        let mut q = Queue::new(16).expect("queue");
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(0x2000), Some(0));
        q.set_used_ring_address(Some(0x3000), Some(0));
        q.set_ready(true);
        // avail.idx lives at offset 2 of the avail ring.
        mem.write_obj(3u16, GuestAddress(0x2002)).expect("write");
        assert!(check_avail(&q, &mem, "TX").is_ok());
        mem.write_obj(1000u16, GuestAddress(0x2002)).expect("write");
        let e = check_avail(&q, &mem, "TX").unwrap_err();
        assert!(e.contains("1000 entries past"), "{e}");
    }

    #[test]
    fn garp_is_well_formed() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 53, 1, 2));
        let e = &f[VNET_HDR_LEN..];
        assert_eq!(e.len(), 60);
        assert_eq!(&e[12..14], &[0x08, 0x06]);
        assert_eq!(&e[28..32], &[10, 53, 1, 2]);
        assert_eq!(&e[38..42], &[10, 53, 1, 2]);
    }
}
