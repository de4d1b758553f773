//! End-to-end tests of the HTTP probe against a small HTTP/1.1 server
//! started by each test on 127.0.0.1:0 (std threads, one per connection).
//!
//! The server serves `/file` with `ETag: etag_of(body)`, writes the body in
//! paced chunks (so the probe, not the socket buffers, sees the server's
//! timing), and counts what it actually wrote. It can pause all writes for a
//! window, corrupt a byte of every k-th response, close after each
//! response, omit the ETag, or stall.
//!
//! Timing-sensitive tests run one at a time (a global lock) so they do not
//! compete for the CPU with each other.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use probes::etag::etag_of;
use probes::http::{self, ProbeConfig, ProbeResult};
use results::clock::{mono_ns as monotonic_ns, sleep_until as sleep_until_monotonic};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct ServerOpts {
    body_len: usize,
    chunk: usize,
    /// Sleep between body chunks.
    pace: Duration,
    /// Corrupt one byte of every k-th response (1-based count per server).
    corrupt_every: Option<u64>,
    /// Pause every write for `.1`, starting `.0` after the first request.
    pause: Option<(Duration, Duration)>,
    /// Send `Connection: close` and close after each response.
    close: bool,
    etag: bool,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            body_len: 128 * 1024,
            chunk: 8 * 1024,
            pace: Duration::from_millis(1),
            corrupt_every: None,
            pause: None,
            close: false,
            etag: true,
        }
    }
}

#[derive(Default)]
struct Stats {
    body_bytes_written: AtomicU64,
    responses: AtomicU64,
    corrupted: AtomicU64,
    connections: AtomicU64,
    /// Absolute CLOCK_MONOTONIC start/end of the pause window (0 = not yet).
    pause_start_ns: AtomicU64,
    pause_end_ns: AtomicU64,
}

struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl Server {
    fn start(opts: ServerOpts) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let body: Arc<Vec<u8>> = Arc::new((0..opts.body_len).map(|i| (i.wrapping_mul(7919) >> 3) as u8).collect());
        let st = stats.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let (st, body, opts) = (st.clone(), body.clone(), opts.clone());
                std::thread::spawn(move || serve(conn, &st, &body, &opts));
            }
        });
        Server { addr, stats }
    }

    fn url(&self) -> String {
        format!("http://{}/file", self.addr)
    }

    fn bytes(&self) -> u64 {
        self.stats.body_bytes_written.load(Ordering::SeqCst)
    }
}

fn serve(conn: TcpStream, st: &Stats, body: &[u8], opts: &ServerOpts) {
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut w = conn;
    let etag = etag_of(body);
    loop {
        // Read one request head.
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
            }
        }
        if let Some((after, len)) = opts.pause {
            let now = monotonic_ns();
            let start = now + after.as_nanos() as u64;
            if st.pause_start_ns.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                st.pause_end_ns.store(start + len.as_nanos() as u64, Ordering::SeqCst);
            }
        }
        if !request_line.starts_with("GET /file ") {
            let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let n = st.responses.load(Ordering::SeqCst) + 1;
        let corrupt = opts.corrupt_every.is_some_and(|k| n.is_multiple_of(k));
        let mut head =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n", body.len());
        if opts.etag {
            head.push_str(&format!("ETag: {etag}\r\n"));
        }
        if opts.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        for (i, chunk) in body.chunks(opts.chunk).enumerate() {
            wait_out_pause(st);
            let mut data = chunk.to_vec();
            if corrupt && i == 0 {
                let mid = data.len() / 2;
                data[mid] ^= 0x01;
            }
            if w.write_all(&data).is_err() {
                return;
            }
            st.body_bytes_written.fetch_add(data.len() as u64, Ordering::SeqCst);
            if !opts.pace.is_zero() {
                std::thread::sleep(opts.pace);
            }
        }
        st.responses.fetch_add(1, Ordering::SeqCst);
        if corrupt {
            st.corrupted.fetch_add(1, Ordering::SeqCst);
        }
        if opts.close {
            return;
        }
    }
}

fn wait_out_pause(st: &Stats) {
    let start = st.pause_start_ns.load(Ordering::SeqCst);
    let end = st.pause_end_ns.load(Ordering::SeqCst);
    if start == 0 || end == 0 {
        return;
    }
    let now = monotonic_ns();
    if now >= start && now < end {
        sleep_until_monotonic(end);
    }
}

fn probe(url: String, duration_ms: u64) -> ProbeConfig {
    let mut cfg = ProbeConfig::new(url);
    cfg.duration = Some(Duration::from_millis(duration_ms));
    cfg
}

fn run(cfg: &ProbeConfig) -> ProbeResult {
    let t = Instant::now();
    let r = http::run_blocking(cfg).expect("probe run");
    eprintln!("probe ran {:?}: {} samples, summary {:?}", t.elapsed(), r.samples.len(), r.summary);
    r
}

