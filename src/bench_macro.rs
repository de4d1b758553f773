//! `migbench bench macro`: the Xen paper's Figure 3 with stand-ins
//! (`bench_suites::macro_bench`), one bar per system, normalised to native.
//!
//! - native: every stand-in as host processes; its `web` bar is the guest's
//!   own HTTP server code (`crate::guest_http`) as a native process on a TAP
//!   of the run's bridge, under the probe from the probe namespace;
//! - vmm-min: the built-in guest's HTTP server on the same bridge, under the
//!   same probe; the process-based stand-ins are n/a (no processes, no file
//!   system in the built-in guest).

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

/// Runs every stand-in on every system.
pub fn run(quick: bool, progress: &Progress) -> MacroReport {
    let opts = MacroOptions::new(quick);
    let span = Duration::from_secs(if quick { 2 } else { 10 });
    let tmp = std::env::temp_dir();
    progress.rows("macro workloads", 5);
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
    macro_bench::report(
        vec![("native".into(), "native".into()), ("vmm-min".into(), "vmm-min guest (KVM)".into())],
        groups,
    )
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
