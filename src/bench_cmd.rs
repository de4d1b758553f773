//! `migbench bench native|guest|compare|tcp|crosscheck`: the lmbench-style
//! rows natively (bench-suites), inside the built-in guest (its `bench`
//! workload) and, with `--systems qemu`, the whole native suite inside the
//! QEMU Linux guest (`crate::bench_qemu`), the native-against-virtualized
//! table in the Xen paper's shape,
//! the ttcp table (`tcp`, also part of `compare`; its ends are
//! `crate::bench_net`), and the cross-check of the native rows against
//! independent tools.

use crate::cli::BenchArgs;
use crate::progress::{Progress, Update};
use anyhow::{bail, Context, Result};
use bench_suites::crosscheck::{CrossCheck, CrossOptions};
use bench_suites::native::{self, NativeOptions};
use bench_suites::{BenchReport, Row};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vmm_min::{MemoryBackend, VmConfig, Vmm, Workload};

/// How long the guest suite may take before it is abandoned.
const GUEST_LIMIT: Duration = Duration::from_secs(600);
/// A 2-instruction loop this many times slower in ring 0 than in ring 3
/// means ring 0 is emulated, not executed.
const EMULATION_RATIO: f64 = 20.0;

/// Why a native row has no guest counterpart.
fn guest_na_reason(id: &str) -> &'static str {
    match id {
        "fork_exit" | "fork_exec" | "fork_sh" => "no processes in the built-in guest",
        "stat" | "open_close" | "mmap_lat" | "page_fault" => "no file system in the built-in guest",
        id if id.starts_with("fs_") => "no file system in the built-in guest",
        "select_tcp" => "no sockets or select(2) in the built-in guest (its TCP/IP is smoltcp, polled in ring 3)",
        "sig_install" | "sig_handle" | "prot_fault" => "no signals in the built-in guest",
        id if id.starts_with("ctx_") => "no processes to switch between in the built-in guest",
        _ => "not measured in the guest",
    }
}

/// The guest's TCP rows: a host process in the probe namespace talks to the
/// guest's HTTP server over the bridge, the TAP and virtio-net, with the probe
/// (one keep-alive connection, hdrhistogram latencies). Needs root for the
/// namespaces; without it, or on any failure, both rows are n/a with the reason.
fn guest_tcp_rows(quick: bool) -> Vec<Row> {
    let secs = if quick { 1 } else { 3 };
    let lat_method = format!(
        "host process in a network namespace to the guest over a bridge, TAP and virtio-net: HTTP GET /health round trip \
         on one keep-alive TCP connection (request and reply about 100 B each), median of {secs} s of requests"
    );
    let bw_method = format!(
        "guest to host over virtio-net (guest TX): HTTP GET of a 512 KiB file on one keep-alive TCP connection, \
         MTU 9000, bytes received in {secs} s; MB = 10^6 B"
    );
    let rows = |lat: Result<f64, String>, bw: Result<f64, String>| {
        let row = |id: &str, label: &str, unit: &str, v: Result<f64, String>, m: &str| match v {
            Ok(v) => Row::measured(id, label, unit, v, m.to_owned()),
            Err(e) => Row::na(id, label, unit, e, m.to_owned()),
        };
        vec![
            row("tcp_lat", "TCP lat", bench_suites::UNIT_US, lat, &lat_method),
            row("tcp_bw", "TCP bw", bench_suites::UNIT_MBS, bw, &bw_method),
        ]
    };
    match measure_guest_tcp(Duration::from_secs(secs)) {
        Ok((lat, bw)) => rows(Ok(lat), Ok(bw)),
        Err(e) => rows(Err(e.clone()), Err(e)),
    }
}

