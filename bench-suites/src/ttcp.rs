//! ttcp: bulk TCP bandwidth the way the Xen paper's Table 6 measured it.
//!
//! This module owns the transfer protocol and its rows, not where the ends
//! run (the CLI puts them in network namespaces or talks to a guest):
//! - the paper's method: a 128 KiB socket buffer on both ends (`ttcp -b
//!   131072`; Linux doubles the value for its bookkeeping, as it did for
//!   ttcp), [`TRANSFER_BYTES`] per transfer written in ttcp's default
//!   8 KiB writes, the median of [`REPEATS`] transfers;
//! - timed at the receiver, from its first byte to its last, as ttcp -r
//!   reports; where the receiver is a guest we cannot time inside, the host
//!   sender times from its first byte written to the guest's reply that
//!   counts the last byte (one round trip more, negligible at these sizes);
//! - raw TCP between two Linux ends ([`pair_transfer`]), or HTTP/1.1 to a
//!   server such as the built-in guest's: `GET` of a body of the transfer's
//!   size (the server transmits) and `POST /upload` of one (the server
//!   receives, discards and counts it: [`UploadReply`]); response heads are
//!   parsed with `httparse`;
//! - rows `ttcp_{tx,rx}_{1500,500}` in Mibit/s (2^20 bit/s, ttcp's `-f m`):
//!   TX is the system under test sending, RX receiving.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::harness::median;
use crate::report::{Row, UNIT_MIBITS};

/// Socket buffer of both ends, bytes (the paper's 128 kB).
pub const SOCKET_BUFFER_BYTES: usize = 128 * 1024;
/// Bytes per transfer (the paper's 400 MB, MB = 10^6 B).
pub const TRANSFER_BYTES: u64 = 400_000_000;
/// Transfers per row (the paper's median of 9).
pub const REPEATS: usize = 9;
/// Bytes per transfer with `--quick`.
pub const QUICK_TRANSFER_BYTES: u64 = 8_000_000;
/// Transfers per row with `--quick`.
pub const QUICK_REPEATS: usize = 3;
/// Size of each write(2), ttcp's default `-l`.
pub const WRITE_BYTES: usize = 8192;
/// The MTUs of the table, in the paper's order.
pub const MTUS: [u32; 2] = [1500, 500];
/// A transfer that moves nothing for this long fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The path of the upload endpoint of the built-in guest's server.
pub const UPLOAD_PATH: &str = "/upload";

/// Which end of the system under test sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The system under test sends.
    Tx,
    /// The system under test receives.
    Rx,
}

impl Direction {
    /// Both, in the paper's order.
    pub const BOTH: [Direction; 2] = [Direction::Tx, Direction::Rx];

    fn tag(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }

    /// "TX" or "RX".
    pub fn label(self) -> &'static str {
        match self {
            Direction::Tx => "TX",
            Direction::Rx => "RX",
        }
    }
}

/// Row id, e.g. `ttcp_tx_1500`.
pub fn row_id(dir: Direction, mtu: u32) -> String {
    format!("ttcp_{}_{mtu}", dir.tag())
}

/// Row label, e.g. "TCP MTU 1500 TX".
pub fn row_label(dir: Direction, mtu: u32) -> String {
    format!("TCP MTU {mtu} {}", dir.label())
}

/// Every (direction, MTU) of the table, in the paper's column order.
pub fn cells() -> Vec<(Direction, u32)> {
    MTUS.iter().flat_map(|&m| Direction::BOTH.map(|d| (d, m))).collect()
}

/// How much to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtcpOptions {
    /// Bytes per transfer.
    pub bytes: u64,
    /// Transfers per row; the row is their median.
    pub repeats: usize,
}

impl TtcpOptions {
    /// The paper's method, or the quick one.
    pub fn new(quick: bool) -> Self {
        if quick {
            TtcpOptions { bytes: QUICK_TRANSFER_BYTES, repeats: QUICK_REPEATS }
        } else {
            TtcpOptions { bytes: TRANSFER_BYTES, repeats: REPEATS }
        }
    }

    /// The method shared by every row, for its `method` text.
    pub fn describe(&self) -> String {
        format!(
            "{} transfers of {} MB (10^6 B) each, median; {} KiB socket buffers on both ends (SO_SNDBUF and \
             SO_RCVBUF set before connect/listen, as ttcp -b {}); {} B writes (ttcp's default -l); Mibit/s = 2^20 bit/s",
            self.repeats,
            self.bytes as f64 / 1e6,
            SOCKET_BUFFER_BYTES >> 10,
            SOCKET_BUFFER_BYTES,
            WRITE_BYTES
        )
    }
}

/// One transfer as its timing end saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transfer {
    /// Payload bytes moved.
    pub bytes: u64,
    /// From the first byte to the last.
    pub elapsed: Duration,
}

impl Transfer {
    /// Payload rate in Mibit/s (2^20 bit/s).
    pub fn mibit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / f64::from(1u32 << 20) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Converts Mibit/s to Mbit/s (10^6 bit/s).
pub fn mibit_to_mbit(v: f64) -> f64 {
    v * f64::from(1u32 << 20) / 1e6
}

/// What the guest's `POST /upload` answers once it has counted the body.
/// The guest (no_std) writes this shape by hand; this is its one reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct UploadReply {
    /// Body bytes the server received and discarded.
    pub upload_bytes: u64,
}

