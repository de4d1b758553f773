//! End-to-end tests of the guest network: `migbench run --net` boots a guest
//! with a virtio-net NIC on a bridge in fresh namespaces, and plain
//! `std::net::TcpStream`s opened inside the probe namespace talk HTTP to it.
//!
//! Every test checks afterwards that the run's namespaces are gone (the VMM
//! process removes them on SIGTERM); one test fails on purpose half-way and
//! checks the same. These tests need root; without it they say so and pass.

mod common;

use common::{control, incoming_addr, migrate, root_or_skip, wait_socket};
use scenarios::netns::{self, Names};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILE_BYTES: usize = 512 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A guest served by a `migbench run --net` child process.
struct Guest {
    child: Child,
    names: Names,
}

impl Guest {
    fn start(tag: &str) -> Guest {
        Self::start_with(tag, &[])
    }

    fn start_with(tag: &str, extra: &[&str]) -> Guest {
        let id = format!("{tag}{}", &netns::new_run_id()[..4]);
        let names = Names::for_run(&id).expect("valid run id");
        let child = Command::new(env!("CARGO_BIN_EXE_migbench"))
            .args(["run", "--net", "--run-id", &id, "--memory", "64M", "--duration", "300s", "--quiet"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting migbench");
        let mut g = Guest { child, names };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = g.child.try_wait().expect("waiting for migbench") {
                panic!("migbench exited early: {st}");
            }
            let ok = netns::namespace_exists(&g.names.probe_ns)
                && g.probe(|c| c.map(|mut c| c.get("/health").status == 200).unwrap_or(false));
            if ok {
                return g;
            }
            assert!(Instant::now() < deadline, "the guest did not answer /health within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` in the probe namespace with a fresh connection to the guest
    /// (or the connection error).
    fn probe<T: Send>(&self, f: impl FnOnce(std::io::Result<Client>) -> T + Send) -> T {
        let addr = (self.names.guest_ip, 80);
        netns::run_in_netns(&self.names.probe_ns, || f(Client::connect(addr))).expect("entering the probe namespace")
    }

    /// Opens a raw connection in the probe namespace.
    fn connect(&self) -> TcpStream {
        let addr = (self.names.guest_ip, 80);
        let s = netns::run_in_netns(&self.names.probe_ns, || TcpStream::connect_timeout(&addr.into(), IO_TIMEOUT))
            .expect("entering the probe namespace")
            .expect("connecting to the guest");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// Stops the VMM with SIGTERM and checks that the topology is gone.
    fn stop_and_check(mut self) {
        let names = self.names.clone();
        self.terminate();
        assert_gone(&names);
    }

    fn terminate(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn assert_gone(n: &Names) {
    assert!(!netns::namespace_exists(&n.lan_ns), "{} left behind", n.lan_ns);
    assert!(!netns::namespace_exists(&n.probe_ns), "{} left behind", n.probe_ns);
}

struct Resp {
    status: u16,
    etag: Option<u64>,
    close: bool,
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client on one connection.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: (std::net::Ipv4Addr, u16)) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Client { r: BufReader::with_capacity(256 * 1024, s) })
    }

    fn send(&mut self, raw: &[u8]) {
        self.r.get_mut().write_all(raw).expect("sending the request");
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: guest\r\n\r\n").as_bytes());
        self.read_response(true)
    }

    fn read_response(&mut self, with_body: bool) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("reading the status line");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line '{line}'");
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let (mut len, mut etag, mut close) = (0usize, None, false);
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("reading a header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header with a colon");
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().expect("content length"),
                "etag" => etag = u64::from_str_radix(v.trim().trim_matches('"'), 16).ok(),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0u8; if with_body { len } else { 0 }];
        self.r.read_exact(&mut body).expect("reading the body");
        Resp { status, etag, close, body }
    }
}

/// A connection from namespace `ns` to the guest at `addr`, retried while
/// the guest comes up (at most 20 s).
fn connect_from(ns: &str, addr: (std::net::Ipv4Addr, u16)) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match netns::run_in_netns(ns, || Client::connect(addr)).expect("entering the namespace") {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "guest unreachable: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify(r: &Resp) {
    assert_eq!(r.etag, Some(probes::etag::fnv1a64(&r.body)), "body does not match its ETag");
}

#[test]
fn file_download_verifies_against_etag() {
    if !root_or_skip("file_download_verifies_against_etag") {
        return;
    }
    let g = Guest::start("dl");
    g.probe(|c| {
        let mut c = c.expect("connecting");
        let r = c.get("/file");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), FILE_BYTES);
        verify(&r);
        let h = c.get("/health");
        assert_eq!((h.status, h.body.as_slice()), (200, &b"ok\n"[..]));
        verify(&h);
        let n = c.get("/no/such/path");
        assert_eq!(n.status, 404);
        verify(&n);
        c.send(b"HEAD /file HTTP/1.1\r\n\r\n");
        let head = c.read_response(false);
        assert_eq!((head.status, head.etag), (200, r.etag));
        // The same bytes again on the same connection.
        let r2 = c.get("/file?again");
        assert_eq!(r2.body, r.body);
    });
    g.stop_and_check();
}

