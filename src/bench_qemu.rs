//! The native suite inside the QEMU Linux guest (`bench guest --systems
//! qemu`, and the QEMU column of `bench compare` and `reproduce`).
//!
//! One QEMU (`scenarios::qemu::driver::QemuSystem`, the accelerator chosen
//! as for the scenarios: `auto` is TCG here) boots the image's Linux guest
//! on a TAP of a topology made for the run (names from the run id, removed
//! on exit, error and Ctrl-C); the host asks the guest's agent to run the
//! rows (`POST /bench`, a typed `linux_guest::api::BenchRequest`) and polls
//! `GET /bench` for them (`BenchStatus`, with `results::bench::Row`s), each
//! new row shown as progress. Each row runs in the guest within its time
//! budget; past it, the row is n/a with that reason. Then QEMU is told to
//! quit, and the rows are lined up with the native ids: every id has a row,
//! measured or n/a with the cause.

use crate::progress::{Progress, Update};
use bench_suites::native::{self, NativeOptions};
use linux_guest::api::{BenchRequest, BenchState, BenchStatus, GuestFacts};
use results::bench::{Row, SystemRows};
use scenarios::netns::{self, Topology};
use scenarios::qemu::accel::Accel;
use scenarios::qemu::driver::{QemuConfig, QemuSystem};
use std::time::{Duration, Instant};

/// The system id of the column.
pub const SYSTEM: &str = "qemu";
/// How long the guest may take to answer `/health` after QEMU's launch.
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// How often the host asks for the rows so far.
const POLL: Duration = Duration::from_millis(1000);
/// Polls that may fail in a row before the run is given up.
const MAX_FAILED_POLLS: u32 = 10;
/// One row's default time budget in the guest with `--quick`.
pub const ROW_BUDGET_QUICK: Duration = Duration::from_secs(20);
/// One row's default time budget in a full run.
pub const ROW_BUDGET_FULL: Duration = Duration::from_secs(180);
/// Guest RAM: the bandwidth rows' buffers (2 × 64 MiB for a full copy),
/// the 64 MiB latency ring and the files, all in the initramfs's RAM.
const GUEST_MIB: u32 = 768;

/// The column heading: the system and its accelerator.
pub fn label(accel: Accel) -> String {
    format!("QEMU Linux guest ({})", accel.to_string().to_uppercase())
}

/// The heading when QEMU did not start (the accelerator it would have used).
fn label_for(cfg: &QemuConfig) -> String {
    label(scenarios::qemu::accel::decide(cfg.accel).accel)
}

/// Every selected row, n/a with `reason`.
fn all_na(opts: &NativeOptions, reason: &str) -> Vec<Row> {
    native::row_ids(opts).iter().filter_map(|id| native::na_row(opts, id, reason.to_owned())).collect()
}

/// Runs the native suite selected by `opts` in the QEMU Linux guest of
/// `cfg`, each row within `budget`. Never fails: when the guest cannot run
/// the suite, every row is n/a with the reason.
pub fn run(cfg: Result<QemuConfig, String>, opts: &NativeOptions, budget: Duration, progress: &Progress) -> SystemRows {
    let cfg = match cfg {
        Ok(c) => c,
        Err(why) => {
            return SystemRows {
                system: SYSTEM.into(),
                label: "QEMU Linux guest".into(),
                rows: all_na(opts, &format!("the qemu system cannot run here: {why}")),
            }
        }
    };
    let heading = label_for(&cfg);
    let t = Instant::now();
    let (rows, label) = match run_in_guest(cfg, opts, budget, progress) {
        Ok((rows, accel)) => (rows, label(accel)),
        Err(e) => (all_na(opts, &format!("the QEMU Linux guest did not run the suite: {e}")), heading),
    };
    progress.println(&format!("migbench: QEMU Linux guest rows took {:.0} s", t.elapsed().as_secs_f64()));
    SystemRows { system: SYSTEM.into(), label, rows }
}

