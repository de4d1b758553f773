//! The typed QMP client: the `qapi` crate (`qapi-qmp`'s generated command
//! and reply types over its tokio stream), on a Unix socket.
//!
//! A task of the driver's runtime reads the socket continuously: replies go
//! to their pending command, events are stamped with the host's monotonic
//! clock **on receipt** and queued, so the STOP/RESUME times do not depend on
//! when the driver next looks.
//!
//! `qapi-qmp` 0.15 is generated from a newer QEMU schema than Debian's 7.2;
//! every command and reply used here has the same shape in 7.2 (checked by
//! the QEMU tests, which run against the installed QEMU).

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket did not appear or refused.
    #[error("connecting to QMP at {path}: {msg}")]
    Connect {
        /// The socket path.
        path: String,
        /// What failed.
        msg: String,
    },
    /// A command failed (QEMU's error, or the connection's).
    #[error("QMP {command}: {msg}")]
    Command {
        /// The command name.
        command: &'static str,
        /// QEMU's message.
        msg: String,
    },
    /// No reply in time.
    #[error("QMP {0}: no reply within the deadline")]
    Timeout(&'static str),
}

/// An event and when it arrived (`CLOCK_MONOTONIC`, ns).
#[derive(Debug, Clone)]
pub struct TimedEvent {
    /// Receipt time.
    pub mono_ns: u64,
    /// The event.
    pub event: qmp::Event,
}

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A negotiated QMP connection.
pub struct Qmp {
    service: Service,
    events: mpsc::UnboundedReceiver<TimedEvent>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    /// Connects to the QMP socket at `path`, waiting up to `wait` for QEMU to
    /// create it, and negotiates capabilities.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Qmp, QmpError> {
        let err = |msg: String| QmpError::Connect { path: path.display().to_string(), msg };
        let t = Instant::now();
        let stream = loop {
            match QmpStreamTokio::open_uds(path).await {
                Ok(s) => break s,
                Err(e) if t.elapsed() < wait => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(err(format!("{e} (after {wait:?})"))),
            }
        };
        let stream = stream.negotiate().await.map_err(|e| err(format!("negotiating capabilities: {e}")))?;
        let (service, mut events) = stream.into_parts();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(ev) = events.next().await {
                let mono_ns = results::clock::mono_ns();
                match ev {
                    Ok(event) => {
                        if tx.send(TimedEvent { mono_ns, event }).is_err() {
                            break;
                        }
                    }
                    // An event this schema cannot decode: skip it, keep reading.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
                    Err(_) => break,
                }
            }
        });
        Ok(Qmp { service, events: rx, reader })
    }

    /// Runs one typed command.
    pub async fn execute<C>(&self, command: C) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand + qapi::Command,
    {
        let name = <C as qapi::Command>::NAME;
        match tokio::time::timeout(COMMAND_TIMEOUT, self.service.execute(command)).await {
            Err(_) => Err(QmpError::Timeout(name)),
            Ok(Err(e)) => Err(QmpError::Command { command: name, msg: e.to_string() }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// The events received so far and not yet taken.
    pub fn take_events(&mut self) -> Vec<TimedEvent> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            v.push(e);
        }
        v
    }

    /// Waits up to `limit` for an event that `want` accepts; the events
    /// skipped on the way are returned too, in order.
    pub async fn wait_event(
        &mut self,
        limit: Duration,
        want: impl Fn(&qmp::Event) -> bool,
    ) -> (Option<TimedEvent>, Vec<TimedEvent>) {
        let mut skipped = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if want(&e.event) => return (Some(e), skipped),
                Ok(Some(e)) => skipped.push(e),
                Ok(None) | Err(_) => return (None, skipped),
            }
        }
    }
}
