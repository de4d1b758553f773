//! `migbench run`: boot a VM, optionally serve a control socket, stop after
//! `--duration` or when the guest exits, and report statistics.

use crate::cli::{vm_config, RunArgs};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_min::control::{ControlRequest, ControlServer};
use vmm_min::{Vmm, Workload};

/// How long to wait for the guest's first heartbeat.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: RunArgs, started: Instant) -> Result<ExitCode> {
    let config = vm_config(&args.vm)?;
    let vmm = Arc::new(Vmm::boot(&config, !args.quiet)?);
    let boot_ms = vmm
        .wait_first_heartbeat(BOOT_TIMEOUT)
        .map(|t| t.duration_since(started).as_secs_f64() * 1e3);
    let quit = Arc::new(AtomicBool::new(false));
    let _control = match &args.control {
        Some(path) => Some(ControlServer::bind(path, control_handler(vmm.clone(), quit.clone()))?),
        None => None,
    };

    let run_start = Instant::now();
    let dirty_rate = match (&config.workload, boot_ms) {
        (Workload::Stress { .. }, Some(_)) if args.duration.is_zero() || args.duration >= Duration::from_millis(1500) => {
            Some(vmm.measure_dirty_rate(Duration::from_secs(1), Duration::from_millis(100))?)
        }
        _ => None,
    };
    let deadline = (!args.duration.is_zero()).then(|| run_start + args.duration);
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
        None if boot_ms.is_none() => {
            eprintln!("migbench: the guest showed no heartbeat within {BOOT_TIMEOUT:?}");
            1
        }
        None => 0,
    };
    if args.json {
        let stats = json!({
            "config": config,
            "boot_ms": boot_ms,
            "ran_ms": ran_ms,
            "heartbeat": heartbeat,
            "exits": vmm.exit_counts(),
            "guest_exit": exit,
            "guest_exit_code": exit.as_ref().map(|e| e.process_code()),
            "dirty_rate": dirty_rate,
            "results": vmm.results().iter().map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.clone()))).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&stats).context("serializing statistics")?);
    } else if let Some(b) = boot_ms {
        eprintln!("migbench: booted in {b:.2} ms, ran {:.0} ms, heartbeat {heartbeat}", ran_ms);
        if let Some(d) = &dirty_rate {
            eprintln!(
                "migbench: dirty rate {:.0} pages/s ({:.0} MB/s); workers wrote {:.0} pages/s",
                d.pages_per_s, d.mb_per_s, d.guest_pages_written_per_s
            );
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn control_handler(vmm: Arc<Vmm>, quit: Arc<AtomicBool>) -> vmm_min::control::Handler {
    let paused = Arc::new(AtomicBool::new(false));
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
        ControlRequest::Migrate { .. } => json!({"ok": false, "error": "migration is not available in this build"}),
    })
}
