//! The macro runner (`POST /macro`, `GET /macro`): the process-based
//! stand-ins of the Xen paper's Figure 3 (`bench_suites::macro_bench`:
//! `cpu`, `build`, `fs`) run inside the Linux guest, one after another in a
//! thread of the agent, with the same code, programs and options as the
//! native bars. Each bar's method says where it ran.

use bench_suites::macro_bench::{self, MacroOptions};
use linux_guest::api::{BenchState, MacroRequest, MacroStatus};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The system id of the bars.
const SYSTEM: &str = "qemu";
/// Where the scratch directories go (the initramfs's RAM).
const SCRATCH: &str = "/tmp";

/// The run shared by the HTTP handlers.
#[derive(Default)]
pub struct MacroRunner {
    status: Mutex<Option<(MacroStatus, Instant)>>,
}

impl MacroRunner {
    /// The current (or last) run.
    pub fn status(&self) -> MacroStatus {
        match &*self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((s, started)) => {
                let mut s = s.clone();
                if s.state == BenchState::Running {
                    s.elapsed_ms = started.elapsed().as_millis() as u64;
                }
                s
            }
            None => MacroStatus { state: BenchState::Idle, bars: Vec::new(), current: None, elapsed_ms: 0 },
        }
    }

    /// Starts a run in a thread; `Err` (with why) while one runs.
    pub fn start(self: &Arc<Self>, req: MacroRequest) -> Result<MacroStatus, String> {
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*st, Some((ref s, _)) if s.state == BenchState::Running) {
                return Err("a macro run is in progress; GET /macro until it is done".into());
            }
            *st = Some((
                MacroStatus { state: BenchState::Running, bars: Vec::new(), current: None, elapsed_ms: 0 },
                Instant::now(),
            ));
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("macro".into())
            .spawn(move || me.run(&req))
            .map_err(|e| format!("cannot start the macro thread: {e}"))?;
        Ok(self.status())
    }

    fn run(&self, req: &MacroRequest) {
        let opts = MacroOptions::new(req.quick);
        let tmp = std::path::Path::new(SCRATCH);
        let ready = std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {SCRATCH}: {e}"));
        type Workload = fn(&MacroOptions, &std::path::Path) -> Result<macro_bench::Score, String>;
        let workloads: [(&str, &str, Workload); 3] = [
            ("cpu", "stress-ng --cpu", |o, _| macro_bench::cpu(o)),
            ("build", "gzip compile-like jobs", macro_bench::build),
            ("fs", "stress-ng --dir, --hdd", macro_bench::fs),
        ];
        for (id, what, run) in workloads {
            self.update(|s| s.current = Some(id.into()));
            let score = ready.clone().and_then(|()| run(&opts, tmp)).map(|mut s| {
                s.method = format!("{}; run inside the QEMU Linux guest by its agent (scratch files in RAM)", s.method);
                s
            });
            eprintln!("migbench-agent: macro {id}: {:?}", score.as_ref().map(|s| s.value));
            let bar = macro_bench::bar(SYSTEM, score, what);
            self.update(|s| {
                s.bars.push((id.into(), bar));
                s.current = None;
            });
        }
        self.update(|s| s.state = BenchState::Done);
    }

    fn update(&self, f: impl FnOnce(&mut MacroStatus)) {
        if let Some((s, started)) = &mut *self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            f(s);
            s.elapsed_ms = started.elapsed().as_millis() as u64;
        }
    }
}
