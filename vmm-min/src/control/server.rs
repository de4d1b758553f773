//! The listening control socket. The socket file is created with mode 0600
//! under a temporary name and renamed into place once it listens, so a
//! client that sees the path can always connect; it is removed when the
//! server is dropped. Limits keep a client from hurting the VMM: a request
//! line of at most [`MAX_REQUEST_BYTES`], at most [`MAX_CONNECTIONS`] open
//! connections, and an idle connection closed after [`IDLE_TIMEOUT`].

use super::protocol::{Reply, Request, MAX_REQUEST_BYTES};
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; one more is answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers control requests.
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

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
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(cannot)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(cannot(e));
        }
        let closed = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (c, busy) = (closed.clone(), in_flight.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if c.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        open.fetch_sub(1, Ordering::AcqRel);
                        let _ = reply(&mut stream, &Reply::error("too many control connections; close one and retry"));
                        continue;
                    }
                    let (h, b, o) = (handler.clone(), busy.clone(), open.clone());
                    let spawned = std::thread::Builder::new().name("control-conn".into()).spawn(move || {
                        serve(stream, &h, &b);
                        o.fetch_sub(1, Ordering::AcqRel);
                    });
                    if spawned.is_err() {
                        open.fetch_sub(1, Ordering::AcqRel);
                    }
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
        while self.in_flight.load(Ordering::Acquire) > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn reply(out: &mut UnixStream, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// What reading one request line gave.
enum Line {
    Request(Vec<u8>),
    TooLong,
    Closed,
}

/// Reads up to a newline, never more than [`MAX_REQUEST_BYTES`].
fn read_line(r: &mut impl BufRead) -> Line {
    let mut buf = Vec::new();
    match r.take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut buf) {
        Ok(0) => Line::Closed,
        Ok(_) if buf.last() == Some(&b'\n') => Line::Request(buf),
        Ok(_) if buf.len() > MAX_REQUEST_BYTES => Line::TooLong,
        // End of stream without a newline: the last request.
        Ok(_) => Line::Request(buf),
        Err(e) if e.kind() == ErrorKind::Interrupted => Line::Request(Vec::new()),
        Err(_) => Line::Closed,
    }
}

fn serve(stream: UnixStream, handler: &Handler, in_flight: &AtomicUsize) {
    let Ok(mut out) = stream.try_clone() else { return };
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err() {
        return;
    }
    let mut input = BufReader::new(stream);
    loop {
        let line = match read_line(&mut input) {
            Line::Request(l) => l,
            Line::TooLong => {
                let msg = format!("request longer than {MAX_REQUEST_BYTES} bytes; connection closed");
                let _ = reply(&mut out, &Reply::error(msg));
                return;
            }
            Line::Closed => return,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let answer = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handler(req),
            Err(e) => Reply::error(format!(
                "bad request: {e}; expected one JSON object per line, e.g. {{\"cmd\":\"status\"}}"
            )),
        };
        let sent = reply(&mut out, &answer);
        in_flight.fetch_sub(1, Ordering::AcqRel);
        if sent.is_err() {
            return;
        }
    }
}
