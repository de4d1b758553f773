//! Serving a VM for its life: `migbench run` boots one, `migbench vmm
//! --incoming` receives one. Both then answer the control socket (status,
//! pause, resume, verify, migrate, quit), stop after `--duration` or when the
//! guest exits, and report statistics.

use crate::cli::{vm_config, RunArgs, VmmArgs};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_min::control::{ControlRequest, ControlServer};
use vmm_min::migration::{self, Outcome, Policy, SourceOptions};
use vmm_min::{Vmm, Workload};

/// How long to wait for the guest's first heartbeat.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a served VM is watched.
struct ServeOptions {
    duration: Duration,
    control: Option<PathBuf>,
    json: bool,
    measure_dirty_rate: bool,
}

/// `migbench run`.
pub fn run(args: RunArgs, started: Instant) -> Result<ExitCode> {
    let mut config = vm_config(&args.vm)?;
    // Dropped when `run` returns, after the VM: removes the topology.
    let net = crate::net_cmd::prepare(&args.net, &mut config)?;
    let vmm = Arc::new(match &net {
        Some(n) => n.boot(&config, !args.quiet)?,
        None => Vmm::boot(&config, !args.quiet)?,
    });
    let boot_ms = vmm.wait_first_heartbeat(BOOT_TIMEOUT).map(|t| t.duration_since(started).as_secs_f64() * 1e3);
    let measure_dirty_rate = matches!(config.workload, Workload::Stress { .. })
        && boot_ms.is_some()
        && (args.duration.is_zero() || args.duration >= Duration::from_millis(1500));
    let opts = ServeOptions { duration: args.duration, control: args.control, json: args.json, measure_dirty_rate };
    serve(vmm, opts, json!({"boot_ms": boot_ms}), boot_ms.is_some())
}

/// `migbench vmm --incoming`.
pub fn incoming(args: VmmArgs) -> Result<ExitCode> {
    let listener = std::net::TcpListener::bind(&args.incoming)
        .with_context(|| format!("cannot listen on {} for the incoming migration", args.incoming))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on {addr}");
    let opts = migration::destination::IncomingOptions {
        memory: args.memory.as_deref().map(vmm_min::config::parse_size).transpose()?,
        vcpus: args.vcpus,
        console: !args.quiet,
        frame_timeout: args.timeout,
        tap: None,
    };
    let (vmm, report) = match &args.net_run_id {
        // The TAP is opened when the VM is built: do that inside the lan namespace.
        Some(id) => {
            let names = scenarios::netns::Names::for_run(id)?;
            let opts = migration::destination::IncomingOptions { tap: Some(names.tap_dst.clone()), ..opts };
            scenarios::netns::run_in_netns(&names.lan_ns, || migration::destination::receive(&listener, &opts))
                .with_context(|| format!("entering namespace {}", names.lan_ns))??
        }
        None => migration::destination::receive(&listener, &opts)?,
    };
    eprintln!("migbench: incoming migration complete: {} pages, verified: {}", report.pages, report.verified);
    let opts =
        ServeOptions { duration: args.duration, control: args.control, json: args.json, measure_dirty_rate: false };
    serve(Arc::new(vmm), opts, json!({"incoming": report}), true)
}

fn serve(vmm: Arc<Vmm>, opts: ServeOptions, mut stats: Value, alive: bool) -> Result<ExitCode> {
    let quit = Arc::new(AtomicBool::new(false));
    let migrated = Arc::new(Mutex::new(None::<migration::MigrationStats>));
    let _control = match &opts.control {
        Some(path) => Some(ControlServer::bind(path, control_handler(vmm.clone(), quit.clone(), migrated.clone()))?),
        None => None,
    };
    let run_start = Instant::now();
    let dirty_rate = if opts.measure_dirty_rate {
        Some(vmm.measure_dirty_rate(Duration::from_secs(1), Duration::from_millis(100))?)
    } else {
        None
    };
    let deadline = (!opts.duration.is_zero()).then(|| run_start + opts.duration);
    while vmm.exited().is_none() && !quit.load(Ordering::Acquire) && deadline.is_none_or(|d| Instant::now() < d) {
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
        let extra = json!({
            "config": vmm.config(),
            "ran_ms": ran_ms,
            "heartbeat": heartbeat,
            "exits": vmm.exit_counts(),
            "guest_exit": exit,
            "guest_exit_code": exit.as_ref().map(|e| e.process_code()),
            "dirty_rate": dirty_rate,
            "migration": *vmm_min::sync::lock(&migrated),
            "results": vmm.results().iter().map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.clone()))).collect::<Vec<_>>(),
        });
        if let (Some(s), Some(e)) = (stats.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        println!("{}", serde_json::to_string_pretty(&stats).context("serializing statistics")?);
    } else if alive {
        if let Some(b) = stats["boot_ms"].as_f64() {
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

fn control_handler(
    vmm: Arc<Vmm>,
    quit: Arc<AtomicBool>,
    migrated: Arc<Mutex<Option<migration::MigrationStats>>>,
) -> vmm_min::control::Handler {
    let paused = Arc::new(AtomicBool::new(false));
    let migrating = Arc::new(Mutex::new(()));
    Arc::new(move |req| match req {
        ControlRequest::Status => json!({
            "ok": true,
            "running": vmm.exited().is_none() && !quit.load(Ordering::Acquire),
            "paused": paused.load(Ordering::Acquire),
            "vcpus": vmm.config().vcpus,
            "heartbeat": vmm.heartbeat(0),
            "workload": vmm.config().workload.to_string(),
        }),
        ControlRequest::Quit => {
            quit.store(true, Ordering::Release);
            json!({"ok": true})
        }
        ControlRequest::Pause => match vmm.pause() {
            Ok(d) => {
                paused.store(true, Ordering::Release);
                json!({"ok": true, "pause_ms": d.as_secs_f64() * 1e3})
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        },
        ControlRequest::Resume => {
            vmm.resume();
            paused.store(false, Ordering::Release);
            json!({"ok": true})
        }
        ControlRequest::Verify => {
            let res = vmm
                .post_request(vmm_min::abi::request::VERIFY)
                .map(|seq| vmm.wait_response(seq, Duration::from_secs(60)));
            match res {
                Ok(Some(bad)) => json!({"ok": bad == 0, "bad_pages": bad}),
                Ok(None) => json!({"ok": false, "error": "the guest did not answer the verify request within 60 s"}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
        ControlRequest::Migrate { to, policy, verify } => {
            let Ok(_one) = migrating.try_lock() else {
                return json!({"ok": false, "error": "a migration is already running"});
            };
            if paused.load(Ordering::Acquire) {
                return json!({"ok": false, "error": "the VM is paused; resume it before migrating"});
            }
            let policy = match Policy::from_json(&policy) {
                Ok(p) => p,
                Err(e) => return json!({"ok": false, "error": e}),
            };
            let mut progress = |r: &migration::stats::RoundStats| {
                eprintln!(
                    "migbench: round {}: sent {} pages ({:.1} MB) in {:.1} ms at {:.0} Mbit/s; {} pages dirty",
                    r.round,
                    r.pages_sent,
                    r.bytes as f64 / 1e6,
                    r.duration_ms,
                    r.rate_mbps,
                    r.dirty_pages
                );
            };
            let stats = migration::migrate(&vmm, &to, &policy, &SourceOptions { verify }, &mut progress);
            let ok = stats.outcome == Outcome::Completed;
            if ok {
                quit.store(true, Ordering::Release);
            }
            *vmm_min::sync::lock(&migrated) = Some(stats.clone());
            json!({"ok": ok, "stats": stats})
        }
    })
}
