//! The ends of the ttcp table (`migbench bench tcp`): where each system's
//! sender and receiver run. The transfer method is `bench_suites::ttcp`;
//! this module owns the namespaces and the VM around it.
//!
//! - **native:** two network namespaces of the run's topology
//!   (`scenarios::netns`, named after the run id, removed on exit, error and
//!   Ctrl-C) joined by its veth pair at the row's MTU; the lan end is taken
//!   off the bridge and given an address, so the path is the veth alone.
//!   The system's end is the lan namespace (where a guest would be), its
//!   peer the probe namespace.
//! - **vmm-min:** the built-in guest on the topology's bridge and TAP at the
//!   row's MTU, through virtio-net; the host end in the probe namespace. TX:
//!   `GET /file` of the transfer's size; RX: `POST /upload`, which the guest
//!   discards and counts.
//! - **qemu:** the QEMU Linux guest on the same kind of topology; its agent
//!   runs the guest's raw TCP end (`POST /ttcp`, `linux_guest::api`), with
//!   the native rows' code, and sets the guest's NIC to the row's MTU; TX
//!   timed at the host receiver, RX at the guest receiver.
//!
//! Every row that cannot run (not root, a failed boot) is n/a with why.

use bench_suites::ttcp::{self, Direction, Transfer, TtcpOptions};
use bench_suites::Row;
use linux_guest::api::{BenchState, TtcpRequest, TtcpStatus};
use results::bench::SystemRows;
use scenarios::netns::{self, Names, Topology};
use scenarios::qemu::driver::{QemuConfig, QemuSystem};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The TCP port of the native receiver.
const PORT: u16 = 5001;

/// Native: between two namespaces over a veth of each MTU.
pub fn native(run_id: &str, opts: &TtcpOptions, progress: &mut dyn FnMut(&str)) -> SystemRows {
    let what = "native: two threads of this process in two network namespaces made for the run, joined by a veth \
                pair of the row's MTU (no bridge); raw TCP as ttcp, timed at the receiver; TX: the lan namespace \
                sends to the probe namespace, RX: the reverse";
    let mut rows = Vec::new();
    for mtu in ttcp::MTUS {
        match native_topology(&format!("{run_id}n{mtu}"), mtu) {
            Ok((topo, lan_ip)) => {
                let n = topo.names().clone();
                for dir in Direction::BOTH {
                    progress(&format!("native {}", ttcp::row_id(dir, mtu)));
                    // The receiver's namespace and address, and the sender's namespace.
                    let (rx_ns, rx_ip, tx_ns) = match dir {
                        Direction::Tx => (&n.probe_ns, n.probe_ip, &n.lan_ns),
                        Direction::Rx => (&n.lan_ns, lan_ip, &n.probe_ns),
                    };
                    rows.push(native_row(dir, mtu, what, opts, rx_ns, SocketAddr::from((rx_ip, PORT)), tx_ns));
                }
                drop(topo);
            }
            Err(e) => {
                rows.extend(Direction::BOTH.map(|d| {
                    Row::na(
                        &ttcp::row_id(d, mtu),
                        &ttcp::row_label(d, mtu),
                        bench_suites::UNIT_MIBITS,
                        e.clone(),
                        what.into(),
                    )
                }));
            }
        }
    }
    SystemRows { system: "native".into(), label: "native".into(), rows }
}

fn native_row(
    dir: Direction,
    mtu: u32,
    what: &str,
    opts: &TtcpOptions,
    rx_ns: &str,
    rx_addr: SocketAddr,
    tx_ns: &str,
) -> Row {
    let listener = match netns::run_in_netns(rx_ns, || ttcp::listen(rx_addr)) {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return na(dir, mtu, format!("listening on {rx_addr} in {rx_ns}: {e}"), what),
        Err(e) => return na(dir, mtu, e.to_string(), what),
    };
    let mut connect =
        || netns::run_in_netns(tx_ns, || ttcp::connect(rx_addr)).map_err(std::io::Error::other).and_then(|r| r);
    ttcp::measure_row(dir, mtu, what, opts, &mut || ttcp::pair_transfer(&listener, &mut connect, opts.bytes))
}

