//! Download workers and the counters they share.
//!
//! Each worker owns exactly one HTTP/1.1 keep-alive TCP connection (hyper's
//! low-level `client::conn::http1`) and issues one request at a time on it,
//! so N workers hold N distinct connections. A worker opens a new connection
//! only when it has none: at the start, after a failed or timed-out
//! request, after a non-2xx response, or after the server closed the
//! connection (`Connection: close`, idle close). Every successful TCP
//! connect is counted; those beyond a worker's first are reconnects.
//!
//! (A pooled client such as reqwest was not used: its pool races a fresh
//! connect against the return of the previous connection to the pool, and
//! opened several connections per sequential worker on loopback.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONNECTION, ETAG, HOST};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::etag::{etag_matches, Fnv1a64};

/// Pause after a failed request or connect before the next try, so a
/// refused connection does not spin (well below the default 10 ms interval).
const ERROR_BACKOFF: Duration = Duration::from_millis(5);

/// Where to send requests: parsed from the probe URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Host name or IP (IPv6 without brackets), for connecting.
    pub host: String,
    pub port: u16,
    /// `Host` header value (the URL's authority).
    pub authority: String,
    /// Origin-form request target, e.g. `/file`.
    pub path: String,
}

/// Counters shared by all workers (and read by the sampler).
#[derive(Debug)]
pub(crate) struct Shared {
    /// Cumulative body bytes, updated per received chunk.
    pub bytes: Arc<AtomicU64>,
    pub requests: AtomicU64,
    pub verified: AtomicU64,
    pub corruptions: AtomicU64,
    pub unverified: AtomicU64,
    pub errors: AtomicU64,
    pub http_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub latency_us: Mutex<Histogram<u64>>,
    pub last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            bytes: Arc::new(AtomicU64::new(0)),
            requests: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            corruptions: AtomicU64::new(0),
            unverified: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            http_errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            // 3 significant figures, auto-resizing: only sigfig > 5 is rejected.
            latency_us: Mutex::new(Histogram::new(3).expect("3 significant figures are valid")),
            last_error: Mutex::new(None),
        }
    }

    fn fail(&self, msg: String, timeout: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if timeout {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }

    fn record_latency(&self, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.latency_us.lock() {
            // `record` grows the auto-resizing histogram; it only fails past u64 range.
            if h.record(us).is_err() {
                h.saturating_record(us);
            }
        }
    }
}

/// TCP connection counts of one worker.
#[derive(Debug, Default)]
pub(crate) struct ConnCounter {
    /// Connections established (TCP connect and HTTP/1 handshake done).
    pub connects: AtomicU64,
    /// Connection attempts that failed or timed out.
    pub failures: AtomicU64,
}

enum Outcome {
    /// Body received completely: whether it matched its ETag (None: no
    /// usable ETag), and whether the connection may be reused.
    Complete {
        verdict: Option<bool>,
        keep_alive: bool,
    },
    Failed {
        msg: String,
        timeout: bool,
    },
}

/// Download the target in a loop until `stop` is set; the request in flight
/// when `stop` is set is finished (the caller bounds that with a deadline).
pub(crate) async fn worker(
    target: Arc<Target>,
    shared: Arc<Shared>,
    conns: Arc<ConnCounter>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) {
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    while !stop.load(Ordering::Acquire) {
        // Latency includes connection set-up when one was needed.
        let started = Instant::now();
        if conn.as_ref().is_none_or(|s| s.is_closed()) {
            conn = None;
            match connect(&target, timeout).await {
                Ok(s) => {
                    conns.connects.fetch_add(1, Ordering::Relaxed);
                    conn = Some(s);
                }
                Err((msg, timed_out)) => {
                    conns.failures.fetch_add(1, Ordering::Relaxed);
                    shared.fail(msg, timed_out);
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        // A connection the server closed while idle is replaced without an error.
        if tokio::time::timeout(timeout, sender.ready()).await.map_or(true, |r| r.is_err()) {
            conn = None;
            continue;
        }
        match fetch_once(sender, &target, &shared, timeout).await {
            Outcome::Complete { verdict, keep_alive } => {
                shared.record_latency(started);
                shared.requests.fetch_add(1, Ordering::Relaxed);
                let c = match verdict {
                    Some(true) => &shared.verified,
                    Some(false) => &shared.corruptions,
                    None => &shared.unverified,
                };
                c.fetch_add(1, Ordering::Relaxed);
                if !keep_alive {
                    conn = None;
                }
            }
            Outcome::Failed { msg, timeout } => {
                conn = None;
                shared.fail(msg, timeout);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Open a TCP connection and do the HTTP/1 handshake; the connection is
/// driven by its own task, which ends when the `SendRequest` is dropped.
async fn connect(target: &Target, timeout: Duration) -> Result<SendRequest<Empty<Bytes>>, (String, bool)> {
    let fut = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect to {}: {e}", target.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", target.authority))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok::<_, String>(sender)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|m| (m, false)),
        Err(_) => Err((format!("connect to {}: no connection within {timeout:?}", target.authority), true)),
    }
}

async fn fetch_once(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    shared: &Shared,
    timeout: Duration,
) -> Outcome {
    let timed_out = |what: &str| Outcome::Failed { msg: format!("no {what} within {timeout:?}"), timeout: true };
    let req = match http::Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed { msg: format!("building request: {e}"), timeout: false },
    };
    let resp = match tokio::time::timeout(timeout, sender.send_request(req)).await {
        Err(_) => return timed_out("response"),
        Ok(Err(e)) => return Outcome::Failed { msg: error_chain(&e), timeout: false },
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        shared.http_errors.fetch_add(1, Ordering::Relaxed);
        return Outcome::Failed { msg: format!("HTTP status {}", resp.status()), timeout: false };
    }
    let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let keep_alive = !resp
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let mut body = resp.into_body();
    let mut hash = Fnv1a64::new();
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return timed_out("body data"),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Outcome::Failed { msg: error_chain(&e), timeout: false },
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    shared.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    hash.update(chunk);
                }
            }
        }
    }
    Outcome::Complete { verdict: etag.map(|e| etag_matches(&e, hash.finish())), keep_alive }
}

/// An error with its sources, e.g. "connection error: Connection reset by peer".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
