//! Bounded time on the migration socket: every read and write waits at
//! most a per-call timeout, and never past the phase's deadline, so a peer
//! that stops reading, or trickles a byte just before each timeout, cannot
//! hold either side for ever. The two halves of a connection (reader and
//! writer) share one [`Deadline`].

use results::clock::mono_ns;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A deadline on `CLOCK_MONOTONIC`, shared by the halves of a connection.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// No deadline yet.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the deadline `after` from now.
    pub fn set_in(&self, after: Duration) {
        let ns = mono_ns().saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
        self.0.store(ns.max(1), Ordering::Release);
    }

    /// Removes the deadline.
    pub fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Time left (`None`: no deadline); an error once it has passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.0.load(Ordering::Acquire) {
            0 => Ok(None),
            d => match d.checked_sub(mono_ns()) {
                Some(ns) if ns > 0 => Ok(Some(Duration::from_nanos(ns))),
                _ => Err(io::Error::new(io::ErrorKind::TimedOut, "the phase's deadline passed")),
            },
        }
    }
}

/// One half of a migration connection with bounded waits.
#[derive(Debug)]
pub struct TimedStream {
    stream: TcpStream,
    per_call: Duration,
    deadline: Deadline,
}

impl TimedStream {
    /// Wraps `stream`: each read or write waits at most `per_call`, and
    /// never past `deadline`.
    pub fn new(stream: TcpStream, per_call: Duration, deadline: Deadline) -> Self {
        Self { stream, per_call, deadline }
    }

    /// Changes the per-call timeout.
    pub fn set_per_call(&mut self, per_call: Duration) {
        self.per_call = per_call;
    }

    fn wait(&self) -> io::Result<Duration> {
        let t = match self.deadline.left()? {
            Some(left) => left.min(self.per_call),
            None => self.per_call,
        };
        Ok(t.max(Duration::from_millis(1)))
    }
}

fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the peer did not keep up: timed out")
    } else {
        e
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.wait()?))?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.wait()?))?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_trickling_peer_is_cut_off_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let peer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            for _ in 0..50 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (s, _) = l.accept().expect("accept");
        let d = Deadline::none();
        d.set_in(Duration::from_millis(200));
        let mut r = TimedStream::new(s, Duration::from_millis(100), d);
        let t = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let err = r.read_exact(&mut buf).expect_err("the deadline ends the read");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_millis(600), "{:?}", t.elapsed());
        drop(r);
        let _ = peer.join();
    }
}
