//! The stand-ins of the Xen paper's Figure 3 (relative performance of
//! SPEC INT2000, a Linux build, OSDB-IR, OSDB-OLTP, dbench and SPEC WEB99
//! on native Linux, Xen, VMware Workstation and UML), and their scores.
//!
//! This module owns what each workload runs on Linux (through
//! `std::process`) and the normalisation; where it runs (host, guest) is the
//! caller's. Each score is work done divided by wall time measured here on
//! the monotonic clock, higher is better, so no tool's output is parsed:
//! - `cpu` for SPEC INT2000: `stress-ng --cpu 1 --cpu-method M --cpu-ops N
//!   --metrics-brief` for a fixed set of integer methods, bogo ops/s;
//! - `build` for the Linux build: compile-like jobs, one process per
//!   "source file": `gzip -6` of generated C-like text into an object file,
//!   jobs/s (fork, exec, CPU and small file writes, as a build does);
//! - `osdb_ir`, `osdb_oltp`: no stand-in (no database in the image), n/a;
//! - `fs` for dbench: `stress-ng --dir 1 --dir-ops N` (mkdir/rmdir) and
//!   `stress-ng --hdd 1 --hdd-ops N` (writes and reads) in a scratch
//!   directory, ops/s;
//! - `web` for SPEC WEB99: an HTTP server's throughput under the probe; the
//!   caller measures it (it needs the network).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use results::bench::{MacroBar, MacroReport, MacroWorkload};

/// The workloads, in the paper's order: (id, label, what it stands for).
pub const WORKLOADS: [(&str, &str, &str); 6] = [
    ("cpu", "CPU (stress-ng)", "SPEC INT2000"),
    ("build", "build-like jobs", "Linux build"),
    ("osdb_ir", "none", "OSDB-IR"),
    ("osdb_oltp", "none", "OSDB-OLTP"),
    ("fs", "file system (stress-ng)", "dbench"),
    ("web", "HTTP under the probe", "SPEC WEB99"),
];

/// Why the database workloads have no bar.
pub const NO_DATABASE: &str =
    "no stand-in: OSDB (information retrieval and OLTP on PostgreSQL) needs a database, which neither the host run nor the guest image ships";

/// The stress-ng CPU methods of `cpu` (integer work, as SPEC INT).
pub const CPU_METHODS: [&str; 4] = ["int64", "fibonacci", "crc16", "collatz"];

/// How much work each workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacroOptions {
    /// Bogo ops per CPU method.
    pub cpu_ops: u64,
    /// Compile-like jobs.
    pub build_jobs: usize,
    /// Bogo ops of each stress-ng file-system stressor.
    pub fs_ops: u64,
    /// Repetitions; the score is their median.
    pub repeats: usize,
}

impl MacroOptions {
    /// Defaults, or the quick ones.
    pub fn new(quick: bool) -> Self {
        if quick {
            MacroOptions { cpu_ops: 2_000, build_jobs: 40, fs_ops: 2_000, repeats: 1 }
        } else {
            MacroOptions { cpu_ops: 5_000, build_jobs: 200, fs_ops: 5_000, repeats: 3 }
        }
    }
}

/// One score: value, unit and exactly what ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// Work per second.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// What ran.
    pub method: String,
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{what} is not installed (apt-get install {what})")
        } else {
            format!("running {what}: {e}")
        }
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn median_of(repeats: usize, f: &mut dyn FnMut() -> Result<f64, String>) -> Result<f64, String> {
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        v.push(f()?);
    }
    crate::harness::median(&v).ok_or_else(|| "no sample".to_string())
}

/// `cpu`: the stress-ng integer methods, one worker, a fixed op count each;
/// total bogo ops over the total wall time.
pub fn cpu(opts: &MacroOptions) -> Result<Score, String> {
    let v = median_of(opts.repeats, &mut || {
        let t = Instant::now();
        for m in CPU_METHODS {
            run_quiet(
                Command::new("stress-ng")
                    .args(["--cpu", "1", "--cpu-method", m, "--cpu-ops"])
                    .arg(opts.cpu_ops.to_string())
                    .arg("--metrics-brief"),
                "stress-ng",
            )?;
        }
        Ok((opts.cpu_ops * CPU_METHODS.len() as u64) as f64 / t.elapsed().as_secs_f64())
    })?;
    Ok(Score {
        value: v,
        unit: "bogo ops/s".into(),
        method: format!(
            "stands in for SPEC INT2000: stress-ng --cpu 1 --cpu-method {{{}}} --cpu-ops {} --metrics-brief, one method after another; total bogo ops / wall time, median of {}",
            CPU_METHODS.join(","),
            opts.cpu_ops,
            opts.repeats
        ),
    })
}