fn measure_guest_tcp(span: Duration) -> std::result::Result<(f64, f64), String> {
    use scenarios::netns::{self, Topology};
    if !netns::is_root() {
        return Err("needs root to create the network namespaces".into());
    }
    let topo = Topology::create(&netns::new_run_id(), 9000).map_err(|e| format!("network topology: {e}"))?;
    let n = topo.names().clone();
    let vmm = crate::net_cmd::boot_bench_guest(&n, 512 << 10)?;
    let probe = |path: &str| {
        let cfg = probes::http::ProbeConfig {
            url: format!("http://{}{path}", n.guest_ip),
            connections: 1,
            duration: Some(span),
            ..Default::default()
        };
        netns::run_in_netns(&n.probe_ns, move || probes::http::run_blocking(&cfg))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("probing {path}: {e}"))
    };
    // Let the guest's server come up, then measure.
    let t = Instant::now();
    let health = loop {
        match probe("/health") {
            Ok(r) if r.summary.requests > 0 => break r,
            _ if t.elapsed() > Duration::from_secs(10) => return Err("the guest's HTTP server did not answer".into()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let file = probe("/file")?;
    vmm.join();
    drop(topo);
    if file.summary.corruptions > 0 {
        return Err(format!("{} corrupted responses", file.summary.corruptions));
    }
    let secs = file.summary.duration_ns as f64 / 1e9;
    Ok((health.summary.latency_us.p50 as f64, file.summary.bytes as f64 / secs.max(1e-9) / 1e6))
}

/// What the guest suite found besides its rows.
pub struct GuestRun {
    /// One row per native row id, measured or n/a.
    pub rows: Vec<Row>,
    /// Ring-0 against ring-3 time of the same loop, when measured.
    pub ring0_ratio: Option<f64>,
}

/// Runs the guest's suite in a fresh VM and lines its rows up with `ids`.
pub fn run_guest(quick: bool, only: &[String], ids: &[String], progress: &mut dyn FnMut(&str)) -> Result<GuestRun> {
    let config = VmConfig {
        memory: 512 << 20,
        vcpus: 1,
        workload: Workload::Bench { quick, only: only.to_vec() },
        backend: MemoryBackend::Anon,
        net: None,
    };
    let vmm = Vmm::boot(&config, false)?;
    let t = Instant::now();
    let mut seen = 0;
    while vmm.exited().is_none() {
        let results = vmm.results();
        for line in results.iter().skip(seen) {
            if let Some(id) =
                serde_json::from_str::<Value>(line).ok().and_then(|v| v["row"]["id"].as_str().map(str::to_owned))
            {
                progress(&id);
            }
        }
        seen = results.len();
        if t.elapsed() > GUEST_LIMIT {
            vmm.join();
            bail!("the guest benchmark suite did not finish within {GUEST_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match vmm.join() {
        Some(vmm_min::GuestExit::PowerOff { code: 0 }) => {}
        Some(e) => bail!("the guest benchmark suite ended badly: {e}"),
        None => bail!("the guest benchmark suite was stopped"),
    }
    let mut measured = Vec::new();
    let mut ring0_ratio = None;
    for line in vmm.results() {
        let v: Value = serde_json::from_str(&line).with_context(|| format!("malformed guest result '{line}'"))?;
        if let Some(r) = v.get("row") {
            let mut row =
                serde_json::from_value::<Row>(r.clone()).with_context(|| format!("malformed guest row {r}"))?;
            // The guest's "page_fault" is a demand fault on a not-present
            // anonymous page: the counterpart of the native `anon_fault`,
            // not of the native file-backed `page_fault` (lmbench's).
            if row.id == "page_fault" {
                row.id = "anon_fault".to_owned();
                row.label = "anon fault".to_owned();
            }
            measured.push(row);
        } else if let Some(r) = v.get("ring0") {
            let (r0, r3) = (r["ring0_ns_per_iter"].as_f64(), r["ring3_ns_per_iter"].as_f64());
            ring0_ratio = r0.zip(r3).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
        }
    }
    if ids.iter().any(|id| id.starts_with("tcp_")) {
        progress("tcp_lat");
        measured.extend(guest_tcp_rows(quick));
    }
    let rows = ids
        .iter()
        .map(|id| match measured.iter().find(|r| &r.id == id) {
            Some(r) if r.is_well_formed() => {
                let mut r = r.clone();
                if r.unit == "us" {
                    r.unit = bench_suites::UNIT_US.to_owned();
                }
                r
            }
            Some(r) => Row::na(
                id,
                &r.label,
                &r.unit,
                format!("guest reported an unusable value {:?}", r.value),
                r.method.clone(),
            ),
            None => Row::na(id, id, "", guest_na_reason(id).to_owned(), "guest ring 3".to_owned()),
        })
        .collect();
    Ok(GuestRun { rows, ring0_ratio })
}

/// Which guests run the rows (`--systems`), and how the QEMU one runs.
pub struct Guests {
    /// The built-in guest (the vmm-min column).
    pub vmm_min: bool,
    /// The QEMU Linux guest: how to run it, or why it cannot run here
    /// (then its column is n/a with that reason). `None`: not asked for.
    pub qemu: Option<std::result::Result<scenarios::qemu::driver::QemuConfig, String>>,
    /// One row's time budget in the QEMU guest (default by quick mode).
    pub row_budget: Option<Duration>,
}

impl Guests {
    /// From `--systems` and the QEMU flags; a QEMU that cannot run here
    /// (no binary, no image) becomes its column's reason.
    pub fn from_args(
        systems: &[String],
        qemu: &crate::cli::QemuArgs,
        row_budget: Option<Duration>,
        progress: &Progress,
    ) -> Result<Guests> {
        use scenarios::scenario::SystemKind;
        let kinds = crate::systems::parse_systems(systems)?;
        Ok(Guests {
            vmm_min: kinds.contains(&SystemKind::VmmMin),
            qemu: kinds.contains(&SystemKind::Qemu).then(|| crate::systems::qemu_config(None, qemu, progress)),
            row_budget,
        })
    }
}

/// Runs what `which` names and returns the report; rows are reported to
/// `progress`.
pub fn collect(which: &str, quick: bool, only: &[String], guests: Guests, progress: &Progress) -> Result<BenchReport> {
    let opts = NativeOptions { quick, only: only.to_vec(), ..Default::default() };
    let mut env = bench_suites::env::collect();
    let ids = native::row_ids(&opts);
    let native_rows = if which != "guest" {
        progress.rows("native rows", ids.len() as u64);
        native::run(&opts, &mut |id| progress.update(Update::Row(id)))
    } else {
        Vec::new()
    };
    let guest_rows = if which != "native" && guests.vmm_min {
        progress.update(Update::Phase("guest rows, in a fresh VM"));
        let g = run_guest(quick, only, &ids, &mut |id| progress.update(Update::Phase(&format!("guest row {id}"))))?;
        env.guest_ring0_emulated = g.ring0_ratio.map(|r| r > EMULATION_RATIO);
        if let Some(r) = g.ring0_ratio {
            progress.println(&format!("migbench: a ring-0 loop runs {r:.0}x slower than the same loop in ring 3"));
        }
        g.rows
    } else {
        Vec::new()
    };
    let mut systems = Vec::new();
    let qemu_guest = guests.qemu.clone();
    if let (true, Some(cfg)) = (which != "native", guests.qemu) {
        progress.update(Update::Phase("the native suite inside the QEMU Linux guest"));
        let budget = guests.row_budget.unwrap_or(if quick {
            crate::bench_qemu::ROW_BUDGET_QUICK
        } else {
            crate::bench_qemu::ROW_BUDGET_FULL
        });
        systems.push(crate::bench_qemu::run(cfg, &opts, budget, progress));
    }
    let ttcp = if which == "compare" && selects_ttcp(only) {
        ttcp_systems(quick, qemu_guest.clone(), progress)
    } else {
        Vec::new()
    };
    let macro_bench =
        (which == "compare" && only.is_empty()).then(|| crate::bench_macro::run(quick, qemu_guest, progress));
    Ok(BenchReport { env, native: native_rows, guest: guest_rows, systems, ttcp, macro_bench })
}

/// Whether `--only` leaves the ttcp table in.
fn selects_ttcp(only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|p| "ttcp".starts_with(p.as_str()) || p.starts_with("ttcp"))
}

/// The ttcp table: native, the vmm-min guest and, when `qemu` is given,
/// the QEMU Linux guest (n/a with why where it cannot run), each direction
/// at each MTU.
pub fn ttcp_systems(
    quick: bool,
    qemu: Option<std::result::Result<scenarios::qemu::driver::QemuConfig, String>>,
    progress: &Progress,
) -> Vec<results::bench::SystemRows> {
    let opts = bench_suites::ttcp::TtcpOptions::new(quick);
    let run_id = scenarios::netns::new_run_id();
    let columns = 2 + u64::from(qemu.is_some());
    progress.rows("ttcp rows", columns * bench_suites::ttcp::cells().len() as u64);
    let mut step = |s: &str| progress.update(Update::Row(s));
    let mut systems =
        vec![crate::bench_net::native(&run_id, &opts, &mut step), crate::bench_net::vmm_min(&run_id, &opts, &mut step)];
    if let Some(cfg) = qemu {
        systems.push(crate::bench_net::qemu(&run_id, &opts, cfg, &mut step));
    }
    systems
}

/// Runs the cross-check (`LMBENCH_DIR` from the environment), with progress
/// on stderr.
pub fn crosscheck(quick: bool, only: &[String]) -> CrossCheck {
    let opts = CrossOptions::from_env(quick, only);
    eprintln!("migbench: cross-check, {} round(s) of ours against each installed tool", opts.rounds());
    let c = bench_suites::crosscheck::run(&opts, &mut |step| eprintln!("migbench: crosscheck {step}"));
    for s in &c.skipped {
        eprintln!("migbench: crosscheck skipped {}: {} (install: {})", s.tool, s.reason, s.install);
    }
    c
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if !matches!(args.which.as_str(), "native" | "guest" | "compare" | "tcp" | "macro" | "crosscheck") {
        bail!("unknown bench '{}': expected native, guest, compare, tcp, macro or crosscheck", args.which);
    }
    if args.chart_dir.is_some() && args.which != "macro" {
        bail!("--chart-dir applies to macro only (the report draws the chart for compare and reproduce)");
    }
    let (table, json) = if args.which == "crosscheck" {
        let c = crosscheck(args.quick, &args.only);
        (bench_suites::crosscheck::markdown(&c), c.to_json().context("serializing the cross-check")?)
    } else if args.which == "macro" {
        if !args.only.is_empty() {
            bail!("--only does not apply to macro: it runs every workload");
        }
        let progress = Progress::new(&[]);
        let qemu = Guests::from_args(&args.systems, &args.qemu, None, &progress)?.qemu;
        let m = crate::bench_macro::run(args.quick, qemu, &progress);
        progress.finish();
        let md = bench_suites::table::macro_markdown(&m);
        if let Some(dir) = &args.chart_dir {
            let files = reports::charts::relative::write(&m, dir).context("drawing the relative-performance chart")?;
            for f in files {
                eprintln!("migbench: chart written to {}", f.display());
            }
        }
        let report = BenchReport { env: bench_suites::env::collect(), macro_bench: Some(m), ..Default::default() };
        (md, report.to_json().context("serializing the report")?)
    } else if args.which == "tcp" {
        if !args.only.is_empty() {
            bail!("--only does not apply to tcp: it runs every row of the ttcp table");
        }
        let progress = Progress::new(&[]);
        let qemu = Guests::from_args(&args.systems, &args.qemu, None, &progress)?.qemu;
        let report = BenchReport {
            env: bench_suites::env::collect(),
            ttcp: ttcp_systems(args.quick, qemu, &progress),
            ..Default::default()
        };
        progress.finish();
        (bench_suites::table::ttcp_markdown(&report.ttcp), report.to_json().context("serializing the report")?)
    } else {
        let progress = Progress::new(&[]);
        let guests = if args.which == "native" {
            Guests { vmm_min: false, qemu: None, row_budget: None }
        } else {
            Guests::from_args(&args.systems, &args.qemu, args.row_budget, &progress)?
        };
        let report = collect(&args.which, args.quick, &args.only, guests, &progress)?;
        progress.finish();
        (bench_suites::table::markdown(&report), report.to_json().context("serializing the report")?)
    };
    println!("{table}");
    if let Some(p) = &args.json {
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("migbench: JSON written to {}", p.display());
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, &table).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("migbench: Markdown written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
