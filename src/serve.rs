//! Serving a VM for its life: `migbench run` boots one, `migbench vmm
//! --incoming` receives one. Both answer the control socket through
//! `vmm_min::service` (a destination from its start, before any VM
//! arrives), stop after `--duration`, on `quit` or when the guest exits,
//! and report statistics.

use crate::cli::{vm_config, RunArgs, VmmArgs};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_min::control::ControlServer;
use vmm_min::migration;
use vmm_min::migration::tls::TlsCredentials;
use vmm_min::service::VmService;
use vmm_min::{VmConfig, Vmm, Workload};

/// How long to wait for the guest's first heartbeat.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a served VM is watched.
struct ServeOptions {
    duration: Duration,
    json: bool,
    measure_dirty_rate: bool,
}

/// How the VM came to run here.
struct Start {
    boot_ms: Option<f64>,
    incoming: Option<migration::destination::IncomingReport>,
}

/// What `run --json` and `vmm --json` print at the end.
#[derive(Serialize)]
struct RunReport {
    /// Process start to the guest's first heartbeat (`run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    boot_ms: Option<f64>,
    /// What the incoming migration did (`vmm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<migration::destination::IncomingReport>,
    config: VmConfig,
    ran_ms: f64,
    heartbeat: u64,
    exits: Vec<vmm_min::vstate::vcpu::ExitCounts>,
    guest_exit: Option<vmm_min::GuestExit>,
    guest_exit_code: Option<i32>,
    dirty_rate: Option<vmm_min::vmm::DirtyRate>,
    migration: Option<results::MigrationStats>,
    /// The guest's result lines, as JSON where they are.
    results: Vec<Value>,
}

/// Prints a pre-copy round on stderr.
fn print_round(r: &results::RoundStats) {
    eprintln!(
        "migbench: round {}: sent {} pages ({:.1} MB) in {:.1} ms at {:.0} Mbit/s; {} pages dirty",
        r.round,
        r.pages_sent,
        r.bytes as f64 / 1e6,
        r.duration_ms,
        r.rate_mbps,
        r.dirty_pages
    );
}

/// The VM of `migbench run`: from `--config FILE` (as a parent runner
/// writes it) or from the flags.
fn run_config(args: &RunArgs) -> Result<VmConfig> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let config: VmConfig = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a VM configuration (JSON of vmm_min::VmConfig)", path.display()))?;
            Ok(config)
        }
        None => vm_config(&args.vm),
    }
}

/// `migbench run`.
pub fn run(args: RunArgs, started: Instant) -> Result<ExitCode> {
    let mut config = run_config(&args)?;
    // Dropped when `run` returns, after the VM: removes the topology.
    let net = crate::net_cmd::prepare(&args.net, &mut config)?;
    let vmm = Arc::new(match (&net, &args.netns) {
        (Some(n), _) => n.boot(&config, !args.quiet)?,
        (None, Some(ns)) => scenarios::netns::run_in_netns(ns, || Vmm::boot(&config, !args.quiet))
            .with_context(|| format!("entering network namespace {ns}"))??,
        (None, None) => Vmm::boot(&config, !args.quiet)?,
    });
    let boot_ms = vmm.wait_first_heartbeat(BOOT_TIMEOUT).map(|t| t.duration_since(started).as_secs_f64() * 1e3);
    let measure_dirty_rate = matches!(config.workload, Workload::Stress { .. })
        && boot_ms.is_some()
        && (args.duration.is_zero() || args.duration >= Duration::from_millis(1500));
    let tls = args.tls_dir.as_deref().map(TlsCredentials::load).transpose()?;
    let service = VmService::running(vmm.clone(), Box::new(print_round), tls);
    let _control = bind(&args.control, &service)?;
    let opts = ServeOptions { duration: args.duration, json: args.json, measure_dirty_rate };
    serve(&vmm, &service, opts, Start { boot_ms, incoming: None }, boot_ms.is_some())
}

fn bind(path: &Option<PathBuf>, service: &Arc<VmService>) -> Result<Option<ControlServer>> {
    Ok(match path {
        Some(p) => Some(ControlServer::bind(p, service.handler())?),
        None => None,
    })
}

