//! A small HTTP/1.1 server on smoltcp TCP sockets: keep-alive, pipelining,
//! several connections at once (one per listening socket), and nothing a
//! client sends can make it fail.
//!
//! - `GET /file` serves `http.file_bytes` bytes of deterministic content
//!   ([`fill`]); `GET /health` answers `ok\n` at once; `HEAD` works on both.
//! - Every response carries an `ETag` that is the FNV-1a 64-bit hash of its
//!   body, as a quoted 16-digit lowercase hex string, so a client can verify
//!   every byte.
//! - `POST /upload` reads its body (`Content-Length`), discards and counts
//!   it, and only then answers `{"upload_bytes":N}` (the host's ttcp RX:
//!   `bench_suites::ttcp::UploadReply`).
//! - A malformed request gets `400` and the connection is closed; an unknown
//!   path gets `404`, another method `405`; both keep the connection.
//! - A request head may be at most [`REQ_MAX`] bytes; request bodies
//!   (`Content-Length`) are read and discarded; chunked bodies are refused.
//! - A connection that makes no progress for [`IDLE_TIMEOUT_MS`] is aborted,
//!   so half-open clients cannot hold the sockets forever; a request head
//!   that is not complete [`HEAD_TIMEOUT_MS`] after its first byte is
//!   aborted too, so a client trickling a byte at a time (slowloris) cannot
//!   either.

use alloc::vec::Vec;
use core::fmt::Write;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use super::request::{parse, Method, Parsed};

/// The port the server listens on.
pub const PORT: u16 = 80;
/// Largest request head (request line and headers) accepted.
pub const REQ_MAX: usize = 4096;
/// A connection idle for this long is aborted.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// A request head must be complete this long after its first byte.
pub const HEAD_TIMEOUT_MS: u64 = 10_000;
const HEALTH_BODY: &[u8] = b"ok\n";

use served_file::{file_hash, fill, fnv1a64 as fnv1a};

/// A fixed buffer that `write!` appends to (truncating when full).
struct Head {
    buf: [u8; 384],
    len: usize,
}

impl Write for Head {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Body {
    File,
    Static(&'static [u8]),
    /// A short body made at run time (the upload reply), in `Resp::inline`.
    Inline,
}

/// A response being sent.
struct Resp {
    head: Head,
    head_sent: usize,
    body: Body,
    body_len: u64,
    body_sent: u64,
    close: bool,
    inline: [u8; 64],
}

/// One connection's state (one per listening socket).
struct Conn {
    handle: SocketHandle,
    req: [u8; REQ_MAX],
    req_len: usize,
    /// Request-body bytes still to discard.
    skip: u64,
    /// An upload being received: (its length, whether to close after the reply).
    upload: Option<(u64, bool)>,
    resp: Option<Resp>,
    /// We closed our side; wait for the socket to finish.
    closing: bool,
    last_progress: Instant,
    /// When the request head being read began (its first byte).
    head_since: Option<Instant>,
}

impl Conn {
    fn reset(&mut self, now: Instant) {
        self.req_len = 0;
        self.skip = 0;
        self.upload = None;
        self.resp = None;
        self.closing = false;
        self.last_progress = now;
        self.head_since = None;
    }
}

/// Counters of the server.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    /// Requests answered.
    pub requests: u64,
    /// Malformed requests (400).
    pub bad: u64,
    /// Connections aborted for idleness.
    pub timeouts: u64,
    /// Body bytes received by `POST /upload`.
    pub uploaded: u64,
}

/// The HTTP server.
pub struct Server {
    conns: Vec<Conn>,
    file_len: u64,
    file_etag: u64,
    /// Counters.
    pub stats: Stats,
}

impl Server {
    /// Adds `n` listening sockets to `sockets`, each with `tx_buf` bytes of
    /// send buffer and `rx_buf` of receive buffer, serving a file of
    /// `file_len` bytes.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        n: usize,
        tx_buf: usize,
        rx_buf: usize,
        file_len: u64,
        now: Instant,
    ) -> Server {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let rx = tcp::SocketBuffer::new(alloc::vec![0u8; rx_buf]);
            let tx = tcp::SocketBuffer::new(alloc::vec![0u8; tx_buf]);
            let mut s = tcp::Socket::new(rx, tx);
            s.set_nagle_enabled(false);
            let _ = s.listen(PORT);
            let handle = sockets.add(s);
            conns.push(Conn {
                handle,
                req: [0; REQ_MAX],
                req_len: 0,
                skip: 0,
                upload: None,
                resp: None,
                closing: false,
                last_progress: now,
                head_since: None,
            });
        }
        Server { conns, file_len, file_etag: file_hash(file_len), stats: Stats::default() }
    }

    /// The ETag of the served file.
    pub fn file_etag(&self) -> u64 {
        self.file_etag
    }

    /// Serves every connection as far as it can go now; true if anything
    /// was received or sent.
    pub fn service(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let mut progress = false;
        let (file_len, file_etag) = (self.file_len, self.file_etag);
        for c in &mut self.conns {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            progress |= service_conn(c, s, now, file_len, file_etag, &mut self.stats);
        }
        progress
    }
}

