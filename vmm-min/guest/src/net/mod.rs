//! The guest's network: the virtio-net driver ([`virtio`]), smoltcp, and the
//! HTTP server ([`http`]), all run by the main vCPU in ring 3.
//!
//! Configuration comes from the command line: `virtio_mmio.device=`,
//! `net.mac=`, `net.ip=ADDR/PREFIX` and `http.file_bytes=`. smoltcp's clock
//! is the TSC scaled by the frequency in the boot page.
//!
//! The loop polls the device and the stack; when a round did nothing it
//! sleeps in the VMM for at most a millisecond (less when a TCP timer is due
//! sooner), and the device thread wakes it early when frames arrive.
//!
//! Announcements: when `BootInfo::announce_seq` changes (a migration
//! destination bumps it on resume), and once at boot, the guest sends
//! gratuitous ARPs for its address so that switches learn where it is.

pub mod http;
pub mod request;
pub mod virtio;

use crate::{cmdline, hw, println, result};
use core::ptr::{addr_of, read_volatile};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

/// Listening sockets: concurrent connections the server takes.
const SOCKETS: usize = 16;
/// Send and receive buffer per connection: the Xen paper's ttcp socket
/// buffer (128 KiB; smoltcp scales the window past 64 KiB).
const TX_BUF: usize = 128 * 1024;
const RX_BUF: usize = 128 * 1024;
/// Longest sleep when idle.
const MAX_IDLE_US: u64 = 1000;
/// Gratuitous ARPs sent per announcement, and the gap between them.
const ANNOUNCE_COUNT: u32 = 3;
const ANNOUNCE_GAP_US: u64 = 20_000;

/// Whether the command line gives the guest a NIC.
pub fn configured() -> bool {
    virtio::find_device(cmdline::get()).is_some()
}

/// smoltcp's clock: microseconds since the TSC started.
fn now(tsc_per_us: u64) -> Instant {
    Instant::from_micros((hw::rdtsc() / tsc_per_us) as i64)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_cidr(s: &str) -> Option<(Ipv4Address, u8)> {
    let (addr, prefix) = s.split_once('/').unwrap_or((s, "24"));
    let addr: Ipv4Address = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr, prefix))
}

fn announce_seq() -> u64 {
    // SAFETY: the boot page is identity-mapped for the guest's life; the VMM
    // writes this field, the guest only reads it.
    unsafe { read_volatile(addr_of!((*hw::boot_info()).announce_seq)) }
}

/// A gratuitous ARP request for `ip` from `mac`, padded to 60 bytes.
fn garp(buf: &mut [u8], mac: [u8; 6], ip: [u8; 4]) {
    buf.fill(0);
    buf[0..6].fill(0xff);
    buf[6..12].copy_from_slice(&mac);
    buf[12..14].copy_from_slice(&[0x08, 0x06]);
    buf[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    buf[22..28].copy_from_slice(&mac);
    buf[28..32].copy_from_slice(&ip);
    buf[38..42].copy_from_slice(&ip);
}

/// Runs the network and the HTTP server on this (the main) vCPU, and the
/// main vCPU's other duties: heartbeat and the VMM's requests. Returns only
/// if the NIC cannot be set up.
pub fn serve(vcpu: usize) {
    let Some(base) = virtio::find_device(cmdline::get()) else { return };
    let mut dev = match virtio::VirtioNet::init(base) {
        Ok(d) => d,
        Err(e) => {
            println!("net: virtio-net setup failed: {:?}; running without network", e);
            return;
        }
    };
    let mac = cmdline::value("net.mac").and_then(parse_mac).unwrap_or(dev.mac());
    let Some((ip, prefix)) = cmdline::value("net.ip").and_then(parse_cidr) else {
        println!("net: no valid net.ip=ADDR/PREFIX on the command line; running without network");
        return;
    };
    let file_bytes = cmdline::u64_or("http.file_bytes", 512 * 1024);
    let tsc_per_us = hw::tsc_per_us();

    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = hw::rdtsc();
    let mut iface = Interface::new(config, &mut dev, now(tsc_per_us));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(ip.into(), prefix));
    });
    let mut sockets = SocketSet::new(alloc::vec![]);
    let mut server = http::Server::new(&mut sockets, SOCKETS, TX_BUF, RX_BUF, file_bytes, now(tsc_per_us));
    println!(
        "net: {} / {} up, MTU {}, serving {} bytes on port {} (ETag \"{:016x}\")",
        ip,
        EthernetAddress(mac),
        dev.mtu(),
        file_bytes,
        http::PORT,
        server.file_etag()
    );
    result!(
        "{{\"net\":{{\"ip\":\"{}\",\"mtu\":{},\"file_bytes\":{},\"etag\":\"{:016x}\"}}}}",
        ip,
        dev.mtu(),
        file_bytes,
        server.file_etag()
    );

    let mut seen_announce = announce_seq();
    let mut announce_left = ANNOUNCE_COUNT;
    let mut next_announce = 0u64;
    loop {
        hw::heartbeat_add(vcpu, 1);
        if let Some((seq, _)) = hw::pending_request() {
            hw::complete_request(seq, 0);
        }
        let a = announce_seq();
        if a != seen_announce {
            seen_announce = a;
            announce_left = ANNOUNCE_COUNT;
            next_announce = 0;
        }
        let t = now(tsc_per_us);
        if announce_left > 0 && t.total_micros() as u64 >= next_announce {
            let sent = dev.tx.send_with(60, |b| garp(b, mac, ip.octets())).is_some();
            if sent {
                announce_left -= 1;
                next_announce = t.total_micros() as u64 + ANNOUNCE_GAP_US;
            }
        }

        iface.poll(t, &mut dev, &mut sockets);
        let served = server.service(&mut sockets, t);
        if served {
            // Push out what the server just queued.
            iface.poll(now(tsc_per_us), &mut dev, &mut sockets);
        }
        dev.flush();
        if dev.take_activity() == 0 && !served {
            let t = now(tsc_per_us);
            let mut wait = iface.poll_delay(t, &sockets).map_or(MAX_IDLE_US, |d| d.total_micros()).min(MAX_IDLE_US);
            if announce_left > 0 {
                wait = wait.min(ANNOUNCE_GAP_US);
            }
            // Even with a timer due now, sleep a little: the device rings
            // the doorbell as soon as it has frames or transmit room.
            hw::wait_us(wait.max(50));
        }
    }
}