/// `migbench vmm --incoming`.
pub fn incoming(args: VmmArgs) -> Result<ExitCode> {
    let tls = args.tls_dir.as_deref().map(TlsCredentials::load).transpose()?;
    let loopback = args.incoming.to_socket_addrs().is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
    if !loopback && tls.is_none() && !args.insecure {
        anyhow::bail!(
            "{} is not a loopback address: give --tls-dir DIR for an authenticated, encrypted migration \
             (make one with `migbench tls-init DIR --host HOST`), or --insecure to accept it in the clear",
            args.incoming
        );
    }
    let listener = std::net::TcpListener::bind(&args.incoming)
        .with_context(|| format!("cannot listen on {} for the incoming migration", args.incoming))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let service = VmService::incoming(addr.to_string());
    let _control = bind(&args.control, &service)?;
    println!("listening on {addr}");
    let opts = migration::destination::IncomingOptions {
        memory: args.memory.as_deref().map(vmm_min::config::parse_size).transpose()?,
        vcpus: args.vcpus,
        console: !args.quiet,
        frame_timeout: args.timeout,
        deadline: args.deadline,
        tap: None,
        tls,
    };
    let (vmm, report) = match &args.net_run_id {
        // The TAP is opened as the destination starts listening: do that
        // inside the namespace that holds it (the lan, or the destination
        // host's).
        Some(id) => {
            let names = scenarios::netns::Names::existing(id)?;
            let opts = migration::destination::IncomingOptions { tap: Some(names.tap_dst.clone()), ..opts };
            let ns = names.destination_ns();
            scenarios::netns::run_in_netns(ns, || migration::destination::receive(&listener, &opts, &*service))
                .with_context(|| format!("entering namespace {ns}"))??
        }
        None => {
            let opts = migration::destination::IncomingOptions { tap: args.tap.clone(), ..opts };
            migration::destination::receive(&listener, &opts, &*service)?
        }
    };
    eprintln!("migbench: incoming migration complete: {} pages, verified: {}", report.pages, report.verified);
    let opts = ServeOptions { duration: args.duration, json: args.json, measure_dirty_rate: false };
    serve(&vmm, &service, opts, Start { boot_ms: None, incoming: Some(report) }, true)
}

fn serve(vmm: &Vmm, service: &VmService, opts: ServeOptions, start: Start, alive: bool) -> Result<ExitCode> {
    let run_start = Instant::now();
    let dirty_rate = if opts.measure_dirty_rate {
        Some(vmm.measure_dirty_rate(Duration::from_secs(1), Duration::from_millis(100))?)
    } else {
        None
    };
    let deadline = (!opts.duration.is_zero()).then(|| run_start + opts.duration);
    while vmm.exited().is_none()
        && !service.quit_requested()
        && (service.must_stay() || deadline.is_none_or(|d| Instant::now() < d))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let heartbeat = vmm.heartbeat(0);
    let exit = vmm.join();
    let ran_ms = run_start.elapsed().as_secs_f64() * 1e3;
    let code = match &exit {
        Some(e) => {
            if e.process_code() != 0 {
                eprintln!("migbench: {e}");
            }
            e.process_code()
        }
        None if !alive => {
            eprintln!("migbench: the guest showed no heartbeat within {BOOT_TIMEOUT:?}");
            1
        }
        None => 0,
    };
    if opts.json {
        let report = RunReport {
            boot_ms: start.boot_ms,
            incoming: start.incoming,
            config: vmm.config().clone(),
            ran_ms,
            heartbeat,
            exits: vmm.exit_counts(),
            guest_exit_code: exit.as_ref().map(|e| e.process_code()),
            guest_exit: exit,
            dirty_rate,
            migration: service.migration(),
            results: vmm
                .results()
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.clone())))
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&report).context("serializing statistics")?);
    } else if alive {
        if let Some(b) = start.boot_ms {
            eprintln!("migbench: booted in {b:.2} ms, ran {ran_ms:.0} ms, heartbeat {heartbeat}");
        }
        if let Some(d) = &dirty_rate {
            eprintln!(
                "migbench: dirty rate {:.0} pages/s ({:.0} MB/s); workers wrote {:.0} pages/s",
                d.pages_per_s, d.mb_per_s, d.guest_pages_written_per_s
            );
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
