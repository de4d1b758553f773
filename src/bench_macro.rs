//! `migbench bench macro`: the Xen paper's Figure 3 with stand-ins
//! (`bench_suites::macro_bench`), one bar per system, normalised to native.
//!
//! - native: every stand-in as host processes; its `web` bar is the guest's
//!   own HTTP server code (`crate::guest_http`) as a native process on a TAP
//!   of the run's bridge, under the probe from the probe namespace;
//! - vmm-min: the built-in guest's HTTP server on the same bridge, under the
//!   same probe; the process-based stand-ins are n/a (no processes, no file
//!   system in the built-in guest);
//! - qemu (with `--systems qemu`): the process-based stand-ins run inside
//!   the QEMU Linux guest by its agent (`POST /macro`, then `GET /macro`
//!   for the bars, `linux_guest::api::MacroStatus`), the same code and
//!   programs as natively; its `web` bar is n/a (the agent's HTTP server has
//!   no native twin to be normalised against).

use crate::progress::{Progress, Update};
use bench_suites::macro_bench::{self, MacroOptions, Score};
use results::bench::{MacroBar, MacroReport};
use scenarios::netns::{self, Names, Topology};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes of `/file` for the web stand-in (the probe downloads it over and over).
const WEB_FILE_BYTES: u64 = 512 << 10;
/// MTU of the web stand-in's bridge (the harness's default).
const WEB_MTU: u32 = 9000;

/// Runs every stand-in on every system: native, vmm-min and, when `qemu`
/// is given, the QEMU Linux guest (its bars n/a with why where it cannot run).
pub fn run(
    quick: bool,
    qemu: Option<Result<scenarios::qemu::driver::QemuConfig, String>>,
    progress: &Progress,
) -> MacroReport {
    let opts = MacroOptions::new(quick);
    let span = Duration::from_secs(if quick { 2 } else { 10 });
    let tmp = std::env::temp_dir();
    progress.rows("macro workloads", if qemu.is_some() { 8 } else { 5 });
    let mut groups: Vec<(String, Vec<MacroBar>)> = Vec::new();
    let no_procs = "the built-in guest has no processes or file system to run it";
    let mut step = |id: &str, native: Result<Score, String>, what: &str| {
        progress.update(Update::Row(id));
        groups.push((
            id.to_owned(),
            vec![macro_bench::bar("native", native, what), macro_bench::bar("vmm-min", Err(no_procs.to_owned()), what)],
        ));
    };
    step("cpu", macro_bench::cpu(&opts), "stress-ng --cpu");
    step("build", macro_bench::build(&opts, &tmp), "gzip compile-like jobs");
    step("fs", macro_bench::fs(&opts, &tmp), "stress-ng --dir, --hdd");
    for id in ["osdb_ir", "osdb_oltp"] {
        groups.push((
            id.to_owned(),
            vec![
                macro_bench::bar("native", Err(macro_bench::NO_DATABASE.into()), "-"),
                macro_bench::bar("vmm-min", Err(macro_bench::NO_DATABASE.into()), "-"),
            ],
        ));
    }
    progress.update(Update::Row("web"));
    let method = |who: &str| {
        format!(
            "stands in for SPEC WEB99: {who}, serving a {} KiB /file on a TAP of a bridge at MTU {WEB_MTU}; the HTTP probe \
             (4 keep-alive connections, every body verified) downloads it from the probe namespace over a veth for {} s; \
             body MB (10^6 B) per second",
            WEB_FILE_BYTES >> 10,
            span.as_secs()
        )
    };
    let web_native = web_score(WebServer::Native, span).map(|v| Score {
        value: v,
        unit: "MB/s".into(),
        method: method(
            "the built-in guest's HTTP server and smoltcp compiled into a native host process (the same code), on smoltcp's TAP device",
        ),
    });
    let web_guest = web_score(WebServer::Guest, span).map(|v| Score {
        value: v,
        unit: "MB/s".into(),
        method: method("the built-in guest's HTTP server in a 1-vCPU vmm-min VM, virtio-net on the TAP"),
    });
    groups.push((
        "web".into(),
        vec![
            macro_bench::bar("native", web_native, &method("native")),
            macro_bench::bar("vmm-min", web_guest, &method("vmm-min")),
        ],
    ));
    let mut systems = vec![("native".into(), "native".into()), ("vmm-min".into(), "vmm-min guest (KVM)".into())];
    if let Some(cfg) = qemu {
        progress.update(Update::Phase("the stand-ins inside the QEMU Linux guest"));
        let (bars, label) = qemu_bars(cfg, quick, progress);
        for (id, group) in &mut groups {
            let bar = match id.as_str() {
                "osdb_ir" | "osdb_oltp" => macro_bench::bar(QEMU, Err(macro_bench::NO_DATABASE.into()), "-"),
                "web" => macro_bench::bar(QEMU, Err(NO_WEB_TWIN.into()), "-"),
                _ => match &bars {
                    Ok(b) => b.iter().find(|(w, _)| w == id).map(|(_, b)| b.clone()).unwrap_or_else(|| {
                        macro_bench::bar(QEMU, Err("the guest's agent returned no bar for it".into()), "-")
                    }),
                    Err(why) => macro_bench::bar(QEMU, Err(why.clone()), "-"),
                },
            };
            group.push(bar);
        }
        systems.push((QEMU.into(), label));
    }
    macro_bench::report(systems, groups)
}

/// The system id of the QEMU bars.
const QEMU: &str = crate::bench_qemu::SYSTEM;
/// Why the QEMU Linux guest has no `web` bar.
const NO_WEB_TWIN: &str = "no native twin: the Linux guest's HTTP server (the agent, hyper) does not run as a host process here, and the native web bar is a different server (the built-in guest's)";
/// How long the stand-ins may take in the guest (TCG emulates them).
const QEMU_MACRO_LIMIT: Duration = Duration::from_secs(900);

