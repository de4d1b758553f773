//! The cross-check: our native rows against independent tools, in one run.
//!
//! This module owns which tool checks which native row, how each tool is
//! started and read, and the [`CrossCheck`] result with its Markdown
//! section. For every pair, ours and the tool run alternately, `rounds`
//! times each, in this one invocation, and the row gives both medians, the
//! ratio ours ÷ theirs and whether it is within ±10% ([`WITHIN`]).
//!
//! The tools (each only when installed; otherwise it is listed as skipped,
//! with the Debian package or setting that provides it):
//! * `iperf3` (TCP bandwidth, `tcp_bw`): a server on 127.0.0.1 and a client
//!   with 64 KiB writes, read from its `-J` JSON;
//! * `perf bench sched pipe` (context switch): two processes passing a token
//!   through pipes, per switch (its usecs/op is one round trip, two
//!   switches); compared with our 2-process ring's time per hop before the
//!   overhead subtraction, since perf subtracts nothing; pinned to our CPU
//!   with `taskset` and unpinned;
//! * `sysbench memory` (bandwidth, `mem_rd_bw`/`mem_wr_bw`): one thread,
//!   sequential, a block the size of our buffer; MiB/s converted to MB/s;
//! * lmbench 3, when `LMBENCH_DIR` names a directory holding its binaries
//!   (or a build tree with them under `bin/<os>/`): the lmbench command
//!   behind each row it has.
//!
//! Third-party tools have no typed interface, so their output is read here:
//! iperf3 through serde from its JSON, the others by small parsers of their
//! one result line, each tested on real output and failing with the text it
//! could not read.
//!
//! All traffic stays on 127.0.0.1. Servers are our children, killed when
//! their guard drops; lmbench's TCP servers daemonize, so they are stopped
//! with their own `-S` when the guard drops.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::env::Environment;
use crate::harness::{self, Harness};
use crate::native::{self, NativeOptions};
use crate::report::{UNIT_MBS, UNIT_US};
use crate::table::fmt_value;

/// A ratio within 1 ± this counts as agreeing.
pub const WITHIN: f64 = 0.10;
/// The environment variable that points at an lmbench 3 build.
pub const LMBENCH_ENV: &str = "LMBENCH_DIR";
/// Where lmbench's `lat_proc exec` and `shell` expect their `hello`.
const LMBENCH_HELLO: &str = "/tmp/hello";
/// How long a tool may run before it is killed and its row is n/a.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct CrossOptions {
    /// Short runs (one round, the native quick mode, short tool runs).
    pub quick: bool,
    /// An lmbench 3 build (default: the `LMBENCH_DIR` environment variable).
    pub lmbench_dir: Option<PathBuf>,
    /// Only the pairs whose row id starts with one of these (all if empty).
    pub only: Vec<String>,
}

impl CrossOptions {
    /// Options from the environment: `LMBENCH_DIR` if set.
    pub fn from_env(quick: bool, only: &[String]) -> Self {
        CrossOptions { quick, lmbench_dir: std::env::var_os(LMBENCH_ENV).map(PathBuf::from), only: only.to_vec() }
    }

    /// Whether the pair for row `id` is to run.
    pub fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| id.starts_with(o.as_str()))
    }

    /// Rounds of each pair: 1 in quick mode, 3 otherwise.
    pub fn rounds(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }
}

/// One native row against one tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossRow {
    /// Our native row's id.
    pub id: String,
    /// Human label.
    pub label: String,
    /// Unit of both values ([`UNIT_US`] or [`UNIT_MBS`]).
    pub unit: String,
    /// The tool, e.g. "iperf3", "lmbench 3".
    pub tool: String,
    /// The tool's command line, as run.
    pub command: String,
    /// What of ours is compared, when it is not the row's value.
    pub note: String,
    /// Our value in each round.
    pub ours: Vec<f64>,
    /// The tool's value in each round.
    pub theirs: Vec<f64>,
    /// Median of `ours`.
    pub ours_median: Option<f64>,
    /// Median of `theirs`.
    pub theirs_median: Option<f64>,
    /// `ours_median / theirs_median`.
    pub ratio: Option<f64>,
    /// Whether the ratio is within 1 ± [`WITHIN`].
    pub within: Option<bool>,
    /// Why there is no ratio (either side failed), when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub na_reason: Option<String>,
}

/// A tool that did not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The tool.
    pub tool: String,
    /// Why it did not run.
    pub reason: String,
    /// What provides it (a Debian package, or a setting).
    pub install: String,
}

