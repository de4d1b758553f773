//! The guest's end of the ttcp table (`POST /ttcp`, `GET /ttcp`): one raw
//! TCP transfer with the host at a time, with the same code as the native
//! rows (`bench_suites::ttcp`: 128 KiB socket buffers, 8 KiB writes,
//! timed from the first byte to the last at the receiver).
//!
//! `Send`: a thread connects to the host's receiver and sends; the host
//! times it. `Receive`: the listener is bound before the reply (so the host
//! may connect as soon as it has it), then a thread accepts one connection
//! and times what it receives; `GET /ttcp` gives the count and the time.
//! Before either, the NIC's MTU is set to the request's.

use bench_suites::ttcp;
use linux_guest::api::{BenchState, TtcpRequest, TtcpStatus, TTCP_PORT};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the receiver waits for the host to connect.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The MTUs a request may set (the ttcp table's, and jumbo frames).
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=9000;

/// The transfer shared by the HTTP handlers.
pub struct TtcpRunner {
    nic: String,
    status: Mutex<TtcpStatus>,
}

impl TtcpRunner {
    /// A runner for the NIC named `nic`.
    pub fn new(nic: String) -> Self {
        TtcpRunner {
            nic,
            status: Mutex::new(TtcpStatus {
                state: BenchState::Idle,
                request: None,
                bytes: 0,
                elapsed_ns: 0,
                error: None,
            }),
        }
    }

    /// The current (or last) transfer.
    pub fn status(&self) -> TtcpStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn finish(&self, result: Result<ttcp::Transfer, String>) {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.state = BenchState::Done;
        match result {
            Ok(t) => {
                st.bytes = t.bytes;
                st.elapsed_ns = t.elapsed.as_nanos() as u64;
            }
            Err(e) => st.error = Some(e),
        }
    }

    /// Starts `req`; `Err` (with why) while a transfer runs or if it cannot
    /// start (a bad MTU, the port taken).
    pub fn start(self: &Arc<Self>, req: TtcpRequest) -> Result<TtcpStatus, String> {
        let (TtcpRequest::Send { mtu, .. } | TtcpRequest::Receive { mtu, .. }) = req;
        if !MTU_RANGE.contains(&mtu) {
            return Err(format!("mtu {mtu}: expected {} to {}", MTU_RANGE.start(), MTU_RANGE.end()));
        }
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if st.state == BenchState::Running {
                return Err("a ttcp transfer is in progress; GET /ttcp until it is done".into());
            }
            *st = TtcpStatus {
                state: BenchState::Running,
                request: Some(req.clone()),
                bytes: 0,
                elapsed_ns: 0,
                error: None,
            };
        }
        let ready = set_mtu(&self.nic, mtu).and_then(|()| match req {
            TtcpRequest::Receive { .. } => ttcp::listen(SocketAddr::from(([0, 0, 0, 0], TTCP_PORT)))
                .map(Some)
                .map_err(|e| format!("listening on port {TTCP_PORT}: {e}")),
            TtcpRequest::Send { .. } => Ok(None),
        });
        let listener = match ready {
            Ok(l) => l,
            Err(e) => {
                self.finish(Err(e.clone()));
                return Err(e);
            }
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("ttcp".into()).spawn(move || {
            let result = match (req, listener) {
                (TtcpRequest::Send { to, bytes, .. }, _) => send(to, bytes),
                (TtcpRequest::Receive { .. }, Some(l)) => receive(&l),
                (TtcpRequest::Receive { .. }, None) => Err("no listener".into()),
            };
            me.finish(result);
        });
        if let Err(e) = spawned {
            let e = format!("cannot start the ttcp thread: {e}");
            self.finish(Err(e.clone()));
            return Err(e);
        }
        Ok(self.status())
    }
}

fn set_mtu(nic: &str, mtu: u32) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["link", "set", "dev", nic, "mtu", &mtu.to_string()])
        .output()
        .map_err(|e| format!("running `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("setting {nic}'s MTU to {mtu}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn send(to: SocketAddr, bytes: u64) -> Result<ttcp::Transfer, String> {
    let mut c = ttcp::connect(to).map_err(|e| format!("connecting to {to}: {e}"))?;
    let t = Instant::now();
    ttcp::send(&mut c, bytes).map_err(|e| format!("sending: {e}"))?;
    c.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    Ok(ttcp::Transfer { bytes, elapsed: t.elapsed() })
}

fn receive(l: &TcpListener) -> Result<ttcp::Transfer, String> {
    let mut c = ttcp::accept_within(l, ACCEPT_TIMEOUT).map_err(|e| format!("waiting for the host: {e}"))?;
    ttcp::receive_all(&mut c).map_err(|e| format!("receiving: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with an MTU no NIC takes is refused before anything is
    /// changed or started, and the runner stays usable.
    #[test]
    fn an_impossible_mtu_is_refused() {
        let r = Arc::new(TtcpRunner::new("no-such-nic".into()));
        for mtu in [0, 67, 9001] {
            let e = r.start(TtcpRequest::Receive { bytes: 1, mtu }).unwrap_err();
            assert!(e.contains(&format!("mtu {mtu}")), "{e}");
        }
        assert_eq!(r.status().state, BenchState::Idle);
    }
}
