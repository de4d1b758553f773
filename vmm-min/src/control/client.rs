//! The control socket's client: one typed request, one typed reply.

use super::protocol::{Reply, Request, Status, MAX_REPLY_BYTES};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A failed control request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached or the exchange broke.
    #[error("control socket {}: {what}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The reply was not a reply.
    #[error("control socket {}: malformed reply: {message}", path.display())]
    Malformed {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The VMM refused the request.
    #[error("the VMM refused {request}: {message}")]
    Refused {
        /// The request's `cmd`.
        request: &'static str,
        /// The VMM's reason.
        message: String,
    },
    /// The VMM answered with another kind of reply.
    #[error("the VMM answered {request} with a '{got}' reply")]
    Unexpected {
        /// The request's `cmd`.
        request: &'static str,
        /// The reply's tag.
        got: &'static str,
    },
    /// The VMM was not ready in time.
    #[error("control socket {}: not ready within {timeout:?}: {why}", path.display())]
    NotReady {
        /// The socket.
        path: PathBuf,
        /// How long was waited.
        timeout: Duration,
        /// The last thing seen.
        why: String,
    },
}

/// A control socket's client.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

fn cmd(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::Pause => "pause",
        Request::Resume => "resume",
        Request::Verify => "verify",
        Request::Migrate { .. } => "migrate",
        Request::Resolve { .. } => "resolve",
        Request::Quit => "quit",
    }
}

impl Client {
    /// A client of the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req` and returns the reply, waiting at most `timeout` for it.
    /// A refusal is a reply (`Reply::Error`), not an error.
    pub fn call(&self, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
        let io = |what| {
            let path = self.path.clone();
            move |source| ControlError::Io { path, what, source }
        };
        let mut s = UnixStream::connect(&self.path).map_err(io("connecting"))?;
        s.set_read_timeout(Some(timeout)).map_err(io("setting the timeout"))?;
        let mut line = serde_json::to_vec(req).map_err(|e| io("encoding the request")(e.into()))?;
        line.push(b'\n');
        s.write_all(&line).map_err(io("writing the request"))?;
        let mut buf = Vec::new();
        BufReader::new(&s).take(MAX_REPLY_BYTES as u64).read_until(b'\n', &mut buf).map_err(io("reading the reply"))?;
        serde_json::from_slice(&buf).map_err(|e| ControlError::Malformed {
            path: self.path.clone(),
            message: format!("{e} in {:?}", String::from_utf8_lossy(&buf[..buf.len().min(200)])),
        })
    }

    /// [`Self::call`] with a refusal turned into [`ControlError::Refused`].
    pub fn request(&self, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
        match self.call(req, timeout)? {
            Reply::Error { message } => Err(ControlError::Refused { request: cmd(req), message }),
            r => Ok(r),
        }
    }

    /// The VMM's status.
    pub fn status(&self) -> Result<Status, ControlError> {
        match self.request(&Request::Status, Duration::from_secs(5))? {
            Reply::Status(s) => Ok(s),
            other => Err(ControlError::Unexpected { request: "status", got: other.kind() }),
        }
    }

    /// Waits until the socket answers `status`, giving up after `timeout` or
    /// when `gone()` says the process behind it has exited.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut gone: impl FnMut() -> Option<String>,
    ) -> Result<Status, ControlError> {
        let t = Instant::now();
        let mut why = String::from("the socket does not exist yet");
        while t.elapsed() < timeout {
            if let Some(exit) = gone() {
                return Err(ControlError::NotReady { path: self.path.clone(), timeout, why: exit });
            }
            if self.path.exists() {
                match self.status() {
                    Ok(s) => return Ok(s),
                    Err(e) => why = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(ControlError::NotReady { path: self.path.clone(), timeout, why })
    }
}
