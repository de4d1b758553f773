//! The control channel between the source-side migbench and `migbench
//! qemu-incoming` on the destination's machine: the typed requests and
//! replies (both sides use these types), one JSON object per line over
//! TCP, inside mutual TLS with the migration's credentials (vmm-min's
//! [`TlsCredentials`]) for anything but loopback; and the source's client,
//! which is the driver's [`RemoteDestination`].
//!
//! ```text
//! source migbench                         qemu-incoming (destination machine)
//!   {"cmd":"start","guest":{..}}   ->  QEMU -incoming defer -S, tls-creds-x509
//!                                  <-  {"reply":"started","listen":"ADDR:PORT","tls":true}
//!   (QEMU migrates to tcp:ADDR:PORT over TLS; query-migrate until completed)
//!   {"cmd":"digests"}              ->  waits for the load, pmemsave, XXH3 per 4 KiB page
//!                                  <-  {"reply":"digests","pages":[..]}
//!   {"cmd":"resume"}  (digests equal)  ->  cont, until it runs
//!                                  <-  {"reply":"resumed"}
//!   {"cmd":"abort"}   (failure, cancel, mismatch) -> kills the waiting QEMU
//!                                  <-  {"reply":"aborted","killed":true}
//!   {"cmd":"status"}               <-  {"reply":"status","qemu":{..}}
//!   anything malformed or refused  <-  {"reply":"error","message":".."}
//! ```

use super::accel::AccelChoice;
use super::driver::{QemuError, RemoteDestination};
use super::pages::PageDigests;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use vmm_min::migration::tls::TlsCredentials;

/// The longest request line the destination reads, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The longest reply line the source reads, bytes (the digests of a 16 GiB
/// guest are about 90 MB of JSON).
pub const MAX_REPLY_BYTES: usize = 256 << 20;
/// How long a request may take to be answered (a digest of a large guest,
/// a destination that waits for its load).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(180);

/// A request to the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start a destination QEMU for this guest, waiting for the migration.
    Start {
        /// The guest, as the source runs it.
        guest: RemoteGuest,
    },
    /// What runs there.
    Status,
    /// Page digests of the paused destination's RAM, once it has loaded
    /// the migration.
    Digests,
    /// `cont` the destination once it has loaded the migration.
    Resume,
    /// Kill the destination QEMU (refused once it runs the guest).
    Abort,
}

/// The guest the source runs: what the destination's QEMU must match
/// (machine, RAM, vCPUs, NIC) and the guest's parameters. The kernel,
/// initrd and QEMU binary are the destination's own (the same image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteGuest {
    /// `-machine`.
    pub machine: String,
    /// The accelerator asked for.
    pub accel: AccelChoice,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub smp: u32,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Its MAC.
    pub mac: String,
    /// Size of the file it serves, bytes.
    pub file_bytes: u64,
    /// The workload, as `linux_guest::params::Workload` spells it.
    pub workload: String,
}

impl RemoteGuest {
    /// Checks what the destination will pass to QEMU: a refusal says why.
    pub fn check(&self) -> Result<(), String> {
        if self.machine.is_empty() || !self.machine.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(format!("guest.machine '{}': expected a machine type such as pc or q35", self.machine));
        }
        if !(16..=1 << 20).contains(&self.memory_mib) {
            return Err(format!("guest.memory_mib {}: expected 16 to 1048576", self.memory_mib));
        }
        if !(1..=256).contains(&self.smp) {
            return Err(format!("guest.smp {}: expected 1 to 256", self.smp));
        }
        if !(1..=32).contains(&self.prefix) {
            return Err(format!("guest.prefix {}: expected 1 to 32", self.prefix));
        }
        let parts: Vec<&str> = self.mac.split(':').collect();
        if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(format!("guest.mac '{}': expected six hex pairs such as 02:6d:62:00:00:02", self.mac));
        }
        self.workload
            .parse::<linux_guest::params::Workload>()
            .map(|_| ())
            .map_err(|e| format!("guest.workload '{}': {e}", self.workload))
    }
}

/// A reply from the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To `start`: QEMU waits for the migration there.
    Started {
        /// `HOST:PORT` of `-incoming`/`migrate-incoming`.
        listen: String,
        /// Whether QEMU's stream is inside TLS (`tls-creds-x509`).
        tls: bool,
    },
    /// To `status`.
    Status(DestinationStatus),
    /// To `digests`.
    Digests(PageDigests),
    /// To `resume`: the guest runs there.
    Resumed,
    /// To `abort`.
    Aborted {
        /// Whether a QEMU was there to kill.
        killed: bool,
    },
    /// The request was malformed or refused; nothing was changed.
    Error {
        /// Why, and what to do.
        message: String,
    },
}

