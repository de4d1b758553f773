//! `migbench scenario`, `migbench reproduce` and `migbench check`: run
//! scenario files through `scenarios::runner`, turn the results into the
//! report (`reports`), and gate CI on downtime.

use crate::cli::{CheckArgs, QemuArgs, ReproduceArgs, ScenarioArgs};
use crate::progress::{Progress, Update};
use crate::systems::{parse_systems, qemu_config};
use anyhow::{bail, Context, Result};
use reports::check::{self, Measured};
use reports::ScenarioResult;
use scenarios::qemu::driver::HostNic;
use scenarios::runner::{self, Experiment, NetSpec, ProbeSpec};
use scenarios::scenario::{Scenario, SystemKind};
use scenarios::system::qemu::Qemu;
use scenarios::system::vmm_min::VmmMin;
use scenarios::system::{GuestSpec, SystemUnderTest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vmm_min::Workload;

/// Overrides for short runs (tests, `reproduce --quick`).
#[derive(Default, Clone, Copy)]
struct Overrides {
    warmup: Option<Duration>,
    after: Option<Duration>,
    /// Verify guest memory after every migration, whatever the scenario says.
    verify: bool,
    /// A shorter pre-copy timeout for scenarios with a shaped link.
    link_timeout: Option<Duration>,
}

fn experiment(s: &Scenario, o: Overrides) -> Result<Experiment> {
    let (vcpus, memcheck, workload) = match s.system {
        SystemKind::VmmMin => {
            let w: Workload = s.vm.workload.parse()?;
            (s.vm.vcpus.unwrap_or_else(|| w.vcpus_needed()), matches!(w, Workload::Memcheck { .. }), w.to_string())
        }
        // The Linux guest schedules its workers itself: one vCPU unless
        // the scenario asks for more.
        SystemKind::Qemu => {
            let w: linux_guest::params::Workload = s.vm.workload.parse()?;
            let memcheck = matches!(w, linux_guest::params::Workload::Memcheck { .. });
            (s.vm.vcpus.unwrap_or(1), memcheck, s.vm.workload.clone())
        }
    };
    let mem = &s.migration;
    Ok(Experiment {
        guest: GuestSpec { memory: vmm_min::config::parse_size(&s.vm.memory)?, vcpus, memcheck, workload },
        policy: {
            let mut p = mem.policy().map_err(anyhow::Error::msg)?;
            if let (Some(t), Some(_), results::Policy::Downtime { timeout_ms, .. }) = (o.link_timeout, &s.link, &mut p)
            {
                *timeout_ms = timeout_ms.min(t.as_secs_f64() * 1e3);
            }
            p
        },
        warmup: o.warmup.unwrap_or_else(|| Scenario::duration(&mem.warmup)),
        after: o.after.unwrap_or_else(|| Scenario::duration(&mem.after)),
        verify: mem.verify || o.verify,
        // A remote destination is a real host: no topology or probe of the
        // run's own (the guest's NIC, if any, is `migration.tap`).
        net: s
            .migration
            .to
            .is_none()
            .then(|| -> Result<NetSpec> {
                Ok(NetSpec {
                    file_bytes: vmm_min::config::parse_size(&s.network.file_size)?,
                    mtu: 9000,
                    probe: Some(ProbeSpec {
                        interval: Scenario::duration(&s.probe.interval),
                        connections: s.probe.connections,
                    }),
                    hosts: s.network.hosts,
                    link: s.link.as_ref().map(|l| l.link()).transpose().map_err(anyhow::Error::msg)?,
                })
            })
            .transpose()?,
        throttle: mem.throttle().map_err(anyhow::Error::msg)?,
    })
}

/// The built-in system under test.
pub fn vmm_min_system() -> Result<VmmMin> {
    Ok(VmmMin::new(std::env::current_exe().context("locating the migbench binary")?, vmm_min::MemoryBackend::Anon))
}

/// The system a scenario runs on.
fn system_for(s: &Scenario, qemu: &QemuArgs, progress: &Progress) -> Result<Box<dyn SystemUnderTest>> {
    Ok(match s.system {
        SystemKind::VmmMin => Box::new(
            vmm_min_system()?
                .with_remote(s.migration.to.clone())
                .with_tls_dir(s.migration.tls_dir.as_ref().map(PathBuf::from))
                .with_nic(remote_nic(s)?),
        ),
        SystemKind::Qemu => {
            let q = Qemu::new(
                qemu_config(s.qemu.as_ref(), qemu, progress)
                    .map_err(|why| anyhow::anyhow!("the qemu system cannot run here: {why}"))?,
            );
            match (&s.migration.to, remote_nic(s)?) {
                (Some(to), Some(nic)) => Box::new(q.with_remote(
                    to.clone(),
                    s.migration.tls_dir.as_ref().map(PathBuf::from),
                    HostNic::from_net_config(&nic).map_err(anyhow::Error::msg)?,
                )),
                // `Scenario::validate` requires the NIC with `to` on qemu.
                (Some(_), None) => {
                    bail!("scenario {}: `migration.to` on qemu needs `migration.tap` and `guest_ip`", s.name)
                }
                (None, _) => Box::new(q),
            }
        }
    })
}

/// The keys `migration.tap`, `guest_ip`, `guest_mac`: the guest's NIC on
/// an existing TAP of this host, for a remote destination.
fn remote_nic(s: &Scenario) -> Result<Option<vmm_min::config::NetConfig>> {
    let m = &s.migration;
    let (Some(tap), Some(ip)) = (&m.tap, &m.guest_ip) else { return Ok(None) };
    let file_bytes = vmm_min::config::parse_size(&s.network.file_size)?;
    scenarios::scenario::host_nic(tap, ip, m.guest_mac.as_deref(), file_bytes)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("scenario {}: keys `migration.tap`/`guest_ip`: {e}", s.name))
}