/// Wait (bounded) until the server's counter stops lagging the probe's.
fn settled_server_bytes(server: &Server, expect: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    while server.bytes() < expect && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(20));
    server.bytes()
}

#[test]
fn samples_arrive_every_interval_with_real_timestamps_and_jitter() {
    let _g = serial();
    let server = Server::start(ServerOpts::default());
    let r = run(&probe(server.url(), 600));
    let n = r.samples.len();
    assert!((30..=90).contains(&n), "{n} samples in 600 ms");
    let mut spacings = Vec::new();
    let mut prev = 0;
    for s in &r.samples {
        assert!(s.t_ns > prev, "timestamps must increase");
        let dt = s.t_ns - prev;
        // jitter is actual spacing minus the nominal 10 ms
        assert_eq!(s.jitter_us, (dt as i64 - 10_000_000) / 1000);
        // rate over the real spacing, in Mbit/s
        let expect = s.bytes as f64 * 8000.0 / dt as f64;
        assert!((s.rate_mbps - expect).abs() <= 1e-6 * expect.max(1.0));
        spacings.push(dt);
        prev = s.t_ns;
    }
    spacings.sort_unstable();
    let median_ms = spacings[spacings.len() / 2] as f64 / 1e6;
    assert!((5.0..=50.0).contains(&median_ms), "median spacing {median_ms} ms");
    let j = r.summary.jitter_us;
    assert!(j.max >= j.min);
    assert!(j.p50_abs < 40_000, "median |jitter| {} µs", j.p50_abs);
    assert!(r.start_monotonic_ns > 0 && r.start_monotonic_ns <= monotonic_ns());
    // CSV has a header and one row per sample
    let mut csv = Vec::new();
    r.write_csv(&mut csv).expect("csv");
    let text = String::from_utf8(csv).expect("utf8");
    assert_eq!(text.lines().count(), n + 1);
    assert_eq!(text.lines().next(), Some("t_s,bytes,rate_mbps,jitter_us"));
}

#[test]
fn byte_counts_add_up_to_what_the_server_sent() {
    let _g = serial();
    let server = Server::start(ServerOpts::default());
    let r = run(&probe(server.url(), 600));
    let s = &r.summary;
    assert!(s.bytes > 0);
    let sent = settled_server_bytes(&server, s.bytes);
    assert_eq!(s.bytes, sent, "probe bytes vs server body bytes written");
    let last = r.samples.last().expect("samples");
    assert_eq!(last.bytes_total, s.bytes, "final sample includes every byte");
    assert_eq!(r.samples.iter().map(|x| x.bytes).sum::<u64>(), s.bytes);
    assert_eq!(s.requests, server.stats.responses.load(Ordering::SeqCst));
    assert_eq!(s.bytes, s.requests * 128 * 1024, "only whole responses");
    assert_eq!(s.verified, s.requests);
    assert_eq!((s.corruptions, s.unverified, s.errors, s.timeouts), (0, 0, 0, 0));
    // four distinct keep-alive connections, never replaced
    assert_eq!(s.connects, 4);
    assert_eq!(s.reconnects, 0);
    assert_eq!(server.stats.connections.load(Ordering::SeqCst), 4);
    assert_eq!(s.aborted_at_stop, 0);
    assert_eq!(s.latency_us.count, s.requests);
    assert!(s.latency_us.p50 > 0 && s.latency_us.p50 <= s.latency_us.p99);
    assert!(s.latency_us.p99 <= s.latency_us.max);
    assert!(s.mean_rate_mbps > 0.0);
}

#[test]
fn a_300ms_server_pause_shows_as_300ms_of_app_downtime() {
    let _g = serial();
    let server = Server::start(ServerOpts {
        pause: Some((Duration::from_millis(300), Duration::from_millis(300))),
        ..ServerOpts::default()
    });
    let r = run(&probe(server.url(), 1000));
    let d = r.summary.app_downtime.expect("a downtime");
    let ms = d.duration_ms();
    assert!((250.0..=450.0).contains(&ms), "app downtime {ms} ms ({d:?})");
    assert!(d.recovered());
    assert!(d.zero_samples >= 15, "{d:?}");

    // The server's pause on the probe's timeline: the gap around its middle.
    let ps = server.stats.pause_start_ns.load(Ordering::SeqCst);
    let pe = server.stats.pause_end_ns.load(Ordering::SeqCst);
    let mid = r.probe_time_ns((ps + pe) / 2).expect("pause after probe start");
    let g = r.gap_around(mid).expect("gap");
    assert_eq!(g, d, "the longest gap is the pause");
    assert_eq!(r.gap_around_monotonic((ps + pe) / 2), Some(g));
    // last byte before the pause start, first byte after its end (± an interval + slack)
    let p0 = r.probe_time_ns(ps).expect("t");
    let p1 = r.probe_time_ns(pe).expect("t");
    assert!(g.last_byte_before_ns <= p0 + 30_000_000, "{g:?} vs pause at {p0}");
    assert!(g.first_byte_after_ns.expect("after") >= p1, "{g:?} vs end {p1}");

    let phases = r.phase_rates(p0, p1);
    assert!(phases.before.mean_mbps > 0.0 && phases.after.mean_mbps > 0.0);
    assert!(phases.during.mean_mbps < phases.before.mean_mbps / 4.0, "{phases:?}");
}