fn service_conn(c: &mut Conn, s: &mut tcp::Socket, now: Instant, file_len: u64, etag: u64, st: &mut Stats) -> bool {
    if !s.is_open() {
        let _ = s.listen(PORT);
        c.reset(now);
        return false;
    }
    if matches!(s.state(), tcp::State::Listen | tcp::State::SynReceived) {
        c.reset(now);
        return false;
    }
    let mut progress = false;
    // Receive: discard body bytes, then fill the request buffer.
    while s.can_recv() && !c.closing {
        if c.skip > 0 {
            let skip = c.skip;
            match s.recv(|b| {
                let n = (b.len() as u64).min(skip) as usize;
                (n, n)
            }) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.skip -= n as u64;
                    progress = true;
                }
            }
        } else if c.req_len < REQ_MAX {
            match s.recv_slice(&mut c.req[c.req_len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.req_len += n;
                    progress = true;
                }
            }
        } else {
            break;
        }
    }
    // Answer requests until the socket's send buffer is full.
    loop {
        if let (None, Some((len, close)), 0) = (&c.resp, c.upload, c.skip) {
            // The whole upload has been received and discarded.
            st.uploaded += len;
            c.upload = None;
            c.resp = Some(upload_reply(len, close));
        }
        if c.resp.is_none() && c.upload.is_none() && !c.closing && c.skip == 0 {
            match parse(&c.req[..c.req_len]) {
                Parsed::Incomplete if c.req_len < REQ_MAX => {}
                Parsed::Incomplete | Parsed::Bad => {
                    st.bad += 1;
                    c.resp = Some(response(400, "Bad Request", b"bad request\n", false, true));
                    c.req_len = 0;
                }
                Parsed::Request { method, target_start, target_end, keep_alive, consumed, body } => {
                    let target = &c.req[target_start..target_end];
                    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
                    let head_only = method == Method::Head;
                    let r = match (method, path) {
                        (Method::Post, b"/upload") => None,
                        (Method::Other | Method::Post, _) | (_, b"/upload") => {
                            Some(response(405, "Method Not Allowed", b"method not allowed\n", false, !keep_alive))
                        }
                        (_, b"/file") => Some(file_response(file_len, etag, head_only, !keep_alive)),
                        (_, b"/health") => Some(response(200, "OK", HEALTH_BODY, head_only, !keep_alive)),
                        _ => Some(response(404, "Not Found", b"not found\n", head_only, !keep_alive)),
                    };
                    st.requests += 1;
                    if r.is_none() {
                        c.upload = Some((body, !keep_alive));
                    }
                    c.resp = r;
                    // Drop the head and whatever of the body is buffered.
                    let in_buf = ((c.req_len - consumed) as u64).min(body) as usize;
                    c.skip = body - in_buf as u64;
                    let drop = consumed + in_buf;
                    c.req.copy_within(drop..c.req_len, 0);
                    c.req_len -= drop;
                }
            }
        }
        if c.upload.is_some() && c.skip > 0 {
            // Still receiving an upload: nothing to send yet.
            break;
        }
        if c.upload.is_some() {
            continue;
        }
        let Some(r) = c.resp.as_mut() else { break };
        let (sent, done) = send_resp(s, r);
        progress |= sent;
        if !done {
            break;
        }
        let close = r.close;
        c.resp = None;
        if close {
            s.close();
            c.closing = true;
            break;
        }
    }
    // The client closed its side and has nothing more to ask.
    if !s.may_recv() && c.resp.is_none() && c.upload.is_none() && !c.closing {
        s.close();
        c.closing = true;
    }
    // A head still being read: when did it begin?
    c.head_since = match (c.resp.is_none() && c.upload.is_none() && c.skip == 0 && c.req_len > 0, c.head_since) {
        (true, None) => Some(now),
        (true, since) => since,
        (false, _) => None,
    };
    let slow_head = c.head_since.is_some_and(|t| now - t > Duration::from_millis(HEAD_TIMEOUT_MS));
    if progress && !slow_head {
        c.last_progress = now;
    } else if slow_head || now - c.last_progress > Duration::from_millis(IDLE_TIMEOUT_MS) {
        st.timeouts += 1;
        s.abort();
        c.reset(now);
    }
    progress
}