fn buffered_socket() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok(s)
}

/// A listener whose accepted connections have the paper's socket buffers
/// (set before `listen`, so the window scale offered in the SYN-ACK is
/// computed from them). It lives in the network namespace of the calling
/// thread.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = buffered_socket()?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(1)?;
    Ok(s.into())
}

/// The next connection to `listener`, or an error once `timeout` has
/// passed without one (std's `accept` has none of its own: the listener is
/// polled non-blocking, then put back to blocking).
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let t = Instant::now();
    let r = loop {
        match listener.accept() {
            Ok((c, _)) => break Ok(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && t.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                break Err(io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {timeout:?}")))
            }
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    let c = r?;
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(STALL_TIMEOUT))?;
    Ok(c)
}

/// A connection to `addr` with the paper's socket buffers (set before
/// `connect`), from the network namespace of the calling thread.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = buffered_socket()?;
    s.connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))?;
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(STALL_TIMEOUT))?;
    t.set_write_timeout(Some(STALL_TIMEOUT))?;
    Ok(t)
}

/// Writes `bytes` bytes in [`WRITE_BYTES`] writes.
pub fn send(stream: &mut TcpStream, bytes: u64) -> io::Result<()> {
    let buf = [0x5au8; WRITE_BYTES];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE_BYTES as u64) as usize;
        stream.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads until the peer closes, timing from the first byte to the last.
pub fn receive_all(stream: &mut TcpStream) -> io::Result<Transfer> {
    let mut buf = vec![0u8; 64 << 10];
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    Ok(Transfer { bytes, elapsed: start.map_or(Duration::ZERO, |s| s.elapsed()) })
}

/// One raw TCP transfer of `bytes` from a connection `connect` makes to a
/// receiver on `listener`, timed at the receiver. The receiver reads on a
/// thread of this process; the namespaces the sockets were made in decide
/// the path between them.
pub fn pair_transfer(
    listener: &TcpListener,
    connect: &mut dyn FnMut() -> io::Result<TcpStream>,
    bytes: u64,
) -> Result<Transfer, String> {
    std::thread::scope(|s| {
        let rx = s.spawn(|| -> Result<Transfer, String> {
            let (mut c, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            c.set_read_timeout(Some(STALL_TIMEOUT)).map_err(|e| e.to_string())?;
            receive_all(&mut c).map_err(|e| format!("receiving: {e}"))
        });
        let sent = (|| -> Result<(), String> {
            let mut c = connect().map_err(|e| format!("connecting: {e}"))?;
            send(&mut c, bytes).map_err(|e| format!("sending: {e}"))?;
            c.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))
        })();
        if let Err(e) = sent {
            // Unblock the receiver's accept, then report the sender's error.
            if let Ok(addr) = listener.local_addr() {
                let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
            }
            let _ = rx.join();
            return Err(e);
        }
        let t = rx.join().map_err(|_| "the receiving thread panicked".to_string())??;
        if t.bytes != bytes {
            return Err(format!("received {} of {bytes} bytes", t.bytes));
        }
        Ok(t)
    })
}

/// A parsed response head and the body bytes that came with it.
struct Head {
    status: u16,
    content_length: Option<u64>,
    body_start: Vec<u8>,
}

fn read_head(stream: &mut TcpStream) -> Result<Head, String> {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut chunk).map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection before a response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let content_length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .ok_or_else(|| "malformed Content-Length in the response".to_string())
                    })
                    .transpose()?;
                return Ok(Head { status: resp.code.unwrap_or(0), content_length, body_start: buf[len..].to_vec() });
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 << 10 => {}
            Ok(httparse::Status::Partial) => return Err("response head longer than 16 KiB".into()),
            Err(e) => return Err(format!("malformed response head: {e}")),
        }
    }
}

/// `GET path` of a body of `expect` bytes from the HTTP server at `addr`:
/// the server transmits. Timed at this (receiving) end from the first body
/// byte to the last; the body's length is checked, its content is not (a
/// checksum at these rates would load the receiver).
pub fn http_download(addr: SocketAddr, path: &str, expect: u64) -> Result<Transfer, String> {
    let mut c = connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("sending the request: {e}"))?;
    let head = read_head(&mut c)?;
    let start = Instant::now();
    if head.status != 200 {
        return Err(format!("GET {path} answered {}", head.status));
    }
    if head.content_length != Some(expect) {
        return Err(format!("GET {path} announced {:?} bytes, expected {expect}", head.content_length));
    }
    let mut got = head.body_start.len() as u64;
    let mut buf = vec![0u8; 64 << 10];
    while got < expect {
        let n = c.read(&mut buf).map_err(|e| format!("receiving after {got} of {expect} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("the server closed after {got} of {expect} bytes"));
        }
        got += n as u64;
    }
    Ok(Transfer { bytes: expect, elapsed: start.elapsed() })
}