/// The whole cross-check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossCheck {
    /// The machine.
    pub env: Environment,
    /// Whether this was a quick run.
    pub quick: bool,
    /// Rounds of each pair.
    pub rounds: usize,
    /// One row per pair that ran.
    pub rows: Vec<CrossRow>,
    /// Tools that did not run.
    pub skipped: Vec<Skipped>,
}

impl CrossCheck {
    /// Pretty JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// Parse JSON written by [`CrossCheck::to_json`].
    pub fn from_json(s: &str) -> serde_json::Result<Self> {
        serde_json::from_str(s)
    }
}

type Measure<'a> = Box<dyn FnMut() -> Result<f64, String> + 'a>;

/// One pair: our side and theirs.
struct Pair<'a> {
    id: &'static str,
    tool: &'static str,
    command: String,
    note: &'static str,
    ours: Measure<'a>,
    theirs: Measure<'a>,
}

/// Runs every installed tool against our rows, alternating, and returns the
/// result; `progress` gets a line per step. Never fails: a pair that cannot
/// run is an n/a row with the reason, and a missing tool is listed in
/// [`CrossCheck::skipped`].
pub fn run(opts: &CrossOptions, progress: &mut dyn FnMut(&str)) -> CrossCheck {
    let nopts = NativeOptions { quick: opts.quick, ..Default::default() };
    let enough = nopts.effective_enough();
    let mut skipped = Vec::new();
    let mut rows = Vec::new();
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            skipped.push(Skipped { tool: "all".into(), reason: e, install: "a writable temporary directory".into() });
            return CrossCheck { env: crate::env::collect(), quick: opts.quick, rounds: 0, rows, skipped };
        }
    };
    let rounds = opts.rounds();
    let ours_row = |id: &'static str| -> Measure<'_> {
        let nopts = nopts.clone();
        Box::new(move || match native::run_one(&nopts, id) {
            Some(r) => r.value.ok_or_else(|| r.na_reason.unwrap_or_else(|| "not measured".into())),
            None => Err(format!("no native row {id}")),
        })
    };

    // iperf3.
    match find_tool("iperf3").filter(|_| opts.wants("tcp_bw")) {
        None if !opts.wants("tcp_bw") => {}
        None => skipped.push(not_installed("iperf3", "iperf3")),
        Some(iperf) => match IperfServer::start(&iperf) {
            Err(e) => skipped.push(Skipped { tool: "iperf3".into(), reason: e, install: "iperf3".into() }),
            Ok(server) => {
                let secs = if opts.quick { 1 } else { 3 };
                let port = server.port;
                let pair = Pair {
                    id: "tcp_bw",
                    tool: "iperf3",
                    command: format!("iperf3 -c 127.0.0.1 -p {port} -t {secs} -l 64K -J (server: iperf3 -s)"),
                    note: "",
                    ours: ours_row("tcp_bw"),
                    theirs: Box::new(move || iperf_client(&iperf, port, secs)),
                };
                rows.push(run_pair(pair, "TCP bw", UNIT_MBS, rounds, progress));
                drop(server);
            }
        },
    }

    // perf bench sched pipe.
    let ctx = ["ctx_2p_0k", "ctx_2p_0k_unpinned"];
    match find_tool("perf").filter(|_| ctx.iter().any(|id| opts.wants(id))) {
        None if !ctx.iter().any(|id| opts.wants(id)) => {}
        None => skipped.push(not_installed("perf", "linux-perf")),
        Some(perf) => {
            let loops = if opts.quick { 20_000 } else { 100_000 };
            match perf_pipe(&perf, loops.min(1000), None) {
                Err(e) => skipped.push(Skipped {
                    tool: "perf bench sched pipe".into(),
                    reason: e,
                    install: "linux-perf (a perf that runs on this kernel)".into(),
                }),
                Ok(_) => {
                    for pinned in [true, false].into_iter().filter(|&p| opts.wants(ctx[usize::from(!p)])) {
                        let cpu = std::cell::Cell::new(None::<i32>);
                        let h = Harness::new(enough);
                        let perf = perf.clone();
                        let cpu_ref = &cpu;
                        let ours: Measure<'_> = Box::new(move || {
                            let hop = native::ctx_hop(&h, 2, 0, pinned)?;
                            cpu_ref.set(hop.pinned_cpu);
                            Ok(hop.raw_us)
                        });
                        let theirs: Measure<'_> = Box::new(move || {
                            let on = if pinned {
                                Some(
                                    cpu_ref
                                        .get()
                                        .ok_or("our ring was not pinned, so there is no CPU to pin perf to")?,
                                )
                            } else {
                                None
                            };
                            perf_pipe(&perf, loops, on)
                        });
                        let pair = Pair {
                            id: ctx[usize::from(!pinned)],
                            tool: "perf bench sched pipe",
                            command: format!(
                                "{}perf bench sched pipe -l {loops} (usecs/op ÷ 2: one op is two switches)",
                                if pinned { "taskset -c <our CPU> " } else { "" }
                            ),
                            note:
                                "ours before the overhead subtraction (raw time per hop), since perf subtracts nothing",
                            ours,
                            theirs,
                        };
                        let label = if pinned { "ctx 2p/0K" } else { "ctx 2p/0K unpinned" };
                        rows.push(run_pair(pair, label, UNIT_US, rounds, progress));
                    }
                }
            }
        }
    }

    // sysbench memory.
    let mem = [("mem_rd_bw", "mem rd bw", "read"), ("mem_wr_bw", "mem wr bw", "write")];
    match find_tool("sysbench").filter(|_| mem.iter().any(|m| opts.wants(m.0))) {
        None if !mem.iter().any(|m| opts.wants(m.0)) => {}
        None => skipped.push(not_installed("sysbench", "sysbench")),
        Some(sb) => {
            let block = nopts.bw_bytes();
            let total: u64 = if opts.quick { 2 << 30 } else { 16 << 30 };
            for (id, label, oper) in mem.into_iter().filter(|m| opts.wants(m.0)) {
                let args = vec![
                    "memory".to_string(),
                    "--threads=1".into(),
                    format!("--memory-block-size={block}"),
                    format!("--memory-total-size={total}"),
                    format!("--memory-oper={oper}"),
                    "--memory-access-mode=seq".into(),
                    "run".into(),
                ];
                let command = format!("sysbench {} (MiB/s × 1.048576)", args.join(" "));
                let sb = sb.clone();
                let pair = Pair {
                    id,
                    tool: "sysbench memory",
                    command,
                    note: "",
                    ours: ours_row(id),
                    theirs: Box::new(move || {
                        let out = run_tool(Command::new(&sb).args(&args))?;
                        parse_sysbench_mib_s(&out).map(|m| m * 1.048_576)
                    }),
                };
                rows.push(run_pair(pair, label, UNIT_MBS, rounds, progress));
            }
        }
    }

    // lmbench 3.
    match &opts.lmbench_dir {
        None => skipped.push(Skipped {
            tool: "lmbench 3".into(),
            reason: format!("{LMBENCH_ENV} is not set"),
            install: format!("build lmbench 3 and set {LMBENCH_ENV} to the directory holding its binaries"),
        }),
        Some(dir) => match Lmbench::find(dir) {
            Err(e) => skipped.push(Skipped {
                tool: "lmbench 3".into(),
                reason: e,
                install: format!("set {LMBENCH_ENV} to the directory holding lat_syscall, bw_mem, ..."),
            }),
            Ok(lm) => rows.extend(lmbench_rows(&lm, opts, &nopts, &scratch, progress)),
        },
    }

    CrossCheck { env: crate::env::collect(), quick: opts.quick, rounds, rows, skipped }
}