fn response(code: u16, reason: &str, body: &'static [u8], head_only: bool, close: bool) -> Resp {
    let mut r = start_resp(code, reason, body.len() as u64, fnv1a(body), "text/plain", close);
    r.body = Body::Static(body);
    if head_only {
        r.body_len = 0;
    }
    r
}

/// `{"upload_bytes":N}` for an upload of `len` bytes.
fn upload_reply(len: u64, close: bool) -> Resp {
    let mut body = Head { buf: [0; 384], len: 0 };
    let _ = write!(body, "{{\"upload_bytes\":{len}}}");
    let n = body.len.min(64);
    let mut r = start_resp(200, "OK", n as u64, fnv1a(&body.buf[..n]), "application/json", close);
    r.inline[..n].copy_from_slice(&body.buf[..n]);
    r.body = Body::Inline;
    r
}

fn file_response(len: u64, etag: u64, head_only: bool, close: bool) -> Resp {
    let mut r = start_resp(200, "OK", len, etag, "application/octet-stream", close);
    r.body = Body::File;
    if head_only {
        r.body_len = 0;
    }
    r
}

fn start_resp(code: u16, reason: &str, len: u64, etag: u64, ctype: &str, close: bool) -> Resp {
    let mut head = Head { buf: [0; 384], len: 0 };
    let _ = write!(
        head,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {len}\r\nContent-Type: {ctype}\r\nETag: \"{etag:016x}\"\r\nConnection: {}\r\n{}\r\n",
        if close { "close" } else { "keep-alive" },
        if code == 405 { "Allow: GET, HEAD\r\n" } else { "" },
    );
    Resp { head, head_sent: 0, body: Body::Static(b""), body_len: len, body_sent: 0, close, inline: [0; 64] }
}

/// Sends what fits of `r`; returns (sent anything, response complete).
fn send_resp(s: &mut tcp::Socket, r: &mut Resp) -> (bool, bool) {
    let mut sent = false;
    while r.head_sent < r.head.len {
        match s.send_slice(&r.head.buf[r.head_sent..r.head.len]) {
            Ok(0) | Err(_) => return (sent, false),
            Ok(n) => {
                r.head_sent += n;
                sent = true;
            }
        }
    }
    while r.body_sent < r.body_len {
        let off = r.body_sent;
        let remaining = r.body_len - off;
        let (body, inline) = (r.body, &r.inline);
        let res = s.send(|buf| {
            let n = (buf.len() as u64).min(remaining) as usize;
            match body {
                Body::File => fill(&mut buf[..n], off),
                Body::Static(b) => buf[..n].copy_from_slice(&b[off as usize..off as usize + n]),
                Body::Inline => buf[..n].copy_from_slice(&inline[off as usize..off as usize + n]),
            }
            (n, n)
        });
        match res {
            Ok(0) | Err(_) => return (sent, false),
            Ok(n) => {
                r.body_sent += n as u64;
                sent = true;
            }
        }
    }
    (sent, true)
}