#[test]
fn a_corrupted_byte_is_caught() {
    let _g = serial();
    let server = Server::start(ServerOpts { corrupt_every: Some(3), ..ServerOpts::default() });
    let r = run(&probe(server.url(), 500));
    let s = &r.summary;
    assert!(s.corruptions > 0, "{s:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.corruptions, server.stats.corrupted.load(Ordering::SeqCst));
    assert_eq!(s.verified + s.corruptions, s.requests);
    assert_eq!(s.errors, 0);
}

#[test]
fn closed_connections_count_as_reconnects_and_missing_etag_as_unverified() {
    let _g = serial();
    let server = Server::start(ServerOpts { close: true, etag: false, body_len: 16 * 1024, ..ServerOpts::default() });
    let r = run(&probe(server.url(), 400));
    let s = &r.summary;
    assert!(s.requests > 8, "{s:?}");
    assert_eq!(s.unverified, s.requests);
    assert_eq!(s.verified + s.corruptions, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.connects, server.stats.connections.load(Ordering::SeqCst));
    assert_eq!(s.reconnects, s.connects - 4);
    assert!(s.reconnects > 0);
}

#[test]
fn refused_connections_are_errors_not_bytes() {
    let _g = serial();
    // A port that nothing listens on.
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let r = run(&probe(format!("http://{addr}/file"), 200));
    let s = &r.summary;
    assert_eq!((s.bytes, s.requests, s.connects), (0, 0, 0));
    assert!(s.errors > 0 && s.connect_failures > 0, "{s:?}");
    assert!(s.last_error.is_some());
    assert_eq!(s.app_downtime, None, "no byte ever: nothing to call downtime");
    assert!(!r.samples.is_empty());
}

#[test]
fn a_stalled_server_times_out() {
    let _g = serial();
    let server = Server::start(ServerOpts {
        pause: Some((Duration::from_millis(100), Duration::from_secs(30))),
        ..ServerOpts::default()
    });
    let mut cfg = probe(server.url(), 600);
    cfg.timeout = Duration::from_millis(150);
    cfg.drain = Duration::from_millis(50);
    let t = Instant::now();
    let r = run(&cfg);
    assert!(t.elapsed() < Duration::from_secs(2));
    let s = &r.summary;
    assert!(s.timeouts > 0, "{s:?}");
    assert!(s.errors >= s.timeouts);
    assert!(s.reconnects > 0, "timed-out connections are replaced: {s:?}");
    let d = s.app_downtime.expect("downtime");
    assert!(!d.recovered());
}

#[test]
fn spawned_probe_stops_on_request() {
    let _g = serial();
    let server = Server::start(ServerOpts::default());
    let h = http::spawn(ProbeConfig::new(server.url())).expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.bytes_total() > 0);
    assert!(!h.is_finished());
    let t = Instant::now();
    let r = h.stop_and_join().expect("result");
    assert!(t.elapsed() < Duration::from_secs(1), "stop took {:?}", t.elapsed());
    assert!(r.samples.len() >= 10);
    assert_eq!(r.summary.aborted_at_stop, 0);
}

#[test]
fn blocking_probe_runs_until_the_stop_flag() {
    let _g = serial();
    let server = Server::start(ServerOpts::default());
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(250));
        f.store(true, Ordering::SeqCst);
    });
    // No duration: only the flag ends it.
    let r = http::run_blocking_until(&ProbeConfig::new(server.url()), flag).expect("run");
    let _ = setter.join();
    let end_ms = r.summary.duration_ns as f64 / 1e6;
    assert!((240.0..=1000.0).contains(&end_ms), "ended at {end_ms} ms");
    assert!(r.summary.bytes > 0 && r.summary.verified > 0);
}

// The serializing lock is meant to be held for the whole test; this test's
// runtime is its own, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_probe_runs_until_the_stop_future() {
    let _g = serial();
    let server = Server::start(ServerOpts::default());
    let mut cfg = ProbeConfig::new(server.url());
    cfg.connections = 2;
    let r = http::run(&cfg, tokio::time::sleep(Duration::from_millis(250))).await.expect("run");
    assert_eq!(r.connections, 2);
    assert_eq!(r.summary.connects, 2);
    assert!(r.summary.bytes > 0 && r.summary.corruptions == 0);
    assert!(r.samples.len() >= 15, "{} samples", r.samples.len());
}