#[test]
fn keep_alive_sequential_and_concurrent() {
    if !root_or_skip("keep_alive_sequential_and_concurrent") {
        return;
    }
    let g = Guest::start("ka");
    g.probe(|c| {
        let mut c = c.expect("connecting");
        for i in 0..1000 {
            let r = c.get(if i % 50 == 0 { "/file" } else { "/health" });
            assert_eq!(r.status, 200, "request {i}");
            assert!(!r.close, "request {i} closed the connection");
            verify(&r);
        }
    });
    let addr = (g.names.guest_ip, 80);
    let ns = g.names.probe_ns.clone();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                netns::run_in_netns(&ns, || {
                    let mut c = Client::connect(addr).expect("connecting");
                    for i in 0..8 {
                        let r = c.get(if (i + w) % 2 == 0 { "/file" } else { "/health" });
                        assert_eq!(r.status, 200, "worker {w} request {i}");
                        verify(&r);
                    }
                })
                .expect("entering the probe namespace");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a concurrent client failed");
    }
    g.stop_and_check();
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: SO_LINGER reads one `linger` from the pointer.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setting SO_LINGER");
}

/// Sends `raw` on a fresh connection and returns the status of the answer.
fn status_of(g: &Guest, raw: &[u8]) -> u16 {
    let s = g.connect();
    let mut c = Client { r: BufReader::new(s) };
    c.send(raw);
    c.read_response(true).status
}

