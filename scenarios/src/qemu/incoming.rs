//! `migbench qemu-incoming`'s server: a destination for QEMU migrations
//! from another machine, driven over the control channel of
//! [`super::remote`]. One worker thread owns the destination QEMU (it is
//! started from there, so `PR_SET_PDEATHSIG` ties it to a thread that lives
//! as long as the process) and answers one request at a time; each
//! connection has a thread that does its TLS and reads its lines, so a
//! malformed or slow client never reaches the QEMU: a line that does not
//! parse gets an `error` reply and changes nothing.
//!
//! Safety of the one copy: once `resume` has run the guest here, `abort`
//! and `start` are refused (this QEMU is then the only copy of the guest).

use super::driver::{HostNic, QemuConfig, QemuSystem};
use super::remote::{read_line, write_line, DestinationStatus, QemuState, Reply, Request, Stream, MAX_REQUEST_BYTES};
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;
use vmm_min::migration::tls::TlsCredentials;

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `digests` and `resume` wait for the migration to be loaded.
const LOAD_WAIT: Duration = Duration::from_secs(60);

/// How the destination runs its QEMUs.
#[derive(Debug, Clone)]
pub struct IncomingConfig {
    /// The binary, kernel, initrd and extra arguments of this machine (the
    /// source's machine type, RAM and vCPUs replace the rest).
    pub qemu: QemuConfig,
    /// The TAP the guest's NIC uses here.
    pub tap: String,
    /// The network namespace QEMU and its TAP live in (`None`: this one).
    pub netns: Option<String>,
    /// Where QEMU listens for the migration (`ADDR:PORT`, port 0: any).
    pub listen: String,
    /// The credentials (and their directory) of the control channel and
    /// of QEMU's stream; `None` only on loopback.
    pub tls: Option<TlsCredentials>,
    /// A directory for the QEMU's files (removed with each QEMU).
    pub dir: PathBuf,
}

/// A request and where its reply goes.
type Job = (Request, mpsc::Sender<Reply>);

/// Serves `listener` until the process ends.
pub fn serve(listener: TcpListener, cfg: IncomingConfig) -> std::io::Result<()> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let worker_cfg = cfg.clone();
    std::thread::Builder::new().name("qemu-incoming".into()).spawn(move || worker(worker_cfg, rx))?;
    for conn in listener.incoming() {
        let tcp = match conn {
            Ok(t) => t,
            Err(e) => {
                eprintln!("migbench: qemu-incoming: accept: {e}");
                continue;
            }
        };
        let jobs = jobs.clone();
        let tls = cfg.tls.clone();
        std::thread::spawn(move || {
            let peer = tcp.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
            if let Err(e) = connection(tcp, tls.as_ref(), &jobs) {
                eprintln!("migbench: qemu-incoming: connection from {peer}: {e}");
            }
        });
    }
    Ok(())
}