/// `POST /upload` of `bytes` bytes to the HTTP server at `addr`: the server
/// receives, discards and counts them, and answers [`UploadReply`]. Timed
/// at this (sending) end from the first body byte to the reply.
pub fn http_upload(addr: SocketAddr, bytes: u64) -> Result<Transfer, String> {
    let mut c = connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    write!(
        c,
        "POST {UPLOAD_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {bytes}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("sending the request: {e}"))?;
    let start = Instant::now();
    send(&mut c, bytes).map_err(|e| format!("sending the body: {e}"))?;
    let head = read_head(&mut c)?;
    let elapsed = start.elapsed();
    if head.status != 200 {
        return Err(format!("POST {UPLOAD_PATH} answered {}", head.status));
    }
    let len = head.content_length.ok_or("the upload reply has no Content-Length")?;
    if len > 4096 {
        return Err(format!("the upload reply announces {len} bytes (at most 4096 expected)"));
    }
    let mut body = head.body_start;
    let mut buf = [0u8; 4096];
    while (body.len() as u64) < len {
        let n = c.read(&mut buf).map_err(|e| format!("reading the upload reply: {e}"))?;
        if n == 0 {
            return Err("the server closed before the whole upload reply".into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(len as usize);
    let reply: UploadReply = serde_json::from_slice(&body)
        .map_err(|e| format!("malformed upload reply {:?}: {e}", String::from_utf8_lossy(&body)))?;
    if reply.upload_bytes != bytes {
        return Err(format!("the server counted {} of {bytes} uploaded bytes", reply.upload_bytes));
    }
    Ok(Transfer { bytes, elapsed })
}

/// Runs `one` `opts.repeats` times and makes the row: the median in
/// Mibit/s, with every sample and its Mbit/s (10^6) equivalent in the
/// method. The first failure makes the row n/a with its reason.
pub fn measure_row(
    dir: Direction,
    mtu: u32,
    what: &str,
    opts: &TtcpOptions,
    one: &mut dyn FnMut() -> Result<Transfer, String>,
) -> Row {
    let (id, label) = (row_id(dir, mtu), row_label(dir, mtu));
    let method = format!("{what}; {}", opts.describe());
    let mut samples = Vec::with_capacity(opts.repeats);
    for i in 0..opts.repeats {
        match one() {
            Ok(t) => samples.push(t.mibit_per_s()),
            Err(e) => {
                return Row::na(
                    &id,
                    &label,
                    UNIT_MIBITS,
                    format!("transfer {} of {}: {e}", i + 1, opts.repeats),
                    method,
                )
            }
        }
    }
    match median(&samples) {
        Some(m) if m > 0.0 => {
            let list: Vec<String> = samples.iter().map(|s| format!("{s:.0}")).collect();
            Row::measured(
                &id,
                &label,
                UNIT_MIBITS,
                m,
                format!(
                    "{method}; samples {} Mibit/s; median = {:.0} Mbit/s (10^6 bit/s)",
                    list.join(", "),
                    mibit_to_mbit(m)
                ),
            )
        }
        _ => Row::na(&id, &label, UNIT_MIBITS, "no usable transfer".into(), method),
    }
}

/// Every row of one system n/a with the same reason.
pub fn na_rows(reason: &str, what: &str, opts: &TtcpOptions) -> Vec<Row> {
    cells()
        .into_iter()
        .map(|(d, m)| {
            Row::na(
                &row_id(d, m),
                &row_label(d, m),
                UNIT_MIBITS,
                reason.to_owned(),
                format!("{what}; {}", opts.describe()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_units() {
        assert_eq!(row_id(Direction::Tx, 1500), "ttcp_tx_1500");
        assert_eq!(row_label(Direction::Rx, 500), "TCP MTU 500 RX");
        assert_eq!(cells().len(), 4);
        let t = Transfer { bytes: 1 << 20, elapsed: Duration::from_secs(1) };
        assert!((t.mibit_per_s() - 8.0).abs() < 1e-9);
        assert!((mibit_to_mbit(1.0) - 1.048576).abs() < 1e-9);
    }

    /// A loopback transfer moves every byte and gives a rate.
    #[test]
    fn loopback_pair_transfer() {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let t = pair_transfer(&l, &mut || connect(addr), 4_000_000).unwrap();
        assert_eq!(t.bytes, 4_000_000);
        assert!(t.mibit_per_s() > 0.0);
        let opts = TtcpOptions { bytes: 1_000_000, repeats: 3 };
        let row = measure_row(Direction::Tx, 1500, "loopback", &opts, &mut || {
            pair_transfer(&l, &mut || connect(addr), opts.bytes)
        });
        assert!(row.is_well_formed() && row.value.is_some(), "{row:?}");
        assert!(row.method.contains("median"), "{}", row.method);
    }

    /// A server that closes early makes the row n/a with the reason.
    #[test]
    fn short_download_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort");
        });
        let e = http_download(addr, "/file", 1000).unwrap_err();
        srv.join().unwrap();
        assert!(e.contains("closed after"), "{e}");
    }
}
