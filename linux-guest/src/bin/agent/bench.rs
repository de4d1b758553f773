//! The bench runner: the native suite of `migbench bench native`
//! (`bench_suites::native`) run inside the Linux guest, one row at a time.
//!
//! `POST /bench` starts a run ([`Runner::start`]); a thread of the agent
//! then runs each selected row in a child process, the agent binary itself
//! started as `migbench-agent bench-row [--quick] ID` ([`row_main`]), which
//! measures the row with `native::run_one` and writes it to its stdout as
//! the JSON of `results::bench::Row`, read back with serde: the same type on
//! both ends, never a printed number. A child that outlives the row budget
//! is killed and its row is n/a with that reason; one that fails is n/a with
//! its exit status and stderr. `GET /bench` answers the [`BenchStatus`] so
//! far, so the host shows progress while the (emulated, slow) run goes on.
//!
//! A child per row also keeps each row's forks, signals and mappings out
//! of the agent, which serves HTTP throughout.

use bench_suites::native::{self, NativeOptions};
use linux_guest::api::{BenchRequest, BenchState, BenchStatus, GuestFacts};
use results::bench::Row;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent's argument that makes it a row child instead of init.
pub const ROW_ARG: &str = "bench-row";

/// How often the runner checks a row child.
const CHILD_POLL: Duration = Duration::from_millis(20);

/// The native options a request stands for.
fn options(req: &BenchRequest) -> NativeOptions {
    NativeOptions { quick: req.quick, only: req.only.clone(), ..Default::default() }
}

/// The bench runner shared by the HTTP handlers.
#[derive(Default)]
pub struct Runner {
    status: Mutex<Option<(BenchStatus, Instant)>>,
}

impl Runner {
    /// The state of the current (or last) run.
    pub fn status(&self) -> BenchStatus {
        match &*self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((s, started)) => {
                let mut s = s.clone();
                if s.state == BenchState::Running {
                    s.elapsed_ms = started.elapsed().as_millis() as u64;
                }
                s
            }
            None => BenchStatus {
                state: BenchState::Idle,
                request: None,
                ids: Vec::new(),
                rows: Vec::new(),
                current: None,
                elapsed_ms: 0,
                guest: GuestFacts::default(),
            },
        }
    }

    /// Starts a run of `req` in a thread; `Err` (with why) while one runs.
    pub fn start(self: &Arc<Self>, req: BenchRequest) -> Result<BenchStatus, String> {
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*st, Some((ref s, _)) if s.state == BenchState::Running) {
                return Err("a bench run is in progress; GET /bench until it is done".into());
            }
            let ids = native::row_ids(&options(&req));
            *st = Some((
                BenchStatus {
                    state: if ids.is_empty() { BenchState::Done } else { BenchState::Running },
                    request: Some(req.clone()),
                    ids,
                    rows: Vec::new(),
                    current: None,
                    elapsed_ms: 0,
                    guest: facts(),
                },
                Instant::now(),
            ));
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("bench".into())
            .spawn(move || me.run(&req))
            .map_err(|e| format!("cannot start the bench thread: {e}"))?;
        Ok(self.status())
    }

    fn run(&self, req: &BenchRequest) {
        let opts = options(req);
        let budget = Duration::from_millis(req.row_budget_ms.max(1));
        for id in native::row_ids(&opts) {
            self.update(|s| s.current = Some(id.clone()));
            let row = match run_child(&id, req.quick, budget) {
                Ok(r) if r.id == id => r,
                Ok(r) => na(&opts, &id, format!("the row child answered row {} instead", r.id)),
                Err(reason) => na(&opts, &id, reason),
            };
            eprintln!(
                "migbench-agent: bench {id}: {}",
                row.value
                    .map_or_else(|| format!("n/a ({})", row.na_reason.as_deref().unwrap_or("")), |v| v.to_string())
            );
            self.update(|s| {
                s.rows.push(row);
                s.current = None;
            });
        }
        self.update(|s| s.state = BenchState::Done);
    }

    fn update(&self, f: impl FnOnce(&mut BenchStatus)) {
        if let Some((s, started)) = &mut *self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            f(s);
            s.elapsed_ms = started.elapsed().as_millis() as u64;
        }
    }
}

fn na(opts: &NativeOptions, id: &str, reason: String) -> Row {
    native::na_row(opts, id, reason.clone())
        .unwrap_or_else(|| Row::na(id, id, "", reason, "the native suite in the Linux guest".into()))
}

/// Runs row `id` in a child (this binary, [`ROW_ARG`]) and reads its row;
/// kills it once it has run for `budget`.
fn run_child(id: &str, quick: bool, budget: Duration) -> Result<Row, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the agent binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg(ROW_ARG);
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the row child: {e}"))?;
    // Read both pipes in threads, so a child that writes much never blocks.
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t.elapsed() >= budget => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "exceeded its time budget of {budget:?} in the guest (killed); raise it with --row-budget"
                ));
            }
            Ok(None) => std::thread::sleep(CHILD_POLL),
            Err(e) => return Err(format!("waiting for the row child: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let tail = String::from_utf8_lossy(&stderr);
        let tail = tail.trim();
        return Err(format!(
            "the row child ended with {status}{}",
            if tail.is_empty() { String::new() } else { format!(": {}", tail.chars().take(300).collect::<String>()) }
        ));
    }
    serde_json::from_slice(&stdout).map_err(|e| format!("the row child's row is not a row: {e}"))
}

/// The row child: `bench-row [--quick] ID` measures row `ID` and writes it
/// to stdout as JSON (`results::bench::Row`).
pub fn row_main(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let id = args.iter().find(|a| !a.starts_with("--")).ok_or("bench-row: give a row id")?;
    let opts = NativeOptions { quick, ..Default::default() };
    let row = native::run_one(&opts, id).ok_or_else(|| format!("bench-row: no row {id}"))?;
    let json = serde_json::to_vec(&row).map_err(|e| format!("encoding the row: {e}"))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&json).and_then(|()| out.flush()).map_err(|e| format!("writing the row: {e}"))
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("unknown ({p}: {e})"))
}

/// The guest's kernel, clocksource, CPUs and memory.
fn facts() -> GuestFacts {
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    GuestFacts {
        kernel_release: read_trim("/proc/sys/kernel/osrelease"),
        clocksource: read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        mem_total_kib,
    }
}