impl Reply {
    /// The reply's tag, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Started { .. } => "started",
            Reply::Status(_) => "status",
            Reply::Digests(_) => "digests",
            Reply::Resumed => "resumed",
            Reply::Aborted { .. } => "aborted",
            Reply::Error { .. } => "error",
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// The destination QEMU, if one was started and not aborted.
    pub qemu: Option<QemuState>,
}

/// One destination QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuState {
    /// Its pid.
    pub pid: u32,
    /// Whether its vCPUs run.
    pub running: bool,
    /// QEMU's run state (`inmigrate`, `paused`, `running`, ...).
    pub state: String,
    /// Whether it was resumed by a `resume` (it then holds the guest).
    pub resumed: bool,
}

/// A failed exchange on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Connecting, TLS or the exchange broke.
    #[error("qemu-incoming at {addr}: {what}: {source}")]
    Io {
        /// The destination's control address.
        addr: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("qemu-incoming at {addr}: {message}")]
    Tls {
        /// The destination's control address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The peer sent something that is not a reply.
    #[error("qemu-incoming at {addr}: malformed reply: {message}")]
    Malformed {
        /// The destination's control address.
        addr: String,
        /// What was wrong.
        message: String,
    },
    /// The destination refused the request.
    #[error("qemu-incoming at {addr} refused {request}: {message}")]
    Refused {
        /// The destination's control address.
        addr: String,
        /// The request.
        request: &'static str,
        /// Its reason.
        message: String,
    },
    /// Another kind of reply than the request's.
    #[error("qemu-incoming at {addr} answered {request} with a '{got}' reply")]
    Unexpected {
        /// The destination's control address.
        addr: String,
        /// The request.
        request: &'static str,
        /// The reply's tag.
        got: &'static str,
    },
}

impl From<RemoteError> for QemuError {
    fn from(e: RemoteError) -> QemuError {
        QemuError::Guest(e.to_string())
    }
}

/// A byte stream in both directions (plain TCP, or TLS over it).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One line of at most `max` bytes (without its newline); `Ok(None)` at
/// the end of the stream. A longer line is an error (its rest unread).
pub fn read_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("line longer than {max} bytes")));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(done));
        if done {
            return Ok(Some(line));
        }
    }
}

/// Writes `value` as one JSON line.
pub fn write_line(w: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    w.write_all(&text)?;
    w.flush()
}

