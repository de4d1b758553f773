//! The built-in guest's HTTP server, compiled into the host binary and run
//! as a native process over a TAP: the honest native baseline of the
//! guest's HTTP throughput (the relative-performance figure's SPEC WEB99
//! stand-in), with the same server code, the same TCP/IP stack (smoltcp)
//! and the same socket buffers, only without the VM. smoltcp's own
//! `TunTapInterface` is the device; the guest's files are included as they
//! are (`#[path]`), so the two cannot drift apart.

#[path = "../../vmm-min/guest/src/net/http.rs"]
#[allow(dead_code)]
pub mod http;
#[path = "../../vmm-min/guest/src/net/request.rs"]
pub mod request;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Listening sockets and buffers, as the guest's (`guest/src/net/mod.rs`).
const SOCKETS: usize = 16;
const TX_BUF: usize = 128 * 1024;
const RX_BUF: usize = 128 * 1024;

/// What the native server needs.
pub struct ServerConfig {
    /// The TAP to open (in the calling thread's network namespace).
    pub tap: String,
    /// The MAC address, as the guest's `net.mac=`.
    pub mac: [u8; 6],
    /// The address and prefix.
    pub ip: (Ipv4Address, u8),
    /// Bytes of `/file`.
    pub file_bytes: u64,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

/// Serves until `stop` is set. Runs on the calling thread, which must be in
/// the TAP's namespace.
pub fn serve(cfg: &ServerConfig, stop: &AtomicBool) -> std::io::Result<()> {
    let mut dev = TunTapInterface::new(&cfg.tap, Medium::Ethernet)?;
    let fd = dev.as_raw_fd();
    let mut iface = Interface::new(Config::new(EthernetAddress(cfg.mac).into()), &mut dev, Instant::now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(cfg.ip.0.into(), cfg.ip.1));
    });
    let mut sockets = SocketSet::new(vec![]);
    let mut server = http::Server::new(&mut sockets, SOCKETS, TX_BUF, RX_BUF, cfg.file_bytes, Instant::now());
    while !stop.load(Ordering::Acquire) {
        let t = Instant::now();
        iface.poll(t, &mut dev, &mut sockets);
        if server.service(&mut sockets, t) {
            iface.poll(Instant::now(), &mut dev, &mut sockets);
            continue;
        }
        let wait =
            iface.poll_delay(t, &sockets).unwrap_or(SmolDuration::from_millis(1)).min(SmolDuration::from_millis(1));
        phy_wait(fd, Some(wait))?;
    }
    Ok(())
}