fn not_installed(tool: &str, package: &str) -> Skipped {
    Skipped {
        tool: tool.into(),
        reason: format!("{tool} is not installed (not found in PATH)"),
        install: package.into(),
    }
}

/// Runs a pair `rounds` times, ours first in each round, and summarises it.
fn run_pair(mut p: Pair<'_>, label: &str, unit: &str, rounds: usize, progress: &mut dyn FnMut(&str)) -> CrossRow {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut errors = Vec::new();
    for r in 1..=rounds {
        progress(&format!("{} round {r}/{rounds}: ours", p.id));
        match (p.ours)() {
            Ok(v) if v.is_finite() && v > 0.0 => ours.push(v),
            Ok(v) => errors.push(format!("ours gave {v}")),
            Err(e) => errors.push(format!("ours: {e}")),
        }
        progress(&format!("{} round {r}/{rounds}: {}", p.id, p.tool));
        match (p.theirs)() {
            Ok(v) if v.is_finite() && v > 0.0 => theirs.push(v),
            Ok(v) => errors.push(format!("{} gave {v}", p.tool)),
            Err(e) => errors.push(format!("{}: {e}", p.tool)),
        }
    }
    summarize(p.id, label, unit, p.tool, p.command, p.note, ours, theirs, errors)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    id: &str,
    label: &str,
    unit: &str,
    tool: &str,
    command: String,
    note: &str,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    errors: Vec<String>,
) -> CrossRow {
    let (om, tm) = (harness::median(&ours), harness::median(&theirs));
    let ratio = match (om, tm) {
        (Some(o), Some(t)) if t > 0.0 => Some(o / t),
        _ => None,
    };
    let na_reason = match ratio {
        Some(_) => None,
        None if errors.is_empty() => Some("no values".to_string()),
        None => Some(errors.join("; ")),
    };
    CrossRow {
        id: id.into(),
        label: label.into(),
        unit: unit.into(),
        tool: tool.into(),
        command,
        note: note.into(),
        ours,
        theirs,
        ours_median: om,
        theirs_median: tm,
        ratio,
        // The epsilon keeps exactly ±10% in (1.1 - 1.0 is 0.1000...09).
        within: ratio.map(|r| (r - 1.0).abs() <= WITHIN + 1e-9),
        na_reason,
    }
}