fn run_in_guest(
    mut cfg: QemuConfig,
    opts: &NativeOptions,
    budget: Duration,
    progress: &Progress,
) -> Result<(Vec<Row>, Accel), String> {
    if !netns::is_root() {
        return Err("needs root for the guest's network namespaces and TAP (run with sudo)".into());
    }
    let ids = native::row_ids(opts);
    let run_id = netns::new_run_id();
    let topo = Topology::create(&run_id, 1500).map_err(|e| format!("network topology: {e}"))?;
    cfg.memory_mib = cfg.memory_mib.max(GUEST_MIB);
    cfg.smp = 1;
    let dir = std::env::temp_dir().join(format!("migbench-bench-qemu-{run_id}"));
    let mut sys = QemuSystem::new(cfg, topo.names(), 4096, linux_guest::params::Workload::Idle, &dir)
        .map_err(|e| e.to_string())?;
    let accel = sys.accel().accel;
    progress.println(&format!("migbench: QEMU Linux guest: accelerator {}", sys.accel().reason));
    progress.update(Update::Phase("booting the QEMU Linux guest"));
    let result = (|| {
        sys.start_source().map_err(|e| e.to_string())?;
        let boot = sys.wait_http_ready(BOOT_LIMIT).map_err(|e| e.to_string())?;
        progress.println(&format!("migbench: QEMU Linux guest answered HTTP {:.1} s after launch", boot.as_secs_f64()));
        let req = BenchRequest { quick: opts.quick, only: opts.only.clone(), row_budget_ms: budget.as_millis() as u64 };
        let started = sys.bench_start(&req).map_err(|e| e.to_string())?;
        if started.ids != ids {
            return Err(format!(
                "the guest's agent selects other rows ({} ids) than this migbench ({}): is the image current? \
                 run `migbench image build`",
                started.ids.len(),
                ids.len()
            ));
        }
        progress.rows("QEMU Linux guest rows", ids.len() as u64);
        // Every row ends within its budget (plus the start of its child);
        // past that the guest is not answering as it should.
        let limit = budget.saturating_mul(ids.len() as u32 + 1) + Duration::from_secs(60);
        let t = Instant::now();
        let (mut shown, mut announced, mut failed_polls) = (0, 0, 0);
        let status = loop {
            // The agent serves HTTP beside the row it measures, on the
            // guest's one (emulated) vCPU: a slow answer is retried.
            let s = match sys.bench_status() {
                Ok(s) => {
                    failed_polls = 0;
                    s
                }
                Err(e) if failed_polls < MAX_FAILED_POLLS => {
                    failed_polls += 1;
                    progress.println(&format!("migbench: GET /bench from the guest failed ({e}); retrying"));
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(e) => return Err(format!("GET /bench failed {} times in a row: {e}", failed_polls + 1)),
            };
            // Each row once, as it starts (or, if it was quicker than a
            // poll, as it is seen finished).
            let started = (s.rows.len() + usize::from(s.current.is_some())).min(ids.len());
            for id in &ids[announced.min(started)..started] {
                progress.update(Update::Row(&format!("{id} in the QEMU guest")));
            }
            announced = announced.max(started);
            for r in s.rows.iter().skip(shown) {
                progress.println(&format!(
                    "migbench: QEMU guest {}: {}",
                    r.id,
                    r.value.map_or_else(
                        || format!("n/a ({})", r.na_reason.as_deref().unwrap_or("")),
                        |v| format!("{} {}", bench_suites::table::fmt_value(v), r.unit)
                    )
                ));
            }
            shown = s.rows.len();
            if s.state == BenchState::Done {
                break s;
            }
            if t.elapsed() > limit {
                return Err(format!("the guest's bench run did not finish within {:.0} s", limit.as_secs_f64()));
            }
            std::thread::sleep(POLL);
        };
        Ok(line_up(&status, opts, &ids, accel))
    })();
    let _ = sys.quit_all();
    drop(sys);
    drop(topo);
    result.map(|rows| (rows, accel))
}

/// One row per id, in order: the guest's row with where it ran added to its
/// method, or n/a with why there is none.
fn line_up(s: &BenchStatus, opts: &NativeOptions, ids: &[String], accel: Accel) -> Vec<Row> {
    let GuestFacts { kernel_release, clocksource, cpus, mem_total_kib } = &s.guest;
    let context = format!(
        "run inside the QEMU Linux guest ({} accelerator; Linux {kernel_release}, clocksource {clocksource}, \
         {cpus} vCPU, {} MiB) by its agent, each row in a child process of the agent",
        accel.to_string().to_uppercase(),
        mem_total_kib >> 10
    );
    ids.iter()
        .map(|id| match s.rows.iter().find(|r| &r.id == id) {
            Some(r) if r.is_well_formed() => {
                let mut r = r.clone();
                r.method = format!("{}; {context}", r.method);
                r
            }
            Some(r) => {
                let why = format!("the guest reported an unusable value {:?}", r.value);
                native::na_row(opts, id, why.clone())
                    .unwrap_or_else(|| Row::na(id, &r.label, &r.unit, why, r.method.clone()))
            }
            None => native::na_row(opts, id, "the guest's agent returned no row for this id".into())
                .unwrap_or_else(|| Row::na(id, id, "", "no such row".into(), context.clone())),
        })
        .collect()
}
