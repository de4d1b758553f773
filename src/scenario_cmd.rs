//! `migbench scenario`, `migbench reproduce` and `migbench check`: run
//! scenario files through `scenarios::runner`, turn the results into the
//! report (`reports`), and gate CI on downtime.

use crate::cli::{CheckArgs, ReproduceArgs, ScenarioArgs};
use crate::progress::{Progress, Update};
use anyhow::{bail, Context, Result};
use reports::check::{self, Measured};
use reports::ScenarioResult;
use scenarios::runner::{self, Experiment, NetSpec, ProbeSpec};
use scenarios::scenario::Scenario;
use scenarios::system::vmm_min::VmmMin;
use scenarios::system::GuestSpec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vmm_min::Workload;

/// Overrides for short runs (tests, `reproduce --quick`).
#[derive(Default, Clone, Copy)]
struct Overrides {
    warmup: Option<Duration>,
    after: Option<Duration>,
    /// A shorter pre-copy timeout for scenarios with a shaped link.
    link_timeout: Option<Duration>,
}

fn experiment(s: &Scenario, o: Overrides) -> Result<Experiment> {
    let workload: Workload = s.vm.workload.parse()?;
    let mem = &s.migration;
    Ok(Experiment {
        guest: GuestSpec {
            memory: vmm_min::config::parse_size(&s.vm.memory)?,
            vcpus: s.vm.vcpus.unwrap_or_else(|| workload.vcpus_needed()),
            memcheck: matches!(workload, Workload::Memcheck { .. }),
            workload: workload.to_string(),
        },
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
        verify: mem.verify,
        // A remote destination is a real host: the guest has no NIC here.
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

/// A results folder name: `results/<UTC timestamp>-<what>`.
fn results_dir(out: Option<&Path>, what: &str) -> PathBuf {
    let stamp: String = reports::now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("results").join(format!("{stamp}-{what}")))
}

/// Runs one scenario; returns its result and the failed checks.
fn run_scenario(s: &Scenario, o: Overrides, dir: &Path, progress: &Progress) -> Result<(ScenarioResult, Vec<String>)> {
    progress.println(&format!("migbench: scenario {}: {}", s.name, s.description));
    let exp = experiment(s, o)?;
    let mut sut = vmm_min_system()?
        .with_remote(s.migration.to.clone())
        .with_tls_dir(s.migration.tls_dir.as_ref().map(PathBuf::from));
    let r = runner::run(&exp, &mut sut, &mut progress.runner_events())?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(p) = &r.probe {
        let csv = dir.join(format!("{}.probe.csv", reports::report::slug(&s.name)));
        p.save_csv(&csv).with_context(|| format!("writing {}", csv.display()))?;
    }
    let checks = dir.join(format!("{}.checks.json", reports::report::slug(&s.name)));
    let raw = serde_json::json!({"schema_version": reports::schema::SCHEMA_VERSION, "scenario": s, "checks": r.checks, "failures": r.failures, "loopback_tcp_ms": r.loopback_tcp_ms, "link": r.link, "transport_limit_ms": r.transport_limit_ms()});
    std::fs::write(&checks, serde_json::to_string_pretty(&raw)?)
        .with_context(|| format!("writing {}", checks.display()))?;
    let env = bench_suites::env::collect();
    let result = ScenarioResult::new(s.name.clone(), reports::now_rfc3339(), env, r.migration, r.probe)
        .with_description(s.description.clone())
        .with_link(r.link);
    let mut failures = r.failures;
    let m = Measured::from_stats(s.name.clone(), &result.migration, result.app_downtime_ms);
    failures.extend(check::limits(&m, s.limits.max_downtime_ms, s.limits.max_app_downtime_ms));
    progress.println(&format!(
        "migbench: {}: {:?}, total {:.0} ms, setup {}, VMM downtime {}, application-visible downtime {}",
        s.name,
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
    let o = Overrides { warmup: args.warmup, after: args.after, link_timeout: None };
    let (result, failures) = run_scenario(&s, o, &dir, &progress)?;
    progress.step(1);
    progress.update(Update::Phase("drawing the charts, writing report.md and report.html"));
    let paths = reports::write_report(&dir, &[result], None)?;
    progress.finish();
    eprintln!("migbench: report: {}", paths.markdown.display());
    println!("{}", paths.html.display());
    Ok(finish(&failures))
}

/// The scenarios `reproduce` runs: idle, loaded, loaded with auto-converge,
/// and the gigabit pair (the same guests over a 1 Gbit/s link between
/// simulated hosts, at the time scale of the 2006 charts).
const REPRODUCED: [&str; 5] = ["idle", "loaded", "loaded-throttle", "idle-gbit", "loaded-gbit"];

/// `migbench reproduce`: idle, loaded (without and with auto-converge),
/// idle-gbit, loaded-gbit, and the microbenchmark table, in one report.
pub fn reproduce(args: ReproduceArgs) -> Result<ExitCode> {
    need_root()?;
    let dir = results_dir(args.out.as_deref(), "reproduce");
    let o = if args.quick {
        Overrides {
            warmup: Some(Duration::from_secs(1)),
            after: Some(Duration::from_secs(1)),
            link_timeout: Some(Duration::from_secs(3)),
        }
    } else {
        Overrides::default()
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut steps = REPRODUCED.to_vec();
    if !args.no_bench {
        steps.push("bench");
    }
    steps.push("report");
    let progress = Progress::new(&steps);
    for (i, name) in REPRODUCED.into_iter().enumerate() {
        progress.step(i);
        let s = Scenario::load(name)?;
        let (r, f) = run_scenario(&s, o, &dir, &progress)?;
        results.push(r);
        failures.extend(f.into_iter().map(|f| format!("{name}: {f}")));
    }
    let bench = if args.no_bench {
        None
    } else {
        progress.step(REPRODUCED.len());
        let b = crate::bench_cmd::collect("compare", args.quick, &[], &progress)?;
        reports::report::save_bench(&dir.join(reports::report::BENCH_FILE), &b)?;
        for r in &mut results {
            r.environment.guest_ring0_emulated = b.env.guest_ring0_emulated;
        }
        Some(b)
    };
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