/// C-like text for a generated "source file".
fn source_text(i: usize) -> String {
    let mut s = String::with_capacity(24 << 10);
    let mut k = 0usize;
    while s.len() < 24 << 10 {
        s.push_str(&format!(
            "static int fn_{i}_{k}(int a, int b) {{\n    int r = a * {k} + b;\n    for (int j = 0; j < {}; j++) r ^= (r << 3) + j;\n    return r;\n}}\n",
            (i * 31 + k * 7) % 97
        ));
        k += 1;
    }
    s
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path, tag: &str) -> Result<Self, String> {
        let p = base.join(format!("migbench-macro-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `build`: one `gzip -6` process per generated 24 KiB source file, in
/// turn, each writing its "object"; jobs over wall time.
pub fn build(opts: &MacroOptions, tmp: &Path) -> Result<Score, String> {
    let dir = Scratch::new(tmp, "build")?;
    for i in 0..opts.build_jobs {
        std::fs::write(dir.0.join(format!("u{i}.c")), source_text(i)).map_err(|e| format!("writing sources: {e}"))?;
    }
    let v = median_of(opts.repeats, &mut || {
        let t = Instant::now();
        for i in 0..opts.build_jobs {
            let src = dir.0.join(format!("u{i}.c"));
            let obj =
                std::fs::File::create(dir.0.join(format!("u{i}.o"))).map_err(|e| format!("creating an object: {e}"))?;
            let st = Command::new("gzip")
                .args(["-6", "-c"])
                .arg(&src)
                .stdin(Stdio::null())
                .stdout(obj)
                .status()
                .map_err(|e| format!("running gzip: {e}"))?;
            if !st.success() {
                return Err(format!("gzip failed: {st}"));
            }
        }
        Ok(opts.build_jobs as f64 / t.elapsed().as_secs_f64())
    })?;
    Ok(Score {
        value: v,
        unit: "jobs/s".into(),
        method: format!(
            "stands in for the Linux build: {} compile-like jobs in turn, each a fork+exec of gzip -6 on a generated 24 KiB C-like source writing its object file; jobs / wall time, median of {}",
            opts.build_jobs, opts.repeats
        ),
    })
}

/// `fs`: stress-ng's directory and disk stressors in a scratch directory;
/// total bogo ops over wall time.
pub fn fs(opts: &MacroOptions, tmp: &Path) -> Result<Score, String> {
    let dir = Scratch::new(tmp, "fs")?;
    let v = median_of(opts.repeats, &mut || {
        let t = Instant::now();
        for (s, sz) in [("--dir", None), ("--hdd", Some("--hdd-bytes=4M"))] {
            let mut c = Command::new("stress-ng");
            c.args([s, "1", &format!("{s}-ops"), &opts.fs_ops.to_string(), "--temp-path"])
                .arg(&dir.0)
                .arg("--metrics-brief");
            if let Some(a) = sz {
                c.arg(a);
            }
            run_quiet(&mut c, "stress-ng")?;
        }
        Ok((2 * opts.fs_ops) as f64 / t.elapsed().as_secs_f64())
    })?;
    Ok(Score {
        value: v,
        unit: "bogo ops/s".into(),
        method: format!(
            "stands in for dbench: stress-ng --dir 1 --dir-ops {n} (mkdir/rmdir) then stress-ng --hdd 1 --hdd-ops {n} --hdd-bytes=4M (writes and reads) in a scratch directory on {}; total bogo ops / wall time, median of {}",
            tmp.display(),
            opts.repeats,
            n = opts.fs_ops
        ),
    })
}

/// A bar from a score (or the reason there is none).
pub fn bar(system: &str, score: Result<Score, String>, method_if_na: &str) -> MacroBar {
    match score {
        Ok(s) => MacroBar {
            system: system.into(),
            score: Some(s.value),
            unit: s.unit,
            relative: None,
            na_reason: None,
            method: s.method,
        },
        Err(e) => MacroBar {
            system: system.into(),
            score: None,
            unit: String::new(),
            relative: None,
            na_reason: Some(e),
            method: method_if_na.into(),
        },
    }
}

/// Builds the report from each workload's bars (native first), filling
/// each bar's `relative` from the native bar of its workload. A bar with no
/// native baseline has no relative value and says why.
pub fn report(systems: Vec<(String, String)>, mut bars: Vec<(String, Vec<MacroBar>)>) -> MacroReport {
    let mut workloads = Vec::new();
    for (id, label, stands_for) in WORKLOADS {
        let Some(pos) = bars.iter().position(|(w, _)| w == id) else { continue };
        let (_, mut group) = bars.swap_remove(pos);
        let native = group.iter().find(|b| b.system == "native").and_then(|b| b.score);
        for b in &mut group {
            match (b.score, native) {
                (Some(s), Some(n)) if n > 0.0 => b.relative = Some(s / n),
                (Some(_), _) => {
                    b.na_reason.get_or_insert_with(|| "no native baseline for this workload".into());
                }
                _ => {}
            }
        }
        workloads.push(MacroWorkload {
            id: id.into(),
            label: label.into(),
            stands_for: stands_for.into(),
            bars: group,
        });
    }
    MacroReport { systems, workloads }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_is_score_over_native() {
        let s = |system: &str, v: Option<f64>| MacroBar {
            system: system.into(),
            score: v,
            unit: "x/s".into(),
            relative: None,
            na_reason: v.is_none().then(|| "why".into()),
            method: "m".into(),
        };
        let r = report(
            vec![("native".into(), "native".into()), ("vmm-min".into(), "vmm-min".into())],
            vec![
                ("web".into(), vec![s("native", Some(200.0)), s("vmm-min", Some(50.0))]),
                ("cpu".into(), vec![s("native", None), s("vmm-min", Some(1.0))]),
            ],
        );
        assert_eq!(r.workloads[0].id, "cpu", "the paper's order");
        let web = &r.workloads[1];
        assert_eq!(web.bars[0].relative, Some(1.0));
        assert_eq!(web.bars[1].relative, Some(0.25));
        assert_eq!(r.workloads[0].bars[1].relative, None);
        assert!(r.workloads[0].bars[1].na_reason.is_some());
    }

    #[test]
    fn source_text_is_c_like_and_sized() {
        let t = source_text(3);
        assert!(t.len() >= 24 << 10 && t.contains("static int fn_3_0"));
    }
}