#[test]
fn bad_clients_leave_the_server_serving() {
    if !root_or_skip("bad_clients_leave_the_server_serving") {
        return;
    }
    let g = Guest::start("bad");
    // Malformed requests: 400, connection closed.
    let long_header = format!("GET /health HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(8000));
    let cases: [&[u8]; 8] = [
        b"garbage\r\n\r\n",
        b"GET /health\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x00\x01\x02\xff\xfe GET / HTTP/1.1\r\n\r\n",
        long_header.as_bytes(),
    ];
    for raw in cases {
        assert_eq!(status_of(&g, raw), 400, "request {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
    }
    assert_eq!(status_of(&g, b"DELETE /file HTTP/1.1\r\n\r\n"), 405);

    // Pipelined requests and a request body are handled in order.
    let mut c = Client { r: BufReader::new(g.connect()) };
    c.send(b"POST /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
    assert_eq!(c.read_response(true).status, 405);
    for _ in 0..2 {
        let r = c.read_response(true);
        assert_eq!(r.status, 200);
        verify(&r);
    }

    // Half-open: a partial request and a silent connection stay open...
    let mut partial = g.connect();
    partial.write_all(b"GET /fi").unwrap();
    let silent = g.connect();
    // ...a client that half-closes after its request still gets its answer...
    let mut hc = g.connect();
    hc.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    hc.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    hc.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "half-closed client got {:?}", String::from_utf8_lossy(&answer));
    // ...and abrupt resets in the middle of downloads leave no trace.
    for _ in 0..4 {
        let mut s = g.connect();
        s.write_all(b"GET /file HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        s.read_exact(&mut buf).unwrap();
        set_linger_zero(&s);
        drop(s);
    }
    // A reset before anything was sent.
    let s = g.connect();
    set_linger_zero(&s);
    drop(s);

    g.probe(|c| {
        let mut c = c.expect("connecting after the bad clients");
        for _ in 0..3 {
            let r = c.get("/file");
            assert_eq!((r.status, r.body.len()), (200, FILE_BYTES));
            verify(&r);
        }
    });
    drop((partial, silent));
    g.stop_and_check();
}

#[test]
fn namespaces_are_removed_after_a_failing_test() {
    if !root_or_skip("namespaces_are_removed_after_a_failing_test") {
        return;
    }
    let mut names = None;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let g = Guest::start("fail");
        names = Some(g.names.clone());
        assert!(netns::namespace_exists(&g.names.lan_ns));
        let r = g.probe(|c| c.expect("connecting").get("/health"));
        assert_eq!(r.status, 200);
        panic!("failing on purpose while the guest serves");
    }));
    assert!(res.is_err(), "the inner test was meant to fail");
    assert_gone(&names.expect("the guest started"));
}

/// Throughput of `/file` downloads (1 and 4 keep-alive connections) and
/// `/health` latency, printed as JSON. Run with
/// `cargo test --release --test net -- --ignored --nocapture net_benchmark`.
#[test]
#[ignore = "a benchmark: run explicitly"]
fn net_benchmark() {
    if !root_or_skip("net_benchmark") {
        return;
    }
    for mtu in ["1500", "9000"] {
        let g = Guest::start_with("bench", &["--mtu", mtu]);
        let (mbps, lat) = bench_one(&g);
        println!(
            "{{\"mtu\":{mtu},\"file_mb_per_s_1conn\":{:.1},\"file_mb_per_s_4conn\":{:.1},\"health_us_median\":{:.1},\"health_us_p99\":{:.1}}}",
            mbps[0], mbps[1], lat[0], lat[1]
        );
        g.stop_and_check();
    }
}