/// One connection: TLS when configured, then request lines until it closes.
fn connection(tcp: TcpStream, tls: Option<&TlsCredentials>, jobs: &mpsc::Sender<Job>) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match tls {
        Some(creds) => {
            let conn = creds.server().map_err(std::io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut conn = BufReader::new(stream);
    loop {
        let line = match read_line(&mut conn, MAX_REQUEST_BYTES) {
            Ok(Some(l)) => l,
            // A client that closes without TLS's close_notify ends too.
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                // Too long: say so, and close (the rest of it is unread).
                let _ = write_line(conn.get_mut(), &error(format!("{e}; a request is one JSON line")));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                let (tx, rx) = mpsc::channel();
                jobs.send((req, tx)).map_err(|_| std::io::Error::other("the worker ended"))?;
                rx.recv().unwrap_or_else(|_| error("the request's worker ended without a reply"))
            }
            Err(e) => error(format!(
                "malformed request: {e}; expected one of {{\"cmd\":\"start\",\"guest\":{{..}}}}, status, digests, resume, abort"
            )),
        };
        write_line(conn.get_mut(), &reply)?;
    }
}

fn error(message: impl Into<String>) -> Reply {
    Reply::Error { message: message.into() }
}

/// The destination QEMU and whether it runs the guest.
struct Destination {
    sys: QemuSystem,
    resumed: bool,
}

fn worker(cfg: IncomingConfig, jobs: mpsc::Receiver<Job>) {
    let mut dest: Option<Destination> = None;
    let mut runs = 0u32;
    for (req, reply) in jobs {
        let r = handle(&cfg, &mut dest, &mut runs, req);
        let _ = reply.send(r);
    }
}

fn handle(cfg: &IncomingConfig, dest: &mut Option<Destination>, runs: &mut u32, req: Request) -> Reply {
    match req {
        Request::Start { guest } => {
            if let Err(why) = guest.check() {
                return error(why);
            }
            if let Some(d) = dest.as_ref() {
                return error(format!(
                    "a destination QEMU (pid {}) is already here{}; {}",
                    d.sys.destination_pid().unwrap_or(0),
                    if d.resumed { " and runs the guest" } else { "" },
                    if d.resumed { "stop this qemu-incoming first" } else { "send abort first" }
                ));
            }
            let mut q = cfg.qemu.clone();
            q.machine = guest.machine.clone();
            q.accel = guest.accel;
            q.memory_mib = guest.memory_mib;
            q.smp = guest.smp;
            let nic = HostNic {
                tap: cfg.tap.clone(),
                ip: guest.ip,
                prefix: guest.prefix,
                mac: guest.mac.clone(),
                file_bytes: guest.file_bytes,
            };
            let workload = match guest.workload.parse() {
                Ok(w) => w,
                Err(e) => return error(format!("guest.workload: {e}")),
            };
            *runs += 1;
            let dir = cfg.dir.join(format!("qemu-{runs}"));
            let started = QemuSystem::on_host(q, &nic, cfg.netns.clone(), workload, &dir).and_then(|mut sys| {
                let tls_dir = cfg.tls.as_ref().map(|c| c.dir().to_path_buf());
                let listen = sys.start_incoming(&cfg.listen, true, tls_dir.as_deref())?;
                Ok((sys, listen))
            });
            match started {
                Ok((sys, listen)) => {
                    eprintln!(
                        "migbench: qemu-incoming: destination QEMU (pid {}) waits on {listen}{} for a {} MiB guest",
                        sys.destination_pid().unwrap_or(0),
                        if cfg.tls.is_some() { " over TLS" } else { "" },
                        guest.memory_mib
                    );
                    *dest = Some(Destination { sys, resumed: false });
                    Reply::Started { listen, tls: cfg.tls.is_some() }
                }
                Err(e) => error(format!("starting the destination QEMU: {e}")),
            }
        }
        Request::Status => Reply::Status(DestinationStatus {
            qemu: dest.as_ref().map(|d| {
                let (running, state) = d.sys.status(true).unwrap_or_else(|e| (false, format!("unknown ({e})")));
                QemuState { pid: d.sys.destination_pid().unwrap_or(0), running, state, resumed: d.resumed }
            }),
        }),
        Request::Digests => match dest.as_ref() {
            None => error("no destination QEMU here: send start first"),
            Some(d) if d.resumed => error("the guest runs here already: digests are taken while it is paused"),
            Some(d) => match d.sys.destination_digests(LOAD_WAIT) {
                Ok(p) => Reply::Digests(p),
                Err(e) => error(format!("page digests: {e}")),
            },
        },
        Request::Resume => match dest.as_mut() {
            None => error("no destination QEMU here: send start first"),
            Some(d) => match d.sys.destination_resume(LOAD_WAIT) {
                Ok(()) => {
                    d.resumed = true;
                    eprintln!("migbench: qemu-incoming: the guest runs here");
                    Reply::Resumed
                }
                Err(e) => error(format!("resume: {e}")),
            },
        },
        Request::Abort => match dest.as_ref() {
            Some(d) if d.resumed => error(
                "the guest runs here (it was resumed): it is the only copy, so abort is refused; stop this qemu-incoming to end it",
            ),
            Some(_) => {
                *dest = None;
                eprintln!("migbench: qemu-incoming: destination QEMU killed (abort)");
                Reply::Aborted { killed: true }
            }
            None => Reply::Aborted { killed: false },
        },
    }
}
