//! The migration socket's send queue, and a round's rate from the bytes
//! that actually left it.
//!
//! A `write` into a TCP socket returns once the kernel holds the bytes, not
//! once they crossed the link: a round of a few MB on a shaped 1 Gbit/s
//! link "sends" the socket buffer's worth of data in no time and then ends,
//! which overstated its rate by up to 2× (issue 16). [`SendQueue::pending`]
//! asks the kernel how much it still holds (`SIOCOUTQ`: written, not yet
//! acknowledged by the peer), and [`data_left`] turns a round's written
//! bytes and the queue at its start and end into the page data that
//! crossed the link during the round.
//!
//! `SIOCOUTQ` is asked with `libc::ioctl`: neither std, socket2 nor rustix
//! wraps it.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// A handle on the migration socket for queue queries only: a clone of the
/// `TcpStream` (the same socket), because the stream itself may sit inside
/// a TLS session.
pub struct SendQueue(TcpStream);

impl SendQueue {
    /// A query handle on `stream`'s socket.
    pub fn new(stream: &TcpStream) -> io::Result<Self> {
        stream.try_clone().map(Self)
    }

    /// Bytes written into the socket that the peer has not acknowledged yet
    /// (unsent, or in flight on the link). With TLS these are record bytes.
    pub fn pending(&self) -> io::Result<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) on a TCP socket writes one
        // c_int through the pointer, which points at `n`; the fd is open for
        // the life of `self.0`.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The page data that crossed the link during a round which wrote
/// `written` stream bytes (frame headers and page tables included), `data`
/// of them page data, while the socket's queue held `queued_at_start`
/// bytes at its start and `queued_at_end` at its end. What left is
/// `written + queued_at_start - queued_at_end` stream bytes (an earlier
/// round's leftovers count for the round in which they leave), of which
/// page data is taken to be the round's own share, `data / written`: an
/// idle guest's round 0 is a third page tables, which carry no data.
pub fn data_left(data: u64, written: u64, queued_at_start: u64, queued_at_end: u64) -> f64 {
    if written == 0 {
        return 0.0;
    }
    let left = (written + queued_at_start).saturating_sub(queued_at_end);
    left as f64 * (data as f64 / written as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn queued_bytes_count_for_the_round_they_leave_in() {
        assert_eq!(data_left(10_000, 10_000, 0, 4_000), 6_000.0);
        assert_eq!(data_left(10_000, 10_000, 4_000, 0), 14_000.0);
        // Page tables are a share of the stream, not page data.
        assert_eq!(data_left(7_500, 10_000, 0, 2_000), 6_000.0);
        assert_eq!(data_left(0, 0, 0, 0), 0.0);
        assert_eq!(data_left(100, 100, 0, 500), 0.0, "never negative");
    }

    #[test]
    fn a_socket_nobody_reads_holds_what_was_written_and_drains_when_read() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut rx, _) = l.accept().unwrap();
        let q = SendQueue::new(&tx).unwrap();
        assert_eq!(q.pending().unwrap(), 0);
        tx.write_all(&[7u8; 4096]).unwrap();
        // Loopback acknowledges at once, before anyone reads.
        let t = std::time::Instant::now();
        while q.pending().unwrap() > 0 && t.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(q.pending().unwrap(), 0);
        // Fill the receiver's window: what stays in the sender's queue is
        // reported until the receiver reads.
        tx.set_nonblocking(true).unwrap();
        let mut written = 4096u64;
        let chunk = [1u8; 65536];
        loop {
            match tx.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let held = q.pending().unwrap();
        assert!(held > 0 && held < written, "{held} of {written}");
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        while read < written {
            read += rx.read(&mut buf).unwrap() as u64;
        }
        let t = std::time::Instant::now();
        while q.pending().unwrap() > 0 && t.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(q.pending().unwrap(), 0);
    }
}