// ---------------------------------------------------------------- processes

/// `name` in one of the PATH directories, if it is there.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Makes a tool's process die with us (PR_SET_PDEATHSIG), so a server is
/// not left behind if migbench is killed.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the async-signal-safe prctl system call.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// Kills and reaps a child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a tool to completion (killed after [`TOOL_LIMIT`]); its stdout and
/// stderr together on success, an error with its stderr otherwise.
fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{:?}", cmd);
    let child = die_with_parent(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let out = wait_limited(child, TOOL_LIMIT).map_err(|e| format!("{shown}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{shown} failed ({}): {}", out.status, last_lines(&text, 3)))
    }
}

fn wait_limited(child: Child, limit: Duration) -> Result<Output, String> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = waiter.join();
            r.map_err(|e| e.to_string())
        }
        Err(_) => {
            // SAFETY: signalling our own child, which has not been reaped
            // (the waiter still waits for it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            // Not joined: a grandchild may still hold the output pipes, and
            // the waiter ends (and reaps) when they close.
            drop(waiter);
            Err(format!("did not finish within {limit:?}; killed"))
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let p = std::env::temp_dir().join(format!("migbench-crosscheck-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- iperf3

/// An `iperf3 -s` on 127.0.0.1, killed on drop.
struct IperfServer {
    _child: ChildGuard,
    port: u16,
}

impl IperfServer {
    fn start(iperf: &Path) -> Result<Self, String> {
        // A port the kernel just gave out; the short window before iperf3
        // binds it is retried by the client.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let child = die_with_parent(
            Command::new(iperf)
                .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .map_err(|e| format!("cannot start iperf3 -s: {e}"))?;
        Ok(IperfServer { _child: ChildGuard(child), port })
    }
}

#[derive(Deserialize)]
struct IperfResult {
    #[serde(default)]
    end: Option<IperfEnd>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct IperfEnd {
    sum_received: IperfSum,
}

#[derive(Deserialize)]
struct IperfSum {
    bits_per_second: f64,
}

/// Received bits per second from iperf3's `-J` output, as MB/s.
fn parse_iperf_mb_s(json: &str) -> Result<f64, String> {
    let r: IperfResult =
        serde_json::from_str(json).map_err(|e| format!("iperf3 JSON not understood ({e}): {}", last_lines(json, 2)))?;
    if let Some(e) = r.error {
        return Err(format!("iperf3: {e}"));
    }
    let end = r.end.ok_or("iperf3 JSON has no end.sum_received")?;
    Ok(end.sum_received.bits_per_second / 8.0 / 1e6)
}

fn iperf_client(iperf: &Path, port: u16, secs: u32) -> Result<f64, String> {
    let t = Instant::now();
    loop {
        let out = Command::new(iperf)
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", &secs.to_string(), "-l", "64K", "-J"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot start iperf3 -c: {e}"))?;
        let r = parse_iperf_mb_s(&String::from_utf8_lossy(&out.stdout));
        match r {
            // The server may not be listening yet.
            Err(e) if e.contains("connect") && t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100));
                let _ = e;
            }
            r => return r,
        }
    }
}

// ---------------------------------------------------------------- perf, sysbench

/// `perf bench sched pipe -l loops` (under `taskset -c cpu` when given):
/// µs per switch, half its usecs/op.
fn perf_pipe(perf: &Path, loops: u32, cpu: Option<i32>) -> Result<f64, String> {
    let mut cmd = match cpu {
        Some(c) => {
            let taskset = find_tool("taskset").ok_or("taskset (util-linux) is not installed")?;
            let mut cmd = Command::new(taskset);
            cmd.arg("-c").arg(c.to_string()).arg(perf);
            cmd
        }
        None => Command::new(perf),
    };
    cmd.args(["bench", "sched", "pipe", "-l", &loops.to_string()]);
    let out = run_tool(&mut cmd)?;
    parse_perf_usecs_per_op(&out).map(|us| us / 2.0)
}