/// The process-based bars from inside the QEMU Linux guest, and the
/// system's label; `Err` (with why) when the guest could not run them.
fn qemu_bars(
    cfg: Result<scenarios::qemu::driver::QemuConfig, String>,
    quick: bool,
    progress: &Progress,
) -> (Result<Vec<(String, MacroBar)>, String>, String) {
    let mut cfg = match cfg {
        Ok(c) => c,
        Err(why) => return (Err(format!("the qemu system cannot run here: {why}")), "QEMU Linux guest".into()),
    };
    if !netns::is_root() {
        return (Err("needs root for the guest's network namespaces and TAP".into()), "QEMU Linux guest".into());
    }
    let run_id = netns::new_run_id();
    let topo = match Topology::create(&run_id, 1500) {
        Ok(t) => t,
        Err(e) => return (Err(format!("network topology: {e}")), "QEMU Linux guest".into()),
    };
    cfg.smp = 1;
    let dir = std::env::temp_dir().join(format!("migbench-macro-qemu-{run_id}"));
    let mut sys = match scenarios::qemu::driver::QemuSystem::new(
        cfg,
        topo.names(),
        4096,
        linux_guest::params::Workload::Idle,
        &dir,
    ) {
        Ok(s) => s,
        Err(e) => return (Err(e.to_string()), "QEMU Linux guest".into()),
    };
    let label = crate::bench_qemu::label(sys.accel().accel);
    let result = (|| -> Result<Vec<(String, MacroBar)>, String> {
        sys.start_source().map_err(|e| e.to_string())?;
        sys.wait_http_ready(Duration::from_secs(90)).map_err(|e| e.to_string())?;
        sys.macro_start(&linux_guest::api::MacroRequest { quick }).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut failed_polls = 0;
        let mut shown = None;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            // The agent answers on the guest's one (emulated) vCPU beside
            // the stand-in: a slow answer is retried.
            match sys.macro_status() {
                Ok(s) if s.state == linux_guest::api::BenchState::Done => return Ok(s.bars),
                Ok(s) => {
                    failed_polls = 0;
                    if s.current != shown {
                        if let Some(id) = &s.current {
                            progress.update(Update::Row(&format!("{id} in the QEMU guest")));
                        }
                        shown = s.current;
                    }
                }
                Err(e) if failed_polls < 10 => {
                    failed_polls += 1;
                    progress.println(&format!("migbench: GET /macro from the guest failed ({e}); retrying"));
                }
                Err(e) => return Err(format!("GET /macro failed 11 times in a row: {e}")),
            }
            if t.elapsed() > QEMU_MACRO_LIMIT {
                return Err(format!("the stand-ins did not finish within {QEMU_MACRO_LIMIT:?} in the guest"));
            }
        }
    })();
    let _ = sys.quit_all();
    drop(sys);
    let _ = std::fs::remove_dir_all(&dir);
    drop(topo);
    (result, label)
}

#[derive(Clone, Copy)]
enum WebServer {
    Native,
    Guest,
}

/// The probe's body throughput against one server, MB/s.
fn web_score(which: WebServer, span: Duration) -> Result<f64, String> {
    if !netns::is_root() {
        return Err("needs root to create the network namespaces".into());
    }
    let topo = Topology::create(&netns::new_run_id(), WEB_MTU).map_err(|e| format!("network topology: {e}"))?;
    let n: Names = topo.names().clone();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The server: a native thread on the TAP, or a VM.
        let mut vmm = None;
        let native = match which {
            WebServer::Native => {
                let cfg = crate::guest_http::ServerConfig {
                    tap: n.tap_src.clone(),
                    mac: crate::guest_http::parse_mac(&n.guest_mac).ok_or("bad MAC")?,
                    ip: (n.guest_ip, n.prefix),
                    file_bytes: WEB_FILE_BYTES,
                };
                let (stop, lan) = (&stop, n.lan_ns.clone());
                Some(s.spawn(move || -> Result<(), String> {
                    netns::enter_netns(&lan).map_err(|e| e.to_string())?;
                    crate::guest_http::serve(&cfg, stop).map_err(|e| format!("native HTTP server: {e}"))
                }))
            }
            WebServer::Guest => {
                vmm = Some(crate::net_cmd::boot_bench_guest(&n, WEB_FILE_BYTES)?);
                None
            }
        };
        let probe = |path: &str, d: Duration| {
            let cfg = probes::http::ProbeConfig {
                url: format!("http://{}{path}", n.guest_ip),
                duration: Some(d),
                ..Default::default()
            };
            netns::run_in_netns(&n.probe_ns, move || probes::http::run_blocking(&cfg))
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("probing {path}: {e}"))
        };
        let result = (|| {
            let t = Instant::now();
            loop {
                match probe("/health", Duration::from_millis(200)) {
                    Ok(r) if r.summary.requests > 0 => break,
                    _ if t.elapsed() > Duration::from_secs(10) => {
                        return Err("the HTTP server did not answer within 10 s".to_string())
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let r = probe("/file", span)?;
            if r.summary.corruptions > 0 {
                return Err(format!("{} corrupted responses", r.summary.corruptions));
            }
            Ok(r.summary.bytes as f64 / (r.summary.duration_ns as f64 / 1e9).max(1e-9) / 1e6)
        })();
        stop.store(true, Ordering::Release);
        if let Some(h) = native {
            h.join().map_err(|_| "the native HTTP server panicked".to_string())??;
        }
        if let Some(v) = vmm {
            v.join();
        }
        result
    })
}