fn na(dir: Direction, mtu: u32, reason: String, what: &str) -> Row {
    Row::na(&ttcp::row_id(dir, mtu), &ttcp::row_label(dir, mtu), bench_suites::UNIT_MIBITS, reason, what.to_owned())
}

/// The run's topology at `mtu`, with the lan end of the veth taken off the
/// bridge and addressed; returns it and that address.
fn native_topology(run_id: &str, mtu: u32) -> Result<(Topology, Ipv4Addr), String> {
    if !netns::is_root() {
        return Err("needs root to create the network namespaces".into());
    }
    let topo = Topology::create(run_id, mtu).map_err(|e| format!("network topology: {e}"))?;
    let n: &Names = topo.names();
    let o = n.probe_ip.octets();
    let lan_ip = Ipv4Addr::new(o[0], o[1], o[2], 3);
    let cidr = format!("{lan_ip}/{}", n.prefix);
    for args in [
        vec!["-n", &n.lan_ns, "link", "set", "dev", &n.veth_lan, "nomaster"],
        vec!["-n", &n.lan_ns, "addr", "add", &cidr, "dev", &n.veth_lan],
    ] {
        let out = Command::new("ip").args(&args).output().map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            // `topo` is dropped here, which removes the namespaces.
            return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok((topo, lan_ip))
}

/// vmm-min: the built-in guest ↔ a host process over virtio-net.
pub fn vmm_min(run_id: &str, opts: &TtcpOptions, progress: &mut dyn FnMut(&str)) -> SystemRows {
    let what = "vmm-min: the built-in guest (smoltcp, 128 KiB socket buffers) on a TAP and bridge of the row's MTU, \
                virtio-net; the host end a process in the probe namespace over a veth to the bridge; TX: the guest \
                sends the body of GET /file (timed at the host receiver), RX: the guest receives POST /upload, \
                discards and counts it (timed at the host sender until the guest's count comes back)";
    let mut rows = Vec::new();
    for mtu in ttcp::MTUS {
        match guest_rows(&format!("{run_id}g{mtu}"), mtu, opts, what, progress) {
            Ok(r) => rows.extend(r),
            Err(e) => rows.extend(Direction::BOTH.map(|d| na(d, mtu, e.clone(), what))),
        }
    }
    SystemRows { system: "vmm-min".into(), label: "vmm-min guest (KVM)".into(), rows }
}

fn guest_rows(
    run_id: &str,
    mtu: u32,
    opts: &TtcpOptions,
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, String> {
    if !netns::is_root() {
        return Err("needs root to create the network namespaces".into());
    }
    let topo = Topology::create(run_id, mtu).map_err(|e| format!("network topology: {e}"))?;
    let n = topo.names().clone();
    let vmm = crate::net_cmd::boot_bench_guest(&n, opts.bytes)?;
    let addr = SocketAddr::from((n.guest_ip, 80));
    let in_probe = |f: &(dyn Fn() -> Result<Transfer, String> + Sync)| {
        netns::run_in_netns(&n.probe_ns, f).map_err(|e| e.to_string()).and_then(|r| r)
    };
    let t = Instant::now();
    loop {
        match in_probe(&|| ttcp::http_download(addr, "/health", 3)) {
            Ok(_) => break,
            Err(e) if t.elapsed() > Duration::from_secs(10) => {
                return Err(format!("the guest's HTTP server did not answer within 10 s: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut rows = Vec::new();
    for dir in Direction::BOTH {
        progress(&format!("vmm-min {}", ttcp::row_id(dir, mtu)));
        let bytes = opts.bytes;
        rows.push(ttcp::measure_row(dir, mtu, what, opts, &mut || match dir {
            Direction::Tx => in_probe(&|| ttcp::http_download(addr, "/file", bytes)),
            Direction::Rx => in_probe(&|| ttcp::http_upload(addr, bytes)),
        }));
    }
    if let Some(e) = vmm.exited() {
        return Err(format!("the guest ended during the transfers: {e}"));
    }
    vmm.join();
    drop(topo);
    Ok(rows)
}

/// The QEMU Linux guest ↔ a host process over virtio-net: raw TCP at both
/// ends, the guest's end run by its agent (`POST /ttcp`) with the same
/// code as the native rows. A QEMU that cannot run here makes every row
/// n/a with why.
pub fn qemu(
    run_id: &str,
    opts: &TtcpOptions,
    cfg: Result<QemuConfig, String>,
    progress: &mut dyn FnMut(&str),
) -> SystemRows {
    let what = "QEMU Linux guest: its agent's raw TCP end (the native rows' code: 128 KiB socket buffers, 8 KiB \
                writes), virtio-net on a TAP and bridge of the row's MTU, the guest's NIC set to that MTU; the host \
                end a process in the probe namespace over a veth to the bridge; TX: the guest sends, timed at the \
                host receiver; RX: the host sends, timed at the guest receiver (its monotonic clock)";
    let cfg = match cfg {
        Ok(c) => c,
        Err(why) => {
            let why = format!("the qemu system cannot run here: {why}");
            return SystemRows {
                system: crate::bench_qemu::SYSTEM.into(),
                label: "QEMU Linux guest".into(),
                rows: ttcp::na_rows(&why, what, opts),
            };
        }
    };
    let mut label = "QEMU Linux guest".to_string();
    let mut rows = Vec::new();
    for mtu in ttcp::MTUS {
        match qemu_rows(&format!("{run_id}q{mtu}"), mtu, opts, cfg.clone(), what, progress) {
            Ok((r, l)) => {
                rows.extend(r);
                label = l;
            }
            Err(e) => rows.extend(Direction::BOTH.map(|d| na(d, mtu, e.clone(), what))),
        }
    }
    SystemRows { system: crate::bench_qemu::SYSTEM.into(), label, rows }
}

/// Both directions at `mtu` with one QEMU; the rows and the column label.
fn qemu_rows(
    run_id: &str,
    mtu: u32,
    opts: &TtcpOptions,
    mut cfg: QemuConfig,
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Row>, String), String> {
    if !netns::is_root() {
        return Err("needs root to create the network namespaces".into());
    }
    let topo = Topology::create(run_id, mtu).map_err(|e| format!("network topology: {e}"))?;
    let n = topo.names().clone();
    cfg.smp = 1;
    let dir = std::env::temp_dir().join(format!("migbench-ttcp-qemu-{run_id}"));
    let mut sys =
        QemuSystem::new(cfg, &n, 4096, linux_guest::params::Workload::Idle, &dir).map_err(|e| e.to_string())?;
    let label = crate::bench_qemu::label(sys.accel().accel);
    let result = (|| -> Result<Vec<Row>, String> {
        sys.start_source().map_err(|e| e.to_string())?;
        sys.wait_http_ready(QEMU_BOOT_LIMIT).map_err(|e| e.to_string())?;
        let host = SocketAddr::from((n.probe_ip, PORT));
        let guest = SocketAddr::from((n.guest_ip, linux_guest::api::TTCP_PORT));
        let listener = netns::run_in_netns(&n.probe_ns, || ttcp::listen(host))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("listening on {host} in {}: {e}", n.probe_ns))?;
        let mut rows = Vec::new();
        for dir in Direction::BOTH {
            progress(&format!("qemu {}", ttcp::row_id(dir, mtu)));
            let bytes = opts.bytes;
            rows.push(ttcp::measure_row(dir, mtu, what, opts, &mut || match dir {
                Direction::Tx => qemu_tx(&sys, &listener, host, bytes, mtu),
                Direction::Rx => qemu_rx(&sys, &n.probe_ns, guest, bytes, mtu),
            }));
        }
        Ok(rows)
    })();
    let _ = sys.quit_all();
    drop(sys);
    let _ = std::fs::remove_dir_all(&dir);
    drop(topo);
    result.map(|r| (r, label))
}

/// How long the QEMU guest may take to answer `/health`.
const QEMU_BOOT_LIMIT: Duration = Duration::from_secs(90);

/// TX: the guest sends to the host's receiver, which times it.
fn qemu_tx(
    sys: &QemuSystem,
    listener: &TcpListener,
    host: SocketAddr,
    bytes: u64,
    mtu: u32,
) -> Result<Transfer, String> {
    let started = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        let rx = s.spawn(|| -> Result<Transfer, String> {
            // Waits for the guest until it is known not to come.
            let t = Instant::now();
            let mut c = loop {
                match ttcp::accept_within(listener, Duration::from_millis(200)) {
                    Ok(c) => break c,
                    Err(_) if started.load(Ordering::Relaxed) && t.elapsed() < ttcp::STALL_TIMEOUT => {}
                    Err(e) => return Err(format!("the guest did not connect: {e}")),
                }
            };
            ttcp::receive_all(&mut c).map_err(|e| format!("receiving: {e}"))
        });
        if let Err(e) = sys.ttcp_start(&TtcpRequest::Send { to: host, bytes, mtu }) {
            started.store(false, Ordering::Relaxed);
            let _ = rx.join();
            return Err(format!("the guest's agent did not start sending: {e}"));
        }
        let got = rx.join().map_err(|_| "the receiver thread panicked".to_string())?;
        // The guest's end marks itself done just after its last byte; the
        // next transfer may start only then.
        let guest_end = qemu_ttcp_done(sys);
        let t = got.map_err(|e| format!("{e} {}", guest_end.as_ref().err().map_or("", String::as_str)))?;
        guest_end?;
        if t.bytes != bytes {
            return Err(format!("received {} of {bytes} bytes from the guest", t.bytes));
        }
        Ok(t)
    })
}

/// RX: the host sends to the guest's receiver, which times it.
fn qemu_rx(sys: &QemuSystem, probe_ns: &str, guest: SocketAddr, bytes: u64, mtu: u32) -> Result<Transfer, String> {
    sys.ttcp_start(&TtcpRequest::Receive { bytes, mtu })
        .map_err(|e| format!("the guest's agent did not listen: {e}"))?;
    let mut c = netns::run_in_netns(probe_ns, || ttcp::connect(guest))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connecting to {guest}: {e}"))?;
    ttcp::send(&mut c, bytes).map_err(|e| format!("sending: {e}"))?;
    c.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    let st = qemu_ttcp_done(sys)?;
    if st.bytes != bytes {
        return Err(format!("the guest received {} of {bytes} bytes", st.bytes));
    }
    Ok(Transfer { bytes: st.bytes, elapsed: Duration::from_nanos(st.elapsed_ns) })
}

/// Polls `GET /ttcp` until the guest's end is done; its error if it failed.
fn qemu_ttcp_done(sys: &QemuSystem) -> Result<TtcpStatus, String> {
    let t = Instant::now();
    loop {
        // The agent answers on the guest's one (emulated) vCPU beside the
        // transfer's end: a failed poll is retried until the deadline.
        match sys.ttcp_status() {
            Ok(st) if st.state == BenchState::Done => {
                return match st.error {
                    Some(e) => Err(format!("(the guest's end: {e})")),
                    None => Ok(st),
                }
            }
            Ok(_) | Err(_) if t.elapsed() < ttcp::STALL_TIMEOUT => std::thread::sleep(Duration::from_millis(20)),
            Ok(st) => return Err(format!("the guest's end did not finish within {:?}: {st:?}", ttcp::STALL_TIMEOUT)),
            Err(e) => return Err(format!("GET /ttcp: {e}")),
        }
    }
}