/// Measures `/file` MB/s with 1 and 4 connections, and `/health` median and
/// p99 latency in microseconds.
fn bench_one(g: &Guest) -> ([f64; 2], [f64; 2]) {
    let addr = (g.names.guest_ip, 80);
    let ns = g.names.probe_ns.clone();
    let run = Duration::from_secs(3);
    let mut mbps = [0.0; 2];
    for (slot, conns) in [1usize, 4].into_iter().enumerate() {
        let t0 = Instant::now();
        let workers: Vec<_> = (0..conns)
            .map(|_| {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    netns::run_in_netns(&ns, || {
                        let mut c = Client::connect(addr).expect("connecting");
                        let mut bytes = 0usize;
                        while t0.elapsed() < run {
                            let r = c.get("/file");
                            assert_eq!(r.status, 200);
                            verify(&r);
                            bytes += r.body.len();
                        }
                        bytes
                    })
                    .expect("entering the probe namespace")
                })
            })
            .collect();
        let bytes: usize = workers.into_iter().map(|w| w.join().expect("a download failed")).sum();
        mbps[slot] = bytes as f64 / t0.elapsed().as_secs_f64() / 1e6;
    }
    let mut lat: Vec<f64> = g.probe(|c| {
        let mut c = c.expect("connecting");
        (0..5000)
            .map(|_| {
                let t = Instant::now();
                let r = c.get("/health");
                assert_eq!(r.status, 200);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    });
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (mbps, [pct(0.5), pct(0.99)])
}

/// The device API a migration uses: with a download running on a keep-alive
/// connection, pause the vCPUs and the device, take the device state,
/// restore it, announce (from the VMM and from the guest), resume; the same
/// connection then keeps downloading verified files, and the own-write
/// bitmap saw the device's writes.
#[test]
fn device_pause_state_restore_keeps_the_connection() {
    use vmm_min::devices::net::request_guest_announce;
    if !root_or_skip("device_pause_state_restore_keeps_the_connection") {
        return;
    }
    let id = format!("dev{}", &netns::new_run_id()[..4]);
    let topo = netns::Topology::create(&id, 9000).expect("creating the topology");
    let n = topo.names().clone();
    let mut config: vmm_min::VmConfig = vmm_min::VmConfig {
        memory: 64 << 20,
        vcpus: 1,
        workload: vmm_min::Workload::Idle,
        backend: vmm_min::MemoryBackend::Anon,
        net: None,
    };
    config.net = Some(n.source_nic(FILE_BYTES as u64));
    let vmm = topo.in_lan(|| vmm_min::Vmm::boot(&config, false)).unwrap().expect("booting");
    let net = vmm.machine().net.clone().expect("the VM has a NIC");
    let addr = (n.guest_ip, 80);
    let mut c = connect_from(&topo.names().probe_ns, addr);
    let first = c.get("/file");
    verify(&first);
    vmm_min::memory::take_own_writes(&vmm.machine().vm.mem);
    for round in 0..3 {
        // Start a download, then stop everything in the middle of it.
        c.send(b"GET /file HTTP/1.1\r\n\r\n");
        std::thread::sleep(Duration::from_millis(2));
        vmm.pause().expect("pausing the vCPUs");
        net.pause().expect("pausing the device");
        let st = net.state();
        let json = serde_json::to_string(&st).unwrap();
        let back: vmm_min::devices::net::NetState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        net.restore(&back).expect("restoring the device state");
        net.announce().expect("sending a gratuitous ARP");
        request_guest_announce(vmm.machine()).unwrap();
        net.resume();
        vmm.resume();
        let r = c.read_response(true);
        assert_eq!((r.status, r.body.len()), (200, FILE_BYTES), "round {round}");
        verify(&r);
    }
    let dirty = vmm_min::memory::take_own_writes(&vmm.machine().vm.mem);
    assert!(dirty.iter().any(|w| *w != 0), "device writes must be in the own-write bitmap");
    let s = net.stats();
    assert!(s.rx_frames > 0 && s.tx_frames > 0, "{s:?}");
    drop(c);
    vmm.join();
    drop(vmm);
    topo.remove().expect("removing the topology");
    assert_gone(&n);
}

/// A counter of a link in the lan namespace (`ip netns exec` mounts that
/// namespace's sysfs).
fn link_counter(ns: &str, dev: &str, counter: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &format!("/sys/class/net/{dev}/statistics/{counter}")])
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_keep_alive_download_survives_migration_on_the_same_connection() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    if !root_or_skip("a_keep_alive_download_survives_migration_on_the_same_connection") {
        return;
    }
    let id = format!("mig{}", &netns::new_run_id()[..4]);
    let topo = netns::Topology::create(&id, 9000).expect("topology");
    let names = topo.names().clone();
    let dir = std::env::temp_dir().join(format!("migbench-nettest-{id}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ssock, dsock) = (dir.join("src.sock"), dir.join("dst.sock"));
    let mut src = Command::new(env!("CARGO_BIN_EXE_migbench"))
        .args(["run", "--net", "--net-attach", "--run-id", &id, "--memory", "128M", "--duration", "0", "--quiet"])
        .arg("--control")
        .arg(&ssock)
        .stdout(Stdio::null())
        .spawn()
        .expect("source");
    let mut dst = Command::new(env!("CARGO_BIN_EXE_migbench"))
        .args(["vmm", "--incoming", "127.0.0.1:0", "--net-run-id", &id, "--quiet", "--control"])
        .arg(&dsock)
        .stdout(Stdio::null())
        .spawn()
        .expect("destination");
    let to = incoming_addr(&dsock);
    wait_socket(&ssock);

    // One keep-alive connection from the probe namespace downloads /file
    // over and over, verifying every byte; any error fails the test.
    let addr = (names.guest_ip, 80);
    let client = connect_from(&names.probe_ns, addr);
    let local = client.r.get_ref().local_addr().expect("local addr");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (s2, d2) = (stop.clone(), done.clone());
    let downloader = std::thread::spawn(move || {
        let mut client = client;
        while !s2.load(Ordering::Acquire) {
            let r = client.get("/file");
            assert_eq!(r.status, 200);
            assert!(!r.close, "the server closed the keep-alive connection");
            verify(&r);
            d2.fetch_add(1, Ordering::Release);
        }
        client.r.get_ref().local_addr().expect("local addr")
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = done.load(Ordering::Acquire);
    assert!(before > 0, "no download completed before the migration");

    let reply = migrate(&ssock, &to, results::Policy::default(), true);
    assert_eq!(reply["outcome"], "completed", "{reply:#}");
    assert_eq!(reply["verify"]["ok"], true);
    let migrated_at = done.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(300));
    // The bridge now sends the guest's traffic to the destination's TAP.
    let tx_src = link_counter(&names.lan_ns, &names.tap_src, "tx_packets");
    let tx_dst = link_counter(&names.lan_ns, &names.tap_dst, "tx_packets");
    std::thread::sleep(Duration::from_millis(700));
    let after = done.load(Ordering::Acquire);
    assert!(after > migrated_at, "no download completed after the migration ({migrated_at} -> {after})");
    assert_eq!(
        link_counter(&names.lan_ns, &names.tap_src, "tx_packets"),
        tx_src,
        "the source TAP still carries traffic"
    );
    assert!(link_counter(&names.lan_ns, &names.tap_dst, "tx_packets") > tx_dst, "the destination TAP carries nothing");

    // /health answers from the destination on a new connection.
    let health = netns::run_in_netns(&names.probe_ns, || Client::connect(addr).map(|mut c| c.get("/health").status))
        .expect("netns")
        .expect("connect after migration");
    assert_eq!(health, 200);

    stop.store(true, Ordering::Release);
    let same = downloader.join().expect("the download loop failed");
    assert_eq!(same, local, "the download moved to another connection");
    let code = src.wait().expect("source exit").code();
    assert_eq!(code, Some(0), "the source VMM exits 0 after handing over the guest");
    let _ = control(&dsock, vmm_min::control::Request::Quit);
    let _ = dst.wait();
    let _ = std::fs::remove_dir_all(&dir);
    topo.remove().expect("removing the topology");
    assert_gone(&names);
}

#[test]
fn slowloris_clients_cannot_hold_every_socket() {
    if !root_or_skip("slowloris_clients_cannot_hold_every_socket") {
        return;
    }
    let g = Guest::start("slow");
    // 16 clients (the server's every socket) each send a request head one
    // byte at a time, every 500 ms: never idle, never complete.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held: Vec<_> = (0..16)
        .map(|_| {
            let mut s = g.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for b in b"GET /health HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
                    if stop.load(std::sync::atomic::Ordering::Acquire) || s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();
    // Past the server's head timeout (10 s) the trickling clients are cut
    // off and a fresh client is served again.
    let t = Instant::now();
    let served = loop {
        let ok = g.probe(|c| c.map(|mut c| c.get("/health").status == 200).unwrap_or(false));
        if ok || t.elapsed() > Duration::from_secs(40) {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, std::sync::atomic::Ordering::Release);
    for h in held {
        let _ = h.join();
    }
    assert!(served, "no fresh client was served within 40 s while 16 slow clients trickled");
    g.stop_and_check();
}

/// The client socket's retransmissions so far (`TCP_INFO`'s
/// `tcpi_total_retrans`).
fn total_retrans(s: &TcpStream) -> u32 {
    // SAFETY: an all-zero `tcp_info` is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// A request that reaches the source's TAP while the guest is paused for
/// the switchover travels in the migration stream and is answered on the
/// destination, without the client retransmitting it (a lost frame costs
/// at least Linux's 200 ms minimum retransmission timeout). Source and
/// destination run in this process, each opening its TAP in the run's lan
/// namespace, so the test sends the request from inside the pause
/// (`SourceEvent::Paused`). Guest memory is verified by the digest.
#[test]
fn a_frame_sent_during_the_pause_is_delivered_on_the_destination() {
    use vmm_min::migration::destination::{receive, IncomingOptions};
    use vmm_min::migration::{SourceEvent, SourceOptions};
    if !root_or_skip("a_frame_sent_during_the_pause_is_delivered_on_the_destination") {
        return;
    }
    let id = format!("fr{}", &netns::new_run_id()[..4]);
    let topo = netns::Topology::create(&id, 9000).expect("creating the topology");
    let n = topo.names().clone();
    let config = vmm_min::VmConfig {
        memory: 64 << 20,
        vcpus: 1,
        workload: vmm_min::Workload::Idle,
        backend: vmm_min::MemoryBackend::Anon,
        net: Some(n.source_nic(FILE_BYTES as u64)),
    };
    let vmm = topo.in_lan(|| vmm_min::Vmm::boot(&config, false)).unwrap().expect("booting the source");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listening");
    let to = listener.local_addr().expect("address").to_string();
    let lan = n.lan_ns.clone();
    let opts = IncomingOptions {
        frame_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(60),
        tap: Some(n.tap_dst.clone()),
        ..IncomingOptions::default()
    };
    let dest = std::thread::spawn(move || {
        netns::run_in_netns(&lan, move || receive(&listener, &opts, &()).map_err(|e| e.to_string()))
            .expect("entering the lan namespace")
    });

    let addr = (n.guest_ip, 80);
    let mut c = connect_from(&topo.names().probe_ns, addr);
    assert_eq!(c.get("/health").status, 200);
    let retrans_before = total_retrans(c.r.get_ref());
    let mut sent_in_pause = None;
    let mut events = |ev: SourceEvent| {
        if let SourceEvent::Paused = ev {
            // The guest and its NIC are stopped: the request can only wait
            // on the source's TAP. Give the bridge time to deliver it there.
            c.send(b"GET /health HTTP/1.1\r\nHost: guest\r\n\r\n");
            std::thread::sleep(Duration::from_millis(20));
            sent_in_pause = Some(Instant::now());
        }
    };
    let opts = SourceOptions { verify: true, ..SourceOptions::default() };
    let stats = vmm_min::migration::migrate(&vmm, &to, &results::Policy::default(), &opts, &mut events);
    assert_eq!(stats.outcome, results::Outcome::Completed, "{stats:?}");
    assert!(sent_in_pause.is_some(), "the source never paused");
    assert_eq!(stats.verify.as_ref().map(|v| v.ok), Some(true), "guest memory differs on the destination");
    let (dst, _report) = dest.join().expect("the destination thread").expect("the incoming migration");

    let r = c.read_response(true);
    assert_eq!(r.status, 200, "the request sent during the pause is answered");
    assert_eq!(
        total_retrans(c.r.get_ref()) - retrans_before,
        0,
        "the client had to retransmit: the frame that reached the source during the pause was lost"
    );
    let s = dst.machine().net.as_ref().expect("the destination has a NIC").stats();
    assert!(s.rx_frames > 0, "the destination delivered nothing: {s:?}");
    // The connection goes on on the destination.
    assert_eq!(c.get("/health").status, 200);

    drop(c);
    vmm.join();
    drop(vmm);
    dst.join();
    drop(dst);
    topo.remove().expect("removing the topology");
    assert_gone(&n);
}