/// The source's connection to `migbench qemu-incoming`.
pub struct Client {
    addr: String,
    conn: BufReader<Box<dyn Stream>>,
    /// A `digests` request was sent and its reply not read yet.
    digests_pending: bool,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`), inside mutual TLS with `tls`
    /// (checking that the destination's certificate names HOST) or, for a
    /// loopback address only, without.
    pub fn connect(addr: &str, tls: Option<&TlsCredentials>) -> Result<Client, RemoteError> {
        let io = |what| {
            let addr = addr.to_string();
            move |source| RemoteError::Io { addr, what, source }
        };
        let sock: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(io("resolving the address"))?
            .next()
            .ok_or_else(|| RemoteError::Tls { addr: addr.into(), message: "the address resolves to nothing".into() })?;
        let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(10)).map_err(io("connecting"))?;
        tcp.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io("setting a timeout"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match tls {
            Some(creds) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let conn =
                    creds.client(host).map_err(|e| RemoteError::Tls { addr: addr.into(), message: e.to_string() })?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            None if sock.ip().is_loopback() => Box::new(tcp),
            None => {
                return Err(RemoteError::Tls {
                    addr: addr.into(),
                    message: "not a loopback address: the control channel needs TLS credentials (--tls-dir)".into(),
                })
            }
        };
        Ok(Client { addr: addr.into(), conn: BufReader::new(stream), digests_pending: false })
    }

    fn send(&mut self, req: &Request) -> Result<(), RemoteError> {
        write_line(self.conn.get_mut(), req).map_err(|source| RemoteError::Io {
            addr: self.addr.clone(),
            what: "sending a request",
            source,
        })
    }

    fn receive(&mut self, request: &'static str) -> Result<Reply, RemoteError> {
        let line = read_line(&mut self.conn, MAX_REPLY_BYTES)
            .map_err(|source| RemoteError::Io { addr: self.addr.clone(), what: "reading the reply", source })?
            .ok_or_else(|| RemoteError::Malformed {
                addr: self.addr.clone(),
                message: format!("the connection closed before the reply to {request}"),
            })?;
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Error { message }) => Err(RemoteError::Refused { addr: self.addr.clone(), request, message }),
            Ok(r) => Ok(r),
            Err(e) => Err(RemoteError::Malformed { addr: self.addr.clone(), message: e.to_string() }),
        }
    }

    /// Sends `req` and reads its reply; an `error` reply is [`RemoteError::Refused`].
    pub fn request(&mut self, req: &Request) -> Result<Reply, RemoteError> {
        if self.digests_pending {
            // The answer to an earlier `digests` is still on its way.
            self.digests_pending = false;
            self.receive("digests")?;
        }
        self.send(req)?;
        self.receive(request_name(req))
    }

    /// Sends one raw line (tests of malformed requests) and reads a reply.
    pub fn raw(&mut self, line: &str) -> Result<Reply, RemoteError> {
        let w = self.conn.get_mut();
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .and_then(|()| w.flush())
            .map_err(|source| RemoteError::Io { addr: self.addr.clone(), what: "sending a request", source })?;
        self.receive("a raw request")
    }

    /// Starts the destination QEMU for `guest`; the migration address.
    pub fn start(&mut self, guest: &RemoteGuest) -> Result<(String, bool), RemoteError> {
        match self.request(&Request::Start { guest: guest.clone() })? {
            Reply::Started { listen, tls } => Ok((listen, tls)),
            other => Err(self.unexpected("start", &other)),
        }
    }

    /// The destination's status.
    pub fn status(&mut self) -> Result<DestinationStatus, RemoteError> {
        match self.request(&Request::Status)? {
            Reply::Status(s) => Ok(s),
            other => Err(self.unexpected("status", &other)),
        }
    }

    fn unexpected(&self, request: &'static str, got: &Reply) -> RemoteError {
        RemoteError::Unexpected { addr: self.addr.clone(), request, got: got.kind() }
    }
}

fn request_name(req: &Request) -> &'static str {
    match req {
        Request::Start { .. } => "start",
        Request::Status => "status",
        Request::Digests => "digests",
        Request::Resume => "resume",
        Request::Abort => "abort",
    }
}

impl RemoteDestination for Client {
    fn ask_digests(&mut self) -> Result<(), QemuError> {
        self.send(&Request::Digests)?;
        self.digests_pending = true;
        Ok(())
    }

    fn digests(&mut self) -> Result<PageDigests, QemuError> {
        if !self.digests_pending {
            self.send(&Request::Digests)?;
        }
        self.digests_pending = false;
        match self.receive("digests")? {
            Reply::Digests(d) => Ok(d),
            other => Err(self.unexpected("digests", &other).into()),
        }
    }

    fn resume(&mut self) -> Result<(), QemuError> {
        match self.request(&Request::Resume)? {
            Reply::Resumed => Ok(()),
            other => Err(self.unexpected("resume", &other).into()),
        }
    }

    fn abort(&mut self) {
        if let Err(e) = self.request(&Request::Abort) {
            eprintln!("migbench: aborting the remote destination: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> RemoteGuest {
        RemoteGuest {
            machine: "pc".into(),
            accel: AccelChoice::Auto,
            memory_mib: 512,
            smp: 1,
            ip: Ipv4Addr::new(10, 53, 1, 2),
            prefix: 24,
            mac: "02:6d:62:00:01:02".into(),
            file_bytes: 4096,
            workload: "idle".into(),
        }
    }

    #[test]
    fn requests_parse_strictly_and_guests_are_checked() {
        let r = Request::Start { guest: guest() };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"digests"}"#).unwrap(), Request::Digests);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"fly"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"start"}"#).is_err());
        assert!(guest().check().is_ok());
        let bad = |f: fn(&mut RemoteGuest)| {
            let mut g = guest();
            f(&mut g);
            g.check().unwrap_err()
        };
        assert!(bad(|g| g.machine = "pc -drive x".into()).contains("machine"));
        assert!(bad(|g| g.memory_mib = 0).contains("memory_mib"));
        assert!(bad(|g| g.mac = "zz".into()).contains("mac"));
        assert!(bad(|g| g.workload = "warp".into()).contains("workload"));
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = BufReader::new(&b"abc\ndefgh\n"[..]);
        assert_eq!(read_line(&mut r, 4).unwrap().unwrap(), b"abc");
        assert!(read_line(&mut r, 4).is_err());
        let mut r = BufReader::new(&b"x"[..]);
        assert_eq!(read_line(&mut r, 4).unwrap().unwrap(), b"x");
        assert!(read_line(&mut r, 4).unwrap().is_none());
    }
}