/// The "usecs/op" figure of `perf bench sched pipe`.
fn parse_perf_usecs_per_op(out: &str) -> Result<f64, String> {
    out.lines()
        .find(|l| l.contains("usecs/op"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no usecs/op in perf's output: {}", last_lines(out, 3)))
}

/// The MiB/sec figure of `sysbench memory`: "... MiB transferred (X MiB/sec)".
fn parse_sysbench_mib_s(out: &str) -> Result<f64, String> {
    out.lines()
        .find(|l| l.contains("MiB/sec"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no MiB/sec in sysbench's output: {}", last_lines(out, 3)))
}

// ---------------------------------------------------------------- lmbench

/// An lmbench 3 build: the directory holding its binaries.
struct Lmbench {
    bin: PathBuf,
}

impl Lmbench {
    /// `dir` itself if it holds `lat_syscall`, else the one `dir/bin/*/`
    /// that does.
    fn find(dir: &Path) -> Result<Self, String> {
        if is_executable(&dir.join("lat_syscall")) {
            return Ok(Lmbench { bin: dir.to_path_buf() });
        }
        let sub = dir.join("bin");
        if let Ok(entries) = std::fs::read_dir(&sub) {
            for e in entries.flatten() {
                if is_executable(&e.path().join("lat_syscall")) {
                    return Ok(Lmbench { bin: e.path() });
                }
            }
        }
        Err(format!("{} holds no lmbench binaries (no lat_syscall there or in its bin/*/)", dir.display()))
    }

    fn cmd(&self, prog: &str) -> Command {
        Command::new(self.bin.join(prog))
    }

    /// Runs `prog args` (lmbench reports on stderr) and reads its figure.
    fn value(&self, prog: &str, args: &[&OsStr], env: &[(&str, &str)]) -> Result<f64, String> {
        let mut c = self.cmd(prog);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        parse_lmbench(&run_tool(&mut c)?)
    }
}

/// The figure of an lmbench result line: the last number of the last
/// non-empty line, after a trailing unit ("Simple syscall: 0.21
/// microseconds", "67.11 9071.94", "2 2.64", "0.065536 1615.71 MB/sec").
fn parse_lmbench(out: &str) -> Result<f64, String> {
    let line = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim()
        .trim_end_matches("microseconds")
        .trim_end_matches("MB/sec")
        .split_whitespace()
        .last()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no figure in lmbench's output: {}", last_lines(out, 2)))
}

/// lmbench's TCP server (`lat_tcp -s`, `bw_tcp -s`), stopped with `-S` on
/// drop; lmbench's servers detach, so they are not our children.
struct LmServer<'a> {
    lm: &'a Lmbench,
    prog: &'static str,
}

impl<'a> LmServer<'a> {
    fn start(lm: &'a Lmbench, prog: &'static str) -> Result<Self, String> {
        // The server forks a daemon that keeps whatever descriptors it was
        // given, so it gets none of ours: a pipe it held would never close.
        let child = lm
            .cmd(prog)
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {prog} -s: {e}"))?;
        let out = wait_limited(child, TOOL_LIMIT)?;
        if !out.status.success() {
            return Err(format!("{prog} -s failed ({})", out.status));
        }
        Ok(LmServer { lm, prog })
    }
}

impl Drop for LmServer<'_> {
    fn drop(&mut self) {
        let stop = self
            .lm
            .cmd(self.prog)
            .args(["-S", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(child) = stop {
            let _ = wait_limited(child, TOOL_LIMIT);
        }
    }
}

/// `/tmp/hello`, which lmbench's lat_proc execs: copied from the build (as
/// lmbench's own run script does) when missing, and removed again after.
struct Hello {
    made: bool,
}

impl Hello {
    fn ensure(lm: &Lmbench) -> Result<Self, String> {
        let dst = Path::new(LMBENCH_HELLO);
        if is_executable(dst) {
            return Ok(Hello { made: false });
        }
        let src = lm.bin.join("hello");
        std::fs::copy(&src, dst).map_err(|e| {
            format!(
                "lmbench's lat_proc execs {LMBENCH_HELLO}, which is missing, and copying {} there failed: {e} \
                 (without it lmbench would time a failed execve)",
                src.display()
            )
        })?;
        Ok(Hello { made: true })
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_file(LMBENCH_HELLO);
        }
    }
}

fn lmbench_rows(
    lm: &Lmbench,
    opts: &CrossOptions,
    nopts: &NativeOptions,
    scratch: &Scratch,
    progress: &mut dyn FnMut(&str),
) -> Vec<CrossRow> {
    let rounds = opts.rounds();
    // Files made as the native rows make theirs, and made afresh before each
    // lmbench command that takes one, as each of our rows makes its own, so
    // both sides fault on a file in the same state (a full run's file, made
    // 20 minutes before lat_pagefault ran, once measured 3 times slower).
    let small = scratch.0.join("small");
    let fault = scratch.0.join("fault");
    let map = scratch.0.join("map");
    let file_sizes = [(&small, 1024), (&fault, native::fault_file_bytes(nopts.quick)), (&map, native::MMAP_BYTES)];
    let refresh = |args: &[&OsStr]| -> Result<(), String> {
        for (path, bytes) in &file_sizes {
            if args.contains(&path.as_os_str()) {
                native::write_file(path, *bytes)?;
            }
        }
        Ok(())
    };
    let files = file_sizes.iter().try_for_each(|(path, bytes)| native::write_file(path, *bytes));
    let bw = format!("{}m", nopts.bw_bytes() >> 20);
    let hello = Hello::ensure(lm);
    let hello_err = hello.as_ref().err().cloned();

    // (our id, label, unit, program, arguments, environment, our value's note)
    type Spec<'s> =
        (&'static str, &'static str, &'static str, &'static str, Vec<&'s OsStr>, Vec<(&'static str, &'static str)>);
    let os = |s: &'static str| OsStr::new(s);
    let specs: Vec<Spec<'_>> = vec![
        ("null_call", "null call", UNIT_US, "lat_syscall", vec![os("null")], vec![]),
        ("stat", "stat", UNIT_US, "lat_syscall", vec![os("stat"), small.as_os_str()], vec![]),
        ("open_close", "open/close", UNIT_US, "lat_syscall", vec![os("open"), small.as_os_str()], vec![]),
        ("sig_install", "sig inst", UNIT_US, "lat_sig", vec![os("install")], vec![]),
        ("sig_handle", "sig hndl", UNIT_US, "lat_sig", vec![os("catch")], vec![]),
        ("prot_fault", "prot fault", UNIT_US, "lat_sig", vec![os("prot"), small.as_os_str()], vec![]),
        ("fork_exit", "fork proc", UNIT_US, "lat_proc", vec![os("fork")], vec![]),
        ("fork_exec", "exec proc", UNIT_US, "lat_proc", vec![os("exec")], vec![]),
        ("fork_sh", "sh proc", UNIT_US, "lat_proc", vec![os("shell")], vec![]),
        (
            "ctx_2p_0k",
            "ctx 2p/0K",
            UNIT_US,
            "lat_ctx",
            vec![os("-s"), os("0"), os("2")],
            vec![("LMBENCH_SCHED", "SINGLE")],
        ),
        (
            "ctx_2p_16k",
            "ctx 2p/16K",
            UNIT_US,
            "lat_ctx",
            vec![os("-s"), os("16"), os("2")],
            vec![("LMBENCH_SCHED", "SINGLE")],
        ),
        ("ctx_2p_0k_unpinned", "ctx 2p/0K unpinned", UNIT_US, "lat_ctx", vec![os("-s"), os("0"), os("2")], vec![]),
        ("mmap_lat", "mmap lat", UNIT_US, "lat_mmap", vec![os("1m"), map.as_os_str()], vec![]),
        ("page_fault", "page fault", UNIT_US, "lat_pagefault", vec![fault.as_os_str()], vec![]),
        ("mem_rd_bw", "mem rd bw", UNIT_MBS, "bw_mem", vec![OsStr::new(bw.as_str()), os("rd")], vec![]),
        ("mem_wr_bw", "mem wr bw", UNIT_MBS, "bw_mem", vec![OsStr::new(bw.as_str()), os("wr")], vec![]),
        ("mem_cp_bw", "mem cp bw", UNIT_MBS, "bw_mem", vec![OsStr::new(bw.as_str()), os("cp")], vec![]),
    ];
    let mut rows = Vec::new();
    let ours = |id: &str| -> Result<f64, String> {
        match native::run_one(nopts, id) {
            Some(r) => r.value.ok_or_else(|| r.na_reason.unwrap_or_else(|| "not measured".into())),
            None => Err(format!("no native row {id}")),
        }
    };
    let shown = |prog: &str, args: &[&OsStr], env: &[(&str, &str)]| {
        let mut s: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        s.push_str(prog);
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    for (id, label, unit, prog, args, env) in specs.iter().filter(|s| opts.wants(s.0)) {
        let command = shown(prog, args, env);
        let blocked = match (&files, *prog) {
            (Err(e), _) => Some(e.clone()),
            (_, "lat_proc") if *id != "fork_exit" => hello_err.clone(),
            _ => None,
        };
        let pair = Pair {
            id,
            tool: "lmbench 3",
            command,
            note: "",
            ours: Box::new(|| ours(id)),
            theirs: Box::new(|| match &blocked {
                Some(e) => Err(e.clone()),
                None => refresh(args).and_then(|_| lm.value(prog, args, env)),
            }),
        };
        rows.push(run_pair(pair, label, unit, rounds, progress));
    }

    // null I/O: lmbench's summary takes the mean of read and write.
    if opts.wants("null_io") {
        let pair = Pair {
            id: "null_io",
            tool: "lmbench 3",
            command: "lat_syscall read; lat_syscall write (mean)".into(),
            note: "ours calls from a process with other threads, whose shared file table costs each read and write a file reference; lmbench's is single-threaded (see the row's method)",
            ours: Box::new(|| ours("null_io")),
            theirs: Box::new(|| {
                let r = lm.value("lat_syscall", &[os("read")], &[])?;
                let w = lm.value("lat_syscall", &[os("write")], &[])?;
                Ok((r + w) / 2.0)
            }),
        };
        rows.push(run_pair(pair, "null I/O", UNIT_US, rounds, progress));
    }

    // TCP, against lmbench's own servers on 127.0.0.1.
    for (id, label, unit, prog, args) in [
        ("tcp_lat", "TCP lat", UNIT_US, "lat_tcp", vec!["127.0.0.1"]),
        ("tcp_bw", "TCP bw", UNIT_MBS, "bw_tcp", vec!["-m", "64k", "127.0.0.1"]),
    ]
    .into_iter()
    .filter(|t| opts.wants(t.0))
    {
        let server = LmServer::start(lm, prog);
        let server_err = server.as_ref().err().cloned();
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let pair = Pair {
            id,
            tool: "lmbench 3",
            command: format!("{} (server: {prog} -s)", shown(prog, &args, &[])),
            note: "",
            ours: Box::new(|| ours(id)),
            theirs: Box::new(|| match &server_err {
                Some(e) => Err(format!("{prog} -s: {e}")),
                None => lm.value(prog, &args, &[]),
            }),
        };
        rows.push(run_pair(pair, label, unit, rounds, progress));
        drop(server);
    }
    drop(hello);
    rows
}

// ---------------------------------------------------------------- Markdown

/// The cross-check as a Markdown section (a level-2 heading, the table, the
/// skipped tools), for the CLI and the report.
pub fn markdown(c: &CrossCheck) -> String {
    let mut out = String::new();
    out.push_str("## Cross-check against independent tools\n\n");
    let _ = writeln!(
        out,
        "Each row is one of our native rows and an independent tool measuring the same thing, run alternately in one \
         invocation ({} round{} each{}); the values are medians, and the ratio is ours ÷ theirs, \"yes\" when within \
         ±{:.0}%. These machines are noisy: a ratio is a comparison, not a pass mark.\n",
        c.rounds,
        if c.rounds == 1 { "" } else { "s" },
        if c.quick { ", quick mode" } else { "" },
        WITHIN * 100.0
    );
    if c.rows.is_empty() {
        out.push_str("No tool ran.\n\n");
    } else {
        out.push_str("| row | tool | unit | ours | theirs | ours ÷ theirs | within ±10% | tool command |\n");
        out.push_str("|---|---|---|---:|---:|---:|---|---|\n");
        for r in &c.rows {
            let v = |x: Option<f64>| x.map(fmt_value).unwrap_or_else(|| "n/a".into());
            let ratio = match (r.ratio, &r.na_reason) {
                (Some(x), _) => format!("{x:.2}"),
                (None, Some(why)) => format!("n/a ({})", cell(why)),
                (None, None) => "n/a".into(),
            };
            let within = match r.within {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            };
            let command =
                if r.note.is_empty() { cell(&r.command) } else { format!("{}; {}", cell(&r.command), cell(&r.note)) };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                cell(&r.tool),
                r.unit,
                v(r.ours_median),
                v(r.theirs_median),
                ratio,
                within,
                command
            );
        }
        out.push('\n');
    }
    if !c.skipped.is_empty() {
        out.push_str("Skipped:\n\n");
        for s in &c.skipped {
            let _ = writeln!(out, "- {}: {} (install: {})", cell(&s.tool), cell(&s.reason), cell(&s.install));
        }
        out.push('\n');
    }
    out
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The file name the report looks for beside its other results.
pub const REPORT_FILE: &str = "crosscheck.json";

/// The Markdown section for the cross-check saved as [`REPORT_FILE`] in
/// `dir`: empty when there is none, a note when it cannot be read.
pub fn section_for_dir(dir: &Path) -> String {
    let p = dir.join(REPORT_FILE);
    match std::fs::read_to_string(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => format!("## Cross-check against independent tools\n\n{} could not be read: {e}\n\n", p.display()),
        Ok(s) => match CrossCheck::from_json(&s) {
            Ok(c) => markdown(&c),
            Err(e) => {
                format!("## Cross-check against independent tools\n\n{} is not a cross-check: {e}\n\n", p.display())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmbench_lines_parse() {
        assert_eq!(parse_lmbench("Simple syscall: 0.2104 microseconds\n"), Ok(0.2104));
        assert_eq!(parse_lmbench("Pagefaults on /tmp/x: 1.0654 microseconds"), Ok(1.0654));
        assert_eq!(parse_lmbench("67.11 9071.94\n"), Ok(9071.94));
        assert_eq!(parse_lmbench("\n\"size=0k ovr=1.51\n2 4.74\n\n"), Ok(4.74));
        assert_eq!(parse_lmbench("0.065536 1615.71 MB/sec"), Ok(1615.71));
        assert_eq!(parse_lmbench("TCP latency using 127.0.0.1: 16.0930 microseconds"), Ok(16.093));
        assert!(parse_lmbench("usage: lat_syscall null|read").is_err());
        assert!(parse_lmbench("").is_err());
    }

    #[test]
    fn perf_and_sysbench_parse() {
        let perf = "# Running 'sched/pipe' benchmark:\n# Executed 20000 pipe operations between two processes\n\n     Total time: 0.114 [sec]\n\n       5.741500 usecs/op\n         174170 ops/sec\n";
        assert_eq!(parse_perf_usecs_per_op(perf), Ok(5.7415));
        assert!(parse_perf_usecs_per_op("perf: command not found").is_err());
        let sb = "Total operations: 64 (  156.53 per second)\n\n4096.00 MiB transferred (10022.70 MiB/sec)\n";
        assert_eq!(parse_sysbench_mib_s(sb), Ok(10022.70));
        assert!(parse_sysbench_mib_s("FATAL: invalid option").is_err());
    }

    #[test]
    fn iperf_json_parses() {
        let ok = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":8e10},"sum_received":{"bits_per_second":6.4e10}}}"#;
        assert_eq!(parse_iperf_mb_s(ok), Ok(8000.0));
        let err = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(parse_iperf_mb_s(err).unwrap_err().contains("connect"));
        assert!(parse_iperf_mb_s("not json").is_err());
    }

    #[test]
    fn summary_ratio_and_markdown() {
        let r = summarize(
            "tcp_bw",
            "TCP bw",
            UNIT_MBS,
            "iperf3",
            "iperf3 -c".into(),
            "",
            vec![110.0, 100.0, 120.0],
            vec![100.0, 105.0, 95.0],
            vec![],
        );
        assert_eq!(r.ratio, Some(1.1));
        assert_eq!(r.within, Some(true));
        let bad =
            summarize("x", "x", UNIT_US, "t", "t".into(), "", vec![1.0], vec![], vec!["t: failed | badly".into()]);
        assert_eq!(bad.ratio, None);
        assert_eq!(bad.within, None);
        let c = CrossCheck {
            env: Environment::default(),
            quick: true,
            rounds: 1,
            rows: vec![r, bad],
            skipped: vec![Skipped {
                tool: "sysbench".into(),
                reason: "not installed".into(),
                install: "sysbench".into(),
            }],
        };
        let md = markdown(&c);
        assert!(md.contains("| tcp_bw | iperf3 | MB/s | 110 | 100 | 1.10 | yes |"), "{md}");
        assert!(md.contains("n/a (t: failed \\| badly)"), "{md}");
        assert!(md.contains("- sysbench: not installed (install: sysbench)"));
        assert_eq!(CrossCheck::from_json(&c.to_json().unwrap()).unwrap(), c);
    }

    #[test]
    fn section_for_dir_reads_the_saved_result() {
        let dir = std::env::temp_dir().join(format!("migbench-xc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(section_for_dir(&dir), "");
        std::fs::write(dir.join(REPORT_FILE), "{").unwrap();
        assert!(section_for_dir(&dir).contains("is not a cross-check"));
        let c = CrossCheck { env: Environment::default(), quick: false, rounds: 3, rows: vec![], skipped: vec![] };
        std::fs::write(dir.join(REPORT_FILE), c.to_json().unwrap()).unwrap();
        assert!(section_for_dir(&dir).contains("No tool ran."));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
