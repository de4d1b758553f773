//! `migbench migrate`: a one-shot live migration for users and CI, run by
//! `scenarios::runner` (source and destination as child processes, and with
//! `--net` the network topology and the HTTP probe). Prints a summary, writes
//! JSON, and exits non-zero on any failure, saying which.

use crate::cli::{policy, throttle, vm_config, MigrateArgs};
use anyhow::{Context, Result};
use results::MigrationStats;
use scenarios::qemu::driver::HostNic;
use scenarios::runner::{self, Experiment, NetSpec, ProbeSpec};
use scenarios::scenario::SystemKind;
use scenarios::system::qemu::Qemu;
use scenarios::system::vmm_min::VmmMin;
use scenarios::system::{GuestSpec, SystemUnderTest};
use serde_json::json;
use std::process::ExitCode;

pub fn run(args: MigrateArgs) -> Result<ExitCode> {
    let config = vm_config(&args.vm)?;
    if args.net && !scenarios::netns::is_root() {
        anyhow::bail!("--net needs root: it creates network namespaces, a bridge and TAP devices");
    }
    if let Some(to) = &args.to {
        let loopback = scenarios::scenario::check_remote(to).map_err(|e| anyhow::anyhow!("--to {e}"))?;
        if !loopback && args.tls_dir.is_none() {
            anyhow::bail!(
                "--to {to} is not a loopback address: give --tls-dir DIR with the credentials of `migbench tls-init DIR --host HOST` (copy DIR to the destination and start it with `migbench {} --tls-dir DIR`)",
                match args.system {
                    SystemKind::Qemu => "qemu-incoming --control ADDR --tap TAP",
                    SystemKind::VmmMin => "vmm --incoming ADDR",
                }
            );
        }
    }
    let link = args
        .bandwidth
        .as_deref()
        .map(|b| -> Result<results::Link> {
            Ok(results::Link {
                bandwidth_bps: Some(results::link::parse_rate(b).map_err(|e| anyhow::anyhow!("--bandwidth: {e}"))?),
                ..Default::default()
            })
        })
        .transpose()?;
    let exp = Experiment {
        guest: GuestSpec {
            memory: config.memory,
            vcpus: config.vcpus,
            workload: config.workload.to_string(),
            memcheck: matches!(config.workload, vmm_min::Workload::Memcheck { .. }),
        },
        policy: policy(&args.policy)?,
        warmup: args.warmup,
        after: args.after,
        verify: args.verify,
        net: args
            .net
            .then(|| -> Result<NetSpec> {
                Ok(NetSpec {
                    file_bytes: vmm_min::config::parse_size(&args.file_size)?,
                    mtu: args.mtu,
                    probe: Some(ProbeSpec { interval: args.interval, connections: args.connections }),
                    hosts: args.hosts,
                    link: link.clone(),
                })
            })
            .transpose()?,
        throttle: throttle(&args.policy)?,
    };
    let progress = crate::progress::Progress::new(&[]);
    let mut sut: Box<dyn SystemUnderTest> = match args.system {
        SystemKind::VmmMin => Box::new(
            VmmMin::new(std::env::current_exe().context("locating the migbench binary")?, config.backend)
                .with_tls_dir(args.tls_dir.clone())
                .with_remote(args.to.clone())
                .with_nic(remote_nic(&args)?),
        ),
        SystemKind::Qemu => qemu_system(&args, &progress)?,
    };
    let run = runner::run(&exp, sut.as_mut(), &mut progress.runner_events());
    progress.finish();
    let mut r = run?;
    let s = &r.migration;
    if let (Some(max), Some(d)) = (args.max_downtime_ms, s.downtime_ms) {
        if d > max {
            r.failures.push(format!("downtime {d:.2} ms exceeds --max-downtime-ms {max}"));
        }
    }
    print_summary(s);
    if let (Some(l), Some(ms)) = (&r.link, r.transport_limit_ms()) {
        eprintln!(
            "migbench: link {}: the {:.1} MB sent take {ms:.1} ms at its rate (migration total / link time = {:.2})",
            l.describe(),
            s.transferred_bytes as f64 / 1e6,
            s.total_ms / ms.max(1e-6)
        );
    } else if let Some(ms) = r.loopback_tcp_ms {
        eprintln!(
            "migbench: a plain loopback TCP socket moves the same {:.1} MB in {ms:.1} ms (migration total / loopback = {:.2})",
            s.transferred_bytes as f64 / 1e6,
            s.total_ms / ms.max(1e-6)
        );
    }
    if let Some(p) = &r.probe {
        let gap = r.migration.resumed_at_ms.and_then(|ms| p.gap_around_monotonic(s.start_mono_ns + (ms * 1e6) as u64));
        eprintln!(
            "migbench: HTTP probe: {} requests, {:.1} MB, {} reconnects, {} corrupted; gap around the switchover {}",
            p.summary.requests,
            p.summary.bytes as f64 / 1e6,
            p.summary.reconnects,
            p.summary.corruptions,
            gap.map_or("n/a".to_string(), |g| format!("{:.1} ms", g.duration_ms()))
        );
    }
    if let Some(path) = &args.json {
        let out = json!({
            "schema_version": reports::schema::SCHEMA_VERSION,
            "config": config,
            "migration": r.migration,
            "baseline": {
                "loopback_tcp_ms": r.loopback_tcp_ms,
                "what": "time for a plain loopback TCP socket to move transferred_bytes, measured right after the migration",
            },
            "link": r.link,
            "link_ms": r.link.as_ref().and_then(|l| l.time_ms(r.migration.transferred_bytes)),
            "probe": r.probe.as_ref().map(|p| &p.summary),
            "checks": r.checks,
            "failures": r.failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("migbench: statistics written to {}", path.display());
    }
    for f in &r.failures {
        eprintln!("migbench: FAIL: {f}");
    }
    Ok(if r.migration.outcome == results::Outcome::Indeterminate {
        // Distinct, so that a CI script can tell "unknown" from "failed".
        ExitCode::from(3)
    } else if r.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--system qemu`: both QEMUs here on the run's network (`--net`), or the
/// source here with its NIC on `--tap` and the destination at `--to`
/// (`migbench qemu-incoming`).
fn qemu_system(args: &MigrateArgs, progress: &crate::progress::Progress) -> Result<Box<dyn SystemUnderTest>> {
    let cfg = crate::systems::qemu_config(None, &args.qemu, progress)
        .map_err(|why| anyhow::anyhow!("the qemu system cannot run here: {why}"))?;
    let qemu = Qemu::new(cfg);
    Ok(match &args.to {
        Some(to) => {
            let nic = remote_nic(args)?.ok_or_else(|| {
                anyhow::anyhow!("--system qemu --to needs the guest's NIC here: --tap TAP --guest-ip ADDR/PREFIX (bridged to the LAN of the destination's `qemu-incoming --tap`)")
            })?;
            let nic = HostNic::from_net_config(&nic).map_err(anyhow::Error::msg)?;
            Box::new(qemu.with_remote(to.clone(), args.tls_dir.clone(), nic))
        }
        None if args.net => Box::new(qemu),
        None => anyhow::bail!(
            "--system qemu needs a network for the Linux guest (its agent answers over HTTP): --net, or --to with --tap and --guest-ip"
        ),
    })
}

/// `--tap`, `--guest-ip`, `--guest-mac`: the guest's NIC on a real host.
fn remote_nic(args: &MigrateArgs) -> Result<Option<vmm_min::config::NetConfig>> {
    let (Some(tap), Some(ip)) = (&args.tap, &args.guest_ip) else { return Ok(None) };
    let file_bytes = vmm_min::config::parse_size(&args.file_size)?;
    scenarios::scenario::host_nic(tap, ip, args.guest_mac.as_deref(), file_bytes)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--tap/--guest-ip: {e}"))
}

fn print_summary(s: &MigrationStats) {
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!("migbench: outcome: {:?}{}", s.outcome, s.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default());
    eprintln!(
        "migbench: total {:.1} ms, {} rounds + final {} pages, {:.1} MB transferred ({} zero pages)",
        s.total_ms,
        s.rounds.len(),
        s.final_pages,
        mb(s.transferred_bytes),
        s.zero_pages
    );
    if let Some(setup) = s.setup_ms {
        eprintln!("migbench: setup {setup:.2} ms (start to the first page sent)");
    }
    let throttled: Vec<String> =
        s.rounds.iter().filter_map(|r| r.throttle_pct.map(|p| format!("R{} {p:.0}%", r.round))).collect();
    if !throttled.is_empty() {
        eprintln!("migbench: auto-converge held the worker vCPUs off: {}", throttled.join(", "));
    }
    if let Some(why) = &s.stop_reason {
        eprintln!("migbench: stop-and-copy because {why}");
    }
    if let Some(p) = &s.thread_priorities {
        eprintln!("migbench: thread priority: {}", p.describe());
    }
    if let (Some(d), Some(b)) = (s.downtime_ms, &s.downtime_breakdown) {
        eprintln!(
            "migbench: downtime {d:.2} ms = pause {:.2} + final copy {:.2} + state {:.2} + restore {:.2} + resume {:.2}",
            b.pause_ms, b.final_copy_ms, b.state_ms, b.restore_ms, b.resume_ms
        );
    }
    if let Some(v) = &s.verify {
        eprintln!(
            "migbench: memory verified: {} (source {:.1} ms, destination {:.1} ms, not in the downtime)",
            if v.ok { "ok" } else { "MISMATCH" },
            v.source_ms,
            v.destination_ms
        );
    }
}
