//! Starts the workload and keeps track of it: `stress`/`stress-ng` as child
//! processes, `memcheck` as a thread of the agent.

use crate::memcheck::Memcheck;
use linux_guest::params::Workload;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The running workload.
pub struct Running {
    /// The workload as given.
    pub spec: String,
    /// `None` while it runs; how it ended otherwise.
    pub end: Arc<Mutex<Option<String>>>,
    /// The memory checker, for `memcheck`.
    pub memcheck: Option<Arc<Memcheck>>,
}

/// Starts `w`. A workload that cannot start is recorded as ended, with the
/// reason, so `/status` says why; the HTTP server runs regardless.
pub fn start(w: &Workload) -> Running {
    let end = Arc::new(Mutex::new(None));
    let mut memcheck = None;
    match w {
        Workload::Idle => {}
        Workload::Memcheck { mb } => {
            let m = Arc::new(Memcheck::new(u64::from(*mb) << 20));
            let m2 = m.clone();
            let end2 = end.clone();
            let spawned = std::thread::Builder::new().name("memcheck".into()).spawn(move || m2.run());
            if let Err(e) = spawned {
                *end2.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("cannot start the memcheck thread: {e}"));
            }
            memcheck = Some(m);
        }
        Workload::Stress { .. } | Workload::StressNg { .. } => {
            if let Some((prog, args)) = w.command() {
                match Command::new(prog).args(&args).spawn() {
                    Ok(mut child) => {
                        let end2 = end.clone();
                        std::thread::spawn(move || {
                            let how = match child.wait() {
                                Ok(s) => format!("{prog} exited: {s}"),
                                Err(e) => format!("waiting for {prog}: {e}"),
                            };
                            eprintln!("migbench-agent: {how}");
                            *end2.lock().unwrap_or_else(|e| e.into_inner()) = Some(how);
                        });
                    }
                    Err(e) => {
                        let how = format!("cannot start {prog}: {e}");
                        eprintln!("migbench-agent: {how}");
                        *end.lock().unwrap_or_else(|e| e.into_inner()) = Some(how);
                    }
                }
            }
        }
    }
    Running { spec: w.to_string(), end, memcheck }
}
