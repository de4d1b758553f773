//! A fault-injecting TCP proxy for the migration stream: it sits between a
//! source and a destination VMM, parses the frames going each way (it knows
//! the header layout of `vmm_min::migration::wire`), and drops, corrupts,
//! delays, truncates or stalls the frames of one kind, or kills a process
//! when it sees one. Everything else it forwards unchanged.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_min::migration::wire::Kind;

/// Header bytes of a frame; the length is at 12..16, the kind at 6.
const HEADER: usize = 20;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Source to destination.
    ToDestination,
    /// Destination to source.
    ToSource,
}

/// What the proxy does to a matching frame.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Do not forward it (nor any later frame of the same kind).
    DropAll,
    /// Do not forward the first one.
    Drop,
    /// Flip a bit in its payload.
    Corrupt,
    /// Forward it this much later.
    Delay(Duration),
    /// Forward it, then close both connections.
    CloseAfter,
    /// Forward half of it, then close both connections.
    Truncate,
    /// Stop reading this direction (the connection stays open).
    Stall,
    /// Kill this process (SIGKILL), then forward the frame.
    Kill(u32),
}

/// One fault: the frames of `kind` going `dir`.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// The direction.
    pub dir: Dir,
    /// The frame kind.
    pub kind: Kind,
    /// What to do.
    pub action: Action,
}

/// A running proxy. Dropping it closes everything.
pub struct Proxy {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on loopback and forwards the first connection to `upstream`,
    /// applying `fault`.
    pub fn start(upstream: &str, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let upstream = upstream.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let Ok((src, _)) = listener.accept() else { return };
            let Ok(dst) = TcpStream::connect(&upstream) else { return };
            let (src2, dst2) = (src.try_clone().expect("clone"), dst.try_clone().expect("clone"));
            let closer = (src.try_clone().expect("clone"), dst.try_clone().expect("clone"));
            let f = fault;
            let s1 = s.clone();
            let a = std::thread::spawn(move || pump(src, dst, Dir::ToDestination, f, &s1));
            let b = std::thread::spawn(move || pump(dst2, src2, Dir::ToSource, f, &s));
            let _ = a.join();
            let _ = b.join();
            let _ = closer.0.shutdown(Shutdown::Both);
            let _ = closer.1.shutdown(Shutdown::Both);
        });
        Proxy { addr, stop, thread: Some(thread) }
    }

    /// Where the source should connect.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Unblock a proxy that never got its connection.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn close_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Forwards frames from `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, dir: Dir, fault: Fault, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut fired = false;
    loop {
        let mut hdr = [0u8; HEADER];
        if !read_full(&mut from, &mut hdr, stop) {
            close_both(&from, &to);
            return;
        }
        let len = u32::from_le_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]) as usize;
        let mut payload = vec![0u8; len.min(16 << 20)];
        if !read_full(&mut from, &mut payload, stop) {
            close_both(&from, &to);
            return;
        }
        let hit = dir == fault.dir && hdr[6] == fault.kind as u8;
        let mut frame = [&hdr[..], &payload[..]].concat();
        if hit && (!fired || matches!(fault.action, Action::DropAll)) {
            fired = true;
            match fault.action {
                Action::DropAll | Action::Drop => continue,
                Action::Corrupt => {
                    let n = frame.len();
                    frame[n - 1] ^= 0x10;
                }
                Action::Delay(d) => std::thread::sleep(d),
                Action::CloseAfter => {
                    let _ = to.write_all(&frame);
                    close_both(&from, &to);
                    return;
                }
                Action::Truncate => {
                    let _ = to.write_all(&frame[..frame.len() / 2]);
                    close_both(&from, &to);
                    return;
                }
                Action::Stall => {
                    // Keep the connection open, read nothing more.
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return;
                }
                Action::Kill(pid) => {
                    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
        }
        if to.write_all(&frame).is_err() {
            close_both(&from, &to);
            return;
        }
    }
}

/// Reads exactly `buf`, retrying on timeouts until `stop`; false on close.
fn read_full(r: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::Acquire) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}