/// A results folder name: `results/<UTC timestamp>-<what>`.
fn results_dir(out: Option<&Path>, what: &str) -> PathBuf {
    let stamp: String = reports::now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("results").join(format!("{stamp}-{what}")))
}

/// Runs one scenario on its system; returns its result and the failed checks.
fn run_scenario(
    s: &Scenario,
    o: Overrides,
    dir: &Path,
    progress: &Progress,
    qemu: &QemuArgs,
) -> Result<(ScenarioResult, Vec<String>)> {
    progress.println(&format!("migbench: scenario {} on {}: {}", s.name, s.system.name(), s.description));
    let exp = experiment(s, o)?;
    let mut sut = system_for(s, qemu, progress)?;
    let r = runner::run(&exp, sut.as_mut(), &mut progress.runner_events())?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let slug = reports::report::result_slug(s.system.name(), &s.name);
    if let Some(p) = &r.probe {
        let csv = dir.join(format!("{slug}.probe.csv"));
        p.save_csv(&csv).with_context(|| format!("writing {}", csv.display()))?;
    }
    let checks = dir.join(format!("{slug}.checks.json"));
    let raw = serde_json::json!({"schema_version": reports::schema::SCHEMA_VERSION, "scenario": s, "checks": r.checks, "failures": r.failures, "loopback_tcp_ms": r.loopback_tcp_ms, "link": r.link, "transport_limit_ms": r.transport_limit_ms()});
    std::fs::write(&checks, serde_json::to_string_pretty(&raw)?)
        .with_context(|| format!("writing {}", checks.display()))?;
    let env = bench_suites::env::collect();
    let result = ScenarioResult::new(s.name.clone(), reports::now_rfc3339(), env, r.migration, r.probe)
        .with_description(s.description.clone())
        .with_system(r.system, r.system_note, r.boot_to_http_ms)
        .with_link(r.link);
    let mut failures = r.failures;
    let m = Measured::from_stats(s.name.clone(), &result.migration, result.app_downtime_ms);
    failures.extend(check::limits(&m, s.limits.max_downtime_ms, s.limits.max_app_downtime_ms));
    progress.println(&format!(
        "migbench: {} on {}: {:?}, total {:.0} ms, setup {}, VMM downtime {}, application-visible downtime {}",
        s.name,
        s.system.name(),
        result.migration.outcome,
        result.migration.total_ms,
        result.migration.setup_ms.map_or("n/a".into(), |d| format!("{d:.1} ms")),
        result.migration.downtime_ms.map_or("n/a".into(), |d| format!("{d:.1} ms")),
        result.app_downtime_ms.map_or("n/a".into(), |d| format!("{d:.1} ms")),
    ));
    Ok((result, failures))
}

