//! The control socket: a Unix socket speaking line-delimited JSON. Each line
//! is one request (`{"cmd":"status"}`), answered by one line. The socket file
//! is created exclusively and removed when the server is dropped.

use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A request on the control socket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Running, paused, vCPUs, heartbeat.
    Status,
    /// Stop the VM and exit.
    Quit,
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Resume,
    /// Live-migrate to a destination.
    Migrate {
        /// `HOST:PORT` of the destination.
        to: String,
        /// Migration policy (see the migration module); `null` for the default.
        #[serde(default)]
        policy: Value,
        /// Send a RAM digest for the destination to verify.
        #[serde(default)]
        verify: bool,
    },
    /// Ask the guest to verify its `memcheck` region.
    Verify,
}

/// Answers control requests.
pub type Handler = Arc<dyn Fn(ControlRequest) -> Value + Send + Sync>;

/// A listening control socket.
pub struct ControlServer {
    path: PathBuf,
    closed: Arc<AtomicBool>,
    /// Requests being answered; dropping the server waits for them, so a
    /// process that exits after (say) a migration still sends its reply.
    in_flight: Arc<AtomicUsize>,
}

impl ControlServer {
    /// Binds `path` (which must not exist) and serves requests with `handler`
    /// on a background thread, one thread per connection.
    pub fn bind(path: &Path, handler: Handler) -> Result<Self> {
        if path.exists() {
            return Err(Error::Config(format!(
                "control socket path {} already exists; remove it or choose another path",
                path.display()
            )));
        }
        let cannot = |e: std::io::Error| {
            Error::Config(format!(
                "cannot create control socket {}: {e}; check that the directory exists and is writable",
                path.display()
            ))
        };
        // The socket file appears at bind() but accepts connections only
        // after listen(): bind under a temporary name and rename it into
        // place, so a client that sees `path` can always connect.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(cannot)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(cannot(e));
        }
        let closed = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (c, busy) = (closed.clone(), in_flight.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if c.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (h, b) = (handler.clone(), busy.clone());
                    let _ = std::thread::Builder::new().name("control-conn".into()).spawn(move || serve(stream, h, b));
                }
            })
            .map_err(Error::io("starting the control thread"))?;
        Ok(Self { path: path.to_owned(), closed, in_flight })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        // Wake the accept loop so it sees `closed`, then remove the file.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        let t = std::time::Instant::now();
        while self.in_flight.load(Ordering::Acquire) > 0 && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

fn serve(stream: UnixStream, handler: Handler, in_flight: Arc<AtomicUsize>) {
    let Ok(mut out) = stream.try_clone() else { return };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let reply = match serde_json::from_str::<ControlRequest>(&line) {
            Ok(req) => handler(req),
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}; expected e.g. {{\"cmd\":\"status\"}}")}),
        };
        let sent = writeln!(out, "{reply}").and_then(|_| out.flush());
        in_flight.fetch_sub(1, Ordering::AcqRel);
        if sent.is_err() {
            return;
        }
    }
}

/// Sends one request to a control socket and returns the reply, waiting at
/// most `timeout` for it.
pub fn request(path: &Path, req: &Value, timeout: std::time::Duration) -> Result<Value> {
    let mut s = UnixStream::connect(path).map_err(Error::io(format!("connecting to {}", path.display())))?;
    s.set_read_timeout(Some(timeout)).map_err(Error::io("setting the control timeout"))?;
    writeln!(s, "{req}").map_err(Error::io("writing the control request"))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(Error::io("reading the control reply"))?;
    serde_json::from_str(&line).map_err(|e| Error::State(format!("malformed control reply '{line}': {e}")))
}