fn need_root() -> Result<()> {
    if !scenarios::netns::is_root() {
        bail!("scenarios need root: they create network namespaces, a bridge and TAP devices (run with sudo)");
    }
    Ok(())
}

fn finish(failures: &[String]) -> ExitCode {
    for f in failures {
        eprintln!("migbench: FAIL: {f}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `migbench scenario NAME|FILE`.
pub fn scenario(args: ScenarioArgs) -> Result<ExitCode> {
    let s = Scenario::load(&args.scenario)?;
    need_root()?;
    let dir = results_dir(args.out.as_deref(), &s.name);
    let progress = Progress::new(&[&s.name, "report"]);
    progress.step(0);
    let o = Overrides { warmup: args.warmup, after: args.after, link_timeout: None, verify: false };
    let (result, failures) = run_scenario(&s, o, &dir, &progress, &args.qemu)?;
    progress.step(1);
    progress.update(Update::Phase("drawing the charts, writing report.md and report.html"));
    let paths = reports::write_report(&dir, &[result], None)?;
    progress.finish();
    eprintln!("migbench: report: {}", paths.markdown.display());
    println!("{}", paths.html.display());
    Ok(finish(&failures))
}

/// The scenarios `reproduce` runs on a system: idle and loaded (vmm-min also loaded with auto-converge, and over a 1 Gbit/s link between
/// simulated hosts, at the time scale of the 2006 charts).
fn reproduce_scenarios(kind: SystemKind) -> &'static [&'static str] {
    match kind {
        SystemKind::VmmMin => &["idle", "loaded", "loaded-throttle", "idle-gbit", "loaded-gbit"],
        SystemKind::Qemu => &["qemu-idle", "qemu-loaded"],
    }
}

/// `migbench reproduce`: idle, loaded (vmm-min also with auto-converge), idle-gbit, loaded-gbit (on each system that has them), and the
/// microbenchmark table, in one report.
pub fn reproduce(args: ReproduceArgs) -> Result<ExitCode> {
    need_root()?;
    let dir = results_dir(args.out.as_deref(), "reproduce");
    let mut o = if args.quick {
        Overrides {
            warmup: Some(Duration::from_secs(1)),
            after: Some(Duration::from_secs(1)),
            link_timeout: Some(Duration::from_secs(3)),
            verify: false,
        }
    } else {
        Overrides::default()
    };
    o.verify = args.verify;
    // Which systems can run here; the others are listed with the reason.
    let mut systems = Vec::new();
    let mut skipped = Vec::new();
    let check = Progress::new(&[]);
    for kind in parse_systems(&args.systems)? {
        let why = match kind {
            SystemKind::VmmMin => None,
            SystemKind::Qemu => qemu_config(None, &args.qemu, &check).err(),
        };
        match why {
            None => systems.push(kind),
            Some(reason) => {
                eprintln!("migbench: skipping system {}: {reason}", kind.name());
                skipped.push(reports::report::SkippedSystem { system: kind.name().into(), reason });
            }
        }
    }
    check.finish();
    reports::report::save_skipped(&dir, &skipped)?;
    let runs: Vec<(SystemKind, &str)> =
        systems.iter().flat_map(|&k| reproduce_scenarios(k).iter().map(move |&n| (k, n))).collect();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let labels: Vec<String> = runs.iter().map(|(k, n)| format!("{}: {n}", k.name())).collect();
    let mut steps: Vec<&str> = if args.no_bench { Vec::new() } else { vec!["bench"] };
    steps.extend(labels.iter().map(String::as_str));
    steps.push("report");
    let progress = Progress::new(&steps);
    // The benchmarks run first, while this process is as small as `bench
    // compare`'s: the fork rows copy its page tables, and after the
    // scenarios it is larger (their fork_exit was 2.8x `bench native`'s).
    let bench = if args.no_bench {
        None
    } else {
        progress.step(0);
        // The QEMU Linux guest's column when qemu is among the systems (n/a
        // with the reason when it was skipped here).
        let guests = crate::bench_cmd::Guests {
            vmm_min: true,
            qemu: if systems.contains(&SystemKind::Qemu) {
                Some(qemu_config(None, &args.qemu, &progress))
            } else {
                skipped.iter().find(|s| s.system == SystemKind::Qemu.name()).map(|s| Err(s.reason.clone()))
            },
            row_budget: None,
        };
        let b = crate::bench_cmd::collect("compare", args.quick, &[], guests, &progress)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        reports::report::save_bench(&dir.join(reports::report::BENCH_FILE), &b)?;
        Some(b)
    };
    let first = usize::from(bench.is_some());
    for (i, (kind, name)) in runs.iter().enumerate() {
        progress.step(first + i);
        let s = Scenario::load(name)?;
        let (mut r, f) = run_scenario(&s, o, &dir, &progress, &args.qemu)?;
        if let Some(b) = &bench {
            r.environment.guest_ring0_emulated = b.env.guest_ring0_emulated;
        }
        results.push(r);
        failures.extend(f.into_iter().map(|f| format!("{} {}: {f}", kind.name(), s.name)));
    }
    progress.step(steps.len() - 1);
    progress.update(Update::Phase("drawing the charts, writing report.md and report.html"));
    let paths = reports::write_report(&dir, &results, bench.as_ref())?;
    progress.finish();
    eprintln!("migbench: report written: {} and {}", paths.markdown.display(), paths.html.display());
    println!("{}", paths.html.display());
    Ok(finish(&failures))
}

/// `migbench check RESULT.json`.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let r = Measured::load(&args.result)?;
    let mut failures = check::limits(&r, args.max_downtime_ms, args.max_app_downtime_ms);
    if let Some(base) = &args.baseline {
        let b = Measured::load(base)?;
        let tol = check::parse_tolerance(&args.tolerance)?;
        failures.extend(check::against_baseline(&r, &b, tol));
        if let Some(out) = &args.html {
            write_check_html(out, (base, b), (&args.result, r.clone()), &failures)?;
        }
    } else if args.max_downtime_ms.is_none() && args.max_app_downtime_ms.is_none() {
        bail!("nothing to check: give --max-downtime-ms, --max-app-downtime-ms or --baseline");
    }
    if failures.is_empty() {
        eprintln!(
            "migbench: {}: ok (downtime {}, application-visible {})",
            args.result.display(),
            r.downtime_ms.map_or("n/a".into(), |d| format!("{d:.2} ms")),
            r.app_downtime_ms.map_or("n/a".into(), |d| format!("{d:.1} ms"))
        );
    }
    Ok(finish(&failures))
}

/// `check --html OUT`: the regression view of the result against its
/// baseline, with the gate's verdict, as one self-contained HTML file (and
/// its Markdown and overlay charts beside it).
fn write_check_html(
    out: &Path,
    (base_path, base): (&Path, Measured),
    (new_path, new): (&Path, Measured),
    failures: &[String],
) -> Result<()> {
    use reports::regression::{self, Pair, Side};
    // A scenario result gives the overlay; any other accepted file, its numbers.
    let side = |path: &Path, m: Measured| match ScenarioResult::load_json(path) {
        Ok(s) => Side::Scenario(Box::new(s)),
        Err(_) => Side::Measured(m),
    };
    let name = new.scenario.clone().or_else(|| base.scenario.clone()).unwrap_or_else(|| "result".into());
    let pair = Pair { name, base: side(base_path, base), new: side(new_path, new) };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("--html {}: expected a file name such as regression.html", out.display()))?;
    let paths = regression::write_regression_as(&dir, stem, &[pair], Some(failures))?;
    if paths.html != out {
        std::fs::rename(&paths.html, out).with_context(|| format!("moving the page to {}", out.display()))?;
    }
    eprintln!("migbench: regression view written to {}", out.display());
    Ok(())
}
