//! The native rows: lmbench-style measurements in a host process (Linux).
//!
//! This module owns what each native row runs and says about itself. Every
//! row is measured with the [`Harness`] (lmbench's method) and comes back as
//! a [`Row`] with a stable id, its unit (µs for latencies, MB/s with
//! MB = 10^6 for bandwidth), the value or "n/a" with the reason, and a
//! `method` saying exactly what was timed.
//!
//! Rows, in order (ids):
//! * processes: `null_call`, `null_io`, `stat`, `open_close`, `select_tcp`, `sig_install`,
//!   `sig_handle`, `fork_exit`, `fork_exec`, `fork_sh`;
//! * context switches: `ctx_{2,8,16}p_{0,16,64}k` (pinned to one CPU, as
//!   lmbench with `LMBENCH_SCHED=SINGLE`) and the same with `_unpinned`
//!   (scheduler's choice, lmbench's default);
//! * file and VM: `fs_{create,delete}_{0,10}k` (lmbench lat_fs), `mmap_lat`, `prot_fault`, `page_fault` (lmbench
//!   `lat_pagefault`: faults on a mapped, cached file), `anon_fault`
//!   (anonymous first touch, which lmbench does not measure);
//! * memory: `mem_rd_bw`, `mem_wr_bw`, `mem_cp_bw`, `mem_lat_<size>` for
//!   512 B..64 MiB (`512b`, `1k`, ..., `64m`);
//! * network: `tcp_lat`, `tcp_bw`.
//!
//! Each row's method ends with how it still differs from lmbench 3, where it
//! does, in one sentence.
//!
//! Forked children only call async-signal-safe functions (`read`, `write`,
//! `close`, `execve`, `_exit`) and the allocation-free kernels, so forking
//! from a multi-threaded process (a test runner, a CLI with threads) is safe.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Harness, HarnessError, Measurement, Summary, DEFAULT_ENOUGH};
use crate::kernels;
use crate::report::{Row, UNIT_MBS, UNIT_US};

/// ENOUGH in quick mode, unless [`NativeOptions::enough`] says otherwise.
pub const QUICK_ENOUGH: Duration = Duration::from_millis(1);
/// Process counts of the context-switch rows.
pub const CTX_PROCS: [usize; 3] = [2, 8, 16];
/// Per-process working sets of the context-switch rows, KiB.
pub const CTX_KIB: [usize; 3] = [0, 16, 64];
/// Default buffer size of the bandwidth rows (each buffer; copy uses two).
pub const DEFAULT_BW_BYTES: usize = 64 << 20;
/// Buffer size of the bandwidth rows in quick mode.
pub const QUICK_BW_BYTES: usize = 32 << 20;
/// Size of the file region mapped and unmapped by `mmap_lat`.
pub const MMAP_BYTES: usize = 1 << 20;
/// lmbench `lat_mmap` (without `-r`) writes one byte every this many bytes
/// (its `PSIZE`, 16 KiB)...
pub const MMAP_TOUCH_STRIDE: usize = 16 << 10;
/// ...in the first this-many-th of the mapping (its `N`, 10).
pub const MMAP_TOUCHED_PART: usize = 10;
/// Message size of `tcp_bw`.
pub const TCP_MSG_BYTES: usize = 64 << 10;
/// Sockets `select_tcp` selects on (lmbench's summary uses 100).
pub const SELECT_FDS: usize = 100;
/// File sizes of the file create/delete rows, KiB (the paper's Table 5).
pub const FS_KIB: [usize; 2] = [0, 10];

const PAGE: usize = 4096;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct NativeOptions {
    /// Shrink the work (ENOUGH 1 ms, fewer memory-latency sizes, smaller
    /// buffers) so the suite finishes in seconds.
    pub quick: bool,
    /// Run only rows whose id starts with one of these (empty: all rows).
    pub only: Vec<String>,
    /// ENOUGH; default 5 ms, or 1 ms in quick mode.
    pub enough: Option<Duration>,
    /// Buffer size of the bandwidth rows; default 64 MiB (32 MiB quick).
    pub bw_bytes: Option<usize>,
}

impl NativeOptions {
    /// Whether the row `id` passes the `only` filter (prefix match).
    pub fn selects(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// ENOUGH in force.
    pub fn effective_enough(&self) -> Duration {
        self.enough.unwrap_or(if self.quick { QUICK_ENOUGH } else { DEFAULT_ENOUGH })
    }

    /// Buffer size of the bandwidth rows in force.
    pub fn bw_bytes(&self) -> usize {
        self.bw_bytes.unwrap_or(if self.quick { QUICK_BW_BYTES } else { DEFAULT_BW_BYTES }).max(4096)
    }
}

/// Sizes of the memory-latency curve: every power of two from 512 B to
/// 64 MiB, or a subset of them in quick mode.
pub fn mem_lat_sizes(quick: bool) -> Vec<usize> {
    if quick {
        vec![512, 4 << 10, 32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
    } else {
        (9..=26).map(|s| 1usize << s).collect()
    }
}

/// Short size tag used in row ids: 512 -> "512b", 4096 -> "4k", 1 MiB -> "1m".
pub fn size_tag(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}m", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}k", bytes >> 10)
    } else {
        format!("{bytes}b")
    }
}

/// Human size: 512 -> "512 B", 4096 -> "4 KiB", 1 MiB -> "1 MiB".
fn size_human(bytes: usize) -> String {
    let t = size_tag(bytes);
    if let Some(m) = t.strip_suffix('m') {
        format!("{m} MiB")
    } else if let Some(k) = t.strip_suffix('k') {
        format!("{k} KiB")
    } else {
        format!("{bytes} B")
    }
}

/// Context-switch row id, e.g. `ctx_2p_16k`.
pub fn ctx_id(procs: usize, kib: usize) -> String {
    format!("ctx_{procs}p_{kib}k")
}

/// Unpinned context-switch row id, e.g. `ctx_2p_16k_unpinned`.
pub fn ctx_unpinned_id(procs: usize, kib: usize) -> String {
    format!("ctx_{procs}p_{kib}k_unpinned")
}

type Body = Box<dyn Fn(&Ctx) -> Result<(f64, String), String>>;

struct Spec {
    id: String,
    label: String,
    unit: &'static str,
    /// What is measured (always in the row's method, measured or not).
    what: String,
    run: Body,
}

fn spec(id: &str, label: &str, unit: &'static str, what: &str, run: Body) -> Spec {
    Spec { id: id.to_string(), label: label.to_string(), unit, what: what.to_string(), run }
}

struct Ctx {
    h: Harness,
    quick: bool,
    bw_bytes: usize,
    dir: ScratchDir,
}

/// A private scratch directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "migbench-native-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// All row specs, in table order (nothing runs until a spec's `run`).
fn specs(opts: &NativeOptions) -> Vec<Spec> {
    let mut v = vec![
        spec(
            "null_call",
            "null call",
            UNIT_US,
            "getppid via syscall(SYS_getppid) (not cached by libc); lmbench lat_syscall null times getppid() too",
            Box::new(null_call),
        ),
        spec(
            "null_io",
            "null I/O",
            UNIT_US,
            "mean of a 1-byte read(2) of /dev/zero and a 1-byte write(2) to /dev/null (lmbench summary's null I/O, the mean of lat_syscall read and write); differs from lmbench in the process that calls: migbench's has other threads (the detail counts them), so its file table is shared and the kernel takes and drops a reference on the file at every call, where lmbench's single-threaded process takes the light path (a C loop with one idle thread alive: 1.2 to 1.3 times slower per call)",
            Box::new(null_io),
        ),
        spec(
            "stat",
            "stat",
            UNIT_US,
            "stat(2) of a small file in the scratch dir; lmbench lat_syscall stat stats the file it is given",
            Box::new(stat_row),
        ),
        spec(
            "open_close",
            "open/close",
            UNIT_US,
            "open(2) O_RDONLY + close(2) of a small file in the scratch dir; lmbench lat_syscall open does the same on the file it is given",
            Box::new(open_close),
        ),
        spec(
            "select_tcp",
            "slct TCP",
            UNIT_US,
            &format!(
                "select(2) with a zero timeout on {SELECT_FDS} connected, idle loopback TCP sockets (none readable), as lmbench lat_select -n {SELECT_FDS} tcp; differs from lmbench in the sockets' peer, a listener of this process rather than a separate server process"
            ),
            Box::new(select_tcp),
        ),
        spec(
            "sig_install",
            "sig inst",
            UNIT_US,
            "sigaction(2) installing a SIGUSR1 handler (lmbench lat_sig install)",
            Box::new(sig_install),
        ),
        spec(
            "sig_handle",
            "sig hndl",
            UNIT_US,
            "tgkill(2) of SIGUSR1 to the calling thread, delivered to an installed handler that counts it, minus the cost of sending signal 0 (no delivery), as lmbench lat_sig catch subtracts kill(me, 0); differs from lmbench in sending with tgkill(2) to the thread, where lmbench uses kill(2) to the process",
            Box::new(sig_handle),
        ),
        spec(
            "fork_exit",
            "fork proc",
            UNIT_US,
            "fork(2); the child _exit(0)s; the parent waitpid(2)s; differs from lmbench lat_proc fork in the size of the forking process (the whole migbench binary, or migbench-agent in the Linux guest, not lmbench's small benchmark child), which fork's page-table copy scales with (the detail gives its VmRSS and VmPTE)",
            Box::new(fork_exit),
        ),
        spec(
            "fork_exec",
            "exec proc",
            UNIT_US,
            "fork(2); the child execve(2)s /bin/true with an empty environment; the parent waitpid(2)s; differs from lmbench lat_proc exec in the size of the forking process, as fork_exit does (its fork copies the page tables of the whole migbench binary), and in the program: on a Debian host /bin/true, like lmbench's /tmp/hello, is a dynamically linked C program that loads only libc and returns from main (in the Linux guest it is busybox, statically linked; the detail names the file it resolves to) (lmbench times a failed execve, about a fork, if /tmp/hello is missing)",
            Box::new(fork_exec),
        ),
        spec(
            "fork_sh",
            "sh proc",
            UNIT_US,
            "fork(2); the child execve(2)s /bin/sh -c /bin/true (as lmbench lat_proc shell runs sh -c /tmp/hello); the parent waitpid(2)s",
            Box::new(fork_sh),
        ),
    ];
    for pinned in [true, false] {
        for &p in &CTX_PROCS {
            for &k in &CTX_KIB {
                let (id, label, placement) = if pinned {
                    (ctx_id(p, k), format!("ctx {p}p/{k}K"), "all pinned to one CPU (lmbench LMBENCH_SCHED=SINGLE)")
                } else {
                    (
                        ctx_unpinned_id(p, k),
                        format!("ctx {p}p/{k}K unpinned"),
                        "not pinned: the scheduler places the processes, so hops may cross CPUs (lmbench's default)",
                    )
                };
                v.push(spec(
                    &id,
                    &label,
                    UNIT_US,
                    &format!(
                        "context switch: ring of {p} processes passing a 1-byte token through pipes, each summing its own {k} KiB before passing it on; {placement}; per hop, minus the single-process overhead (token through a pipe to itself + the sum), as lmbench lat_ctx -s {k} {p}; differs from lmbench in summing 64-bit words (lmbench sums ints)"
                    ),
                    Box::new(move |c: &Ctx| ctx_switch(c, p, k, pinned)),
                ));
            }
        }
    }
    for kib in FS_KIB {
        for delete in [false, true] {
            let (op, what) = if delete {
                ("delete", "unlink(2) of each")
            } else {
                ("create", "open(2) O_CREAT|O_EXCL, a write(2) of the file's bytes (none for 0K) and close(2) of each")
            };
            v.push(spec(
                &format!("fs_{op}_{kib}k"),
                &format!("{kib}K {op}"),
                UNIT_US,
                &format!(
                    "file {op}: {what} of a batch of fresh {kib} KiB files in one scratch directory, per file, as lmbench lat_fs (which reports files per second; we give its inverse); the {} is created untimed; differs from lmbench in the batch size (calibrated to ENOUGH, where lmbench makes 1000 files) and the file system, whatever holds the temp dir (named below), where the paper's was a local disk",
                    if delete { "batch" } else { "directory" }
                ),
                Box::new(move |c: &Ctx| fs_latency(c, kib, delete)),
            ));
        }
    }
    v.push(spec(
        "mmap_lat",
        "mmap lat",
        UNIT_US,
        &format!(
            "mmap(2) of a {} file region (PROT_READ|PROT_WRITE, MAP_SHARED), a 1-byte write every {} in its first 1/{}, munmap(2), as lmbench lat_mmap (without -r)",
            size_human(MMAP_BYTES),
            size_human(MMAP_TOUCH_STRIDE),
            MMAP_TOUCHED_PART
        ),
        Box::new(mmap_lat),
    ));
    v.push(spec(
        "prot_fault",
        "prot fault",
        UNIT_US,
        "a 1-byte write to a present read-only page: SIGSEGV, a handler, and sigreturn, minus the sig_handle cost (delivery and return of a sent signal), as lmbench lat_sig prot subtracts its catch cost; differs from lmbench in the page (anonymous, where lmbench maps a file) and in the handler stepping over the store, where lmbench's returns and lets the store fault again",
        Box::new(prot_fault),
    ));
    v.push(spec(
        "page_fault",
        "page fault",
        UNIT_US,
        "lmbench lat_pagefault: read one byte of every page, in a fixed random order, of a file in the page cache mapped MAP_SHARED, PROT_READ; per page touched, including the extra munmap(2) cost of the populated mapping (an mmap+munmap+msync(MS_INVALIDATE) of an untouched mapping is timed separately and subtracted); the kernel's fault-around maps several pages per fault, so this is less than one fault per page, exactly as in lmbench; differs from lmbench in the file, 16 MiB (4 MiB quick) written in 64 KiB writes, where lmbench's run script uses a file of 70% of memory: the figure depends on the file's size and on how it was written (the page cache's folio sizes)",
        Box::new(page_fault),
    ));
    v.push(spec(
        "anon_fault",
        "anon fault",
        UNIT_US,
        "first-touch 1-byte write to each page of a fresh anonymous private mapping (MADV_NOHUGEPAGE, so each 4 KiB page is one zero-fill fault); time per minor fault counted by getrusage(RUSAGE_THREAD); lmbench has no such row (its page fault is page_fault)",
        Box::new(anon_fault),
    ));
    let bw = size_human(opts.bw_bytes());
    v.push(spec(
        "mem_rd_bw",
        "mem rd bw",
        UNIT_MBS,
        &format!(
            "kernels::read_sum over a {bw} buffer, MB = 10^6 B (lmbench bw_mem rd); differs from lmbench in reading every 64-bit word, where lmbench reads one int per 16 bytes, though both fetch every cache line"
        ),
        Box::new(|c: &Ctx| mem_bw(c, BwKind::Read)),
    ));
    v.push(spec(
        "mem_wr_bw",
        "mem wr bw",
        UNIT_MBS,
        &format!(
            "kernels::write_fill over a {bw} buffer, MB = 10^6 B (lmbench bw_mem wr); differs from lmbench in storing every 64-bit word, where lmbench stores one int per 16 bytes, though both write every cache line"
        ),
        Box::new(|c: &Ctx| mem_bw(c, BwKind::Write)),
    ));
    v.push(spec(
        "mem_cp_bw",
        "mem cp bw",
        UNIT_MBS,
        &format!(
            "kernels::copy from one {bw} buffer to another, bytes copied per second, MB = 10^6 B (lmbench bw_mem cp); differs from lmbench in copying every 64-bit word, where lmbench copies one int per 16 bytes, though both move every cache line"
        ),
        Box::new(|c: &Ctx| mem_bw(c, BwKind::Copy)),
    ));
    for size in mem_lat_sizes(opts.quick) {
        v.push(spec(
            &format!("mem_lat_{}", size_tag(size)),
            &format!("mem lat {}", size_human(size)),
            UNIT_US,
            &format!(
                "kernels::chase: dependent loads around a {} ring of 64-byte lines in one random cycle (Sattolo, fixed seed), minimum over repetitions (lmbench lat_mem_rd)",
                size_human(size)
            ),
            Box::new(move |c: &Ctx| mem_lat(c, size)),
        ));
    }
    v.push(spec(
        "tcp_lat",
        "TCP lat",
        UNIT_US,
        "1-byte round trip over TCP on 127.0.0.1 (TCP_NODELAY) to an echo server; differs from lmbench lat_tcp in the server being a thread of this process, not a separate process",
        Box::new(tcp_lat),
    ));
    v.push(spec(
        "tcp_bw",
        "TCP bw",
        UNIT_MBS,
        &format!(
            "{} KiB write(2)s over TCP on 127.0.0.1 to a server process that reads them all, then acks; MB = 10^6 B; as lmbench bw_tcp -m 64k and iperf3 -l 64K",
            TCP_MSG_BYTES >> 10
        ),
        Box::new(tcp_bw),
    ));
    v
}

/// Ids of the rows [`run`] would produce for `opts` (after the `only`
/// filter), in order.
pub fn row_ids(opts: &NativeOptions) -> Vec<String> {
    specs(opts).into_iter().map(|s| s.id).filter(|id| opts.selects(id)).collect()
}

/// Run the native rows selected by `opts`, in order, calling `progress`
/// with each row's id before it runs. Never fails: a row that cannot run
/// comes back as "n/a" with the reason.
pub fn run(opts: &NativeOptions, progress: &mut dyn FnMut(&str)) -> Vec<Row> {
    run_selected(opts, &|id| opts.selects(id), progress)
}

/// Run the one row whose id is exactly `id` (the `only` filter is ignored);
/// `None` when there is no such row.
pub fn run_one(opts: &NativeOptions, id: &str) -> Option<Row> {
    run_selected(opts, &|i| i == id, &mut |_| {}).pop()
}

/// The row `id` as "n/a" with `reason`, with its label, unit and method as
/// a run would give them (for a runner that could not get the row, such as
/// one that killed it past its time budget); `None` when there is no such
/// row.
pub fn na_row(opts: &NativeOptions, id: &str, reason: String) -> Option<Row> {
    specs(opts).into_iter().find(|s| s.id == id).map(|s| Row::na(&s.id, &s.label, s.unit, reason, s.what))
}

fn run_selected(opts: &NativeOptions, select: &dyn Fn(&str) -> bool, progress: &mut dyn FnMut(&str)) -> Vec<Row> {
    let selected: Vec<Spec> = specs(opts).into_iter().filter(|s| select(&s.id)).collect();
    if selected.is_empty() {
        return Vec::new();
    }
    let dir = match ScratchDir::new() {
        Ok(d) => d,
        Err(e) => {
            return selected.iter().map(|s| Row::na(&s.id, &s.label, s.unit, e.clone(), s.what.clone())).collect()
        }
    };
    let ctx = Ctx { h: Harness::new(opts.effective_enough()), quick: opts.quick, bw_bytes: opts.bw_bytes(), dir };
    let mut rows = Vec::with_capacity(selected.len());
    for s in &selected {
        progress(&s.id);
        let row = match (s.run)(&ctx) {
            Ok((v, detail)) if v.is_finite() && v > 0.0 => {
                Row::measured(&s.id, &s.label, s.unit, v, format!("{}; {}", s.what, detail))
            }
            Ok((v, detail)) => Row::na(
                &s.id,
                &s.label,
                s.unit,
                format!(
                    "value after overhead subtraction is {v:.4} {} (not above zero): the subtracted overhead is larger than the effect, so noise dominates",
                    s.unit
                ),
                format!("{}; {}", s.what, detail),
            ),
            Err(reason) => Row::na(&s.id, &s.label, s.unit, reason, s.what.clone()),
        };
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------- helpers

fn harness_err(e: HarnessError) -> String {
    e.to_string()
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// How a measurement was summarised, for a row's method.
fn how(c: &Ctx, m: &Measurement, s: Summary) -> String {
    format!(
        "{} of {} repetitions of {} iterations (count calibrated so an interval lasts ENOUGH = {:.1} ms); timer {:.0} ns/interval{} subtracted",
        match s {
            Summary::Median => "median",
            Summary::Minimum => "minimum",
        },
        m.per_iter_ns.len(),
        m.iterations,
        c.h.enough.as_secs_f64() * 1e3,
        m.timer_overhead_ns,
        if m.loop_overhead_ns > 0.0 {
            format!(" and loop {:.2} ns/iteration", m.loop_overhead_ns)
        } else {
            String::new()
        }
    )
}

fn median_us(c: &Ctx, m: Result<Measurement, HarnessError>) -> Result<(f64, String), String> {
    let m = m.map_err(harness_err)?;
    Ok((m.us(Summary::Median), how(c, &m, Summary::Median)))
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("path {} has a NUL byte", p.display()))
}

fn make_file(c: &Ctx, name: &str, bytes: usize) -> Result<PathBuf, String> {
    let p = c.dir.0.join(name);
    write_file(&p, bytes)?;
    Ok(p)
}

/// Bytes per write(2) when making a scratch file. The page cache's folio
/// sizes follow the writes, and a fault maps at most a folio or the
/// fault-around window, so `page_fault` depends on this.
pub const FILE_WRITE_BYTES: usize = 64 << 10;

/// Size of the file `page_fault` maps (quick or not).
pub fn fault_file_bytes(quick: bool) -> usize {
    if quick {
        4 << 20
    } else {
        16 << 20
    }
}

/// Writes `bytes` bytes of 0x5a to `p` in [`FILE_WRITE_BYTES`] writes, so
/// the file is in the page cache afterwards (as the native rows' files are;
/// the cross-check gives lmbench a file made the same way).
pub fn write_file(p: &Path, bytes: usize) -> Result<(), String> {
    let mut f = File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    let chunk = vec![0x5au8; FILE_WRITE_BYTES];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len());
        f.write_all(&chunk[..k]).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        left -= k;
    }
    Ok(())
}

// ---------------------------------------------------------------- processes

fn null_call(c: &Ctx) -> Result<(f64, String), String> {
    median_us(
        c,
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: getppid takes no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            Ok(())
        }),
    )
}

fn null_io(c: &Ctx) -> Result<(f64, String), String> {
    let zero = File::open("/dev/zero").map_err(|e| format!("cannot open /dev/zero: {e}"))?;
    let null = OpenOptions::new().write(true).open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let (zfd, nfd) = (zero.as_raw_fd(), null.as_raw_fd());
    let mut byte = [0u8; 1];
    let rd =
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: `byte` is a live 1-byte buffer; zfd is open.
                if unsafe { libc::read(zfd, byte.as_mut_ptr().cast(), 1) } != 1 {
                    return Err(os_err("read /dev/zero"));
                }
            }
            Ok(())
        })
        .map_err(harness_err)?;
    let wr =
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: `byte` is a live 1-byte buffer; nfd is open.
                if unsafe { libc::write(nfd, byte.as_ptr().cast(), 1) } != 1 {
                    return Err(os_err("write /dev/null"));
                }
            }
            Ok(())
        })
        .map_err(harness_err)?;
    let (r, w) = (rd.us(Summary::Median), wr.us(Summary::Median));
    let threads = proc_status(["Threads"]).map_or_else(|e| format!("? ({e})"), |[n]| n);
    Ok((
        (r + w) / 2.0,
        format!(
            "read {r:.4} µs, write {w:.4} µs; threads in this process: {threads}; {}",
            how(c, &rd, Summary::Median)
        ),
    ))
}

fn stat_row(c: &Ctx) -> Result<(f64, String), String> {
    let p = make_file(c, "stat-file", 1024)?;
    let cp = cpath(&p)?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    median_us(
        c,
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: `cp` is a NUL-terminated path, `st` a live stat buffer.
                if unsafe { libc::stat(cp.as_ptr(), &mut st) } != 0 {
                    return Err(os_err("stat"));
                }
            }
            Ok(())
        }),
    )
}

fn open_close(c: &Ctx) -> Result<(f64, String), String> {
    let p = make_file(c, "open-file", 1024)?;
    let cp = cpath(&p)?;
    median_us(
        c,
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: `cp` is a NUL-terminated path.
                let fd = unsafe { libc::open(cp.as_ptr(), libc::O_RDONLY) };
                if fd < 0 {
                    return Err(os_err("open"));
                }
                // SAFETY: `fd` was just opened by us and is closed once.
                unsafe { libc::close(fd) };
            }
            Ok(())
        }),
    )
}

static USR1_COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn usr1_handler(_sig: c_int) {
    USR1_COUNT.fetch_add(1, Ordering::Relaxed);
}

/// A sigaction for `handler` (an `extern "C"` function address) with
/// `flags` and an empty mask.
fn make_sigaction(handler: usize, flags: c_int) -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    // SAFETY: `sa.sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    sa
}

/// Installs `sa` for `sig` and restores the previous action on drop.
struct SigGuard {
    sig: c_int,
    old: libc::sigaction,
}

impl SigGuard {
    fn install(sig: c_int, sa: &libc::sigaction) -> Result<Self, String> {
        // SAFETY: an all-zero sigaction is a valid value to be overwritten.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sa` and `old` are live sigaction structs.
        if unsafe { libc::sigaction(sig, sa, &mut old) } != 0 {
            return Err(os_err("sigaction"));
        }
        Ok(SigGuard { sig, old })
    }
}

impl Drop for SigGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the action that sigaction returned earlier.
        unsafe { libc::sigaction(self.sig, &self.old, std::ptr::null_mut()) };
    }
}

fn sig_install(c: &Ctx) -> Result<(f64, String), String> {
    let sa = make_sigaction(usr1_handler as extern "C" fn(c_int) as usize, 0);
    let _restore = SigGuard::install(libc::SIGUSR1, &sa)?;
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    median_us(
        c,
        c.h.measure(&mut |n| {
            for _ in 0..n {
                // SAFETY: `sa` and `old` are live sigaction structs.
                if unsafe { libc::sigaction(libc::SIGUSR1, &sa, &mut old) } != 0 {
                    return Err(os_err("sigaction"));
                }
            }
            Ok(())
        }),
    )
}

/// lmbench's signal catch cost: a SIGUSR1 sent to this thread and caught by
/// an installed handler, minus sending signal 0 (checked, never delivered).
/// Returns (catch µs, send µs, the catch measurement).
fn sig_catch(c: &Ctx) -> Result<(f64, f64, Measurement), String> {
    let sa = make_sigaction(usr1_handler as extern "C" fn(c_int) as usize, 0);
    let _restore = SigGuard::install(libc::SIGUSR1, &sa)?;
    // SAFETY: getpid and gettid take no arguments and cannot fail.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    let send = |sig: c_int| {
        // SAFETY: sends `sig` (SIGUSR1, which has a handler, or 0, which is
        // only checked) to this thread.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) == 0 }
    };
    let sent =
        c.h.measure(&mut |n| {
            for _ in 0..n {
                if !send(0) {
                    return Err(os_err("tgkill"));
                }
            }
            Ok(())
        })
        .map_err(harness_err)?;
    let caught =
        c.h.measure(&mut |n| {
            let before = USR1_COUNT.load(Ordering::Relaxed);
            for _ in 0..n {
                if !send(libc::SIGUSR1) {
                    return Err(os_err("tgkill"));
                }
            }
            let got = USR1_COUNT.load(Ordering::Relaxed).wrapping_sub(before);
            if got != n {
                return Err(format!("sent {n} signals, handler saw {got}"));
            }
            Ok(())
        })
        .map_err(harness_err)?;
    let send_us = sent.us(Summary::Median);
    Ok((caught.us(Summary::Median) - send_us, send_us, caught))
}

fn sig_handle(c: &Ctx) -> Result<(f64, String), String> {
    let (catch_us, send_us, m) = sig_catch(c)?;
    Ok((catch_us, format!("sending signal 0 {send_us:.4} µs subtracted; {}", how(c, &m, Summary::Median))))
}

/// Fork `n` children that run `child` (which should not return, and may only
/// call async-signal-safe functions; a child that returns `_exit(127)`s),
/// waiting for each; all must exit 0.
fn fork_wait_loop(n: u64, child: &dyn Fn()) -> Result<(), String> {
    for _ in 0..n {
        // SAFETY: the child runs only `child`, which calls async-signal-safe
        // functions and ends in execve or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork"));
        }
        if pid == 0 {
            child();
            // SAFETY: _exit is async-signal-safe and ends the child.
            unsafe { libc::_exit(127) };
        }
        let mut status: c_int = 0;
        // SAFETY: waiting for our own child; `status` is a live int.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(os_err("waitpid"));
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!("child exited abnormally (wait status {status:#x})"));
        }
    }
    Ok(())
}

/// Fields of `/proc/self/status` by name ("VmRSS", "Threads"), each "?"
/// where absent; `Err` says why the file could not be read.
fn proc_status<const N: usize>(names: [&str; N]) -> Result<[String; N], String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    Ok(names.map(|name| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map_or_else(|| "?".to_owned(), |v| v.trim().replace(" kB", " KiB"))
    }))
}

/// The size of this (the forking) process, which fork's page-table copy
/// scales with: `VmRSS` and `VmPTE`, or why unknown.
fn forking_process_size() -> String {
    match proc_status(["VmRSS", "VmPTE"]) {
        Ok([rss, pte]) => format!("forking process: VmRSS {rss}, page tables (VmPTE) {pte}"),
        Err(e) => format!("forking process size unknown ({e})"),
    }
}

/// Times `fork_wait_loop` with `child`; the detail names the forking
/// process's size.
fn fork_measure(c: &Ctx, child: &dyn Fn()) -> Result<(f64, String), String> {
    let size = forking_process_size();
    median_us(c, c.h.measure(&mut |n| fork_wait_loop(n, child))).map(|(v, how)| (v, format!("{size}; {how}")))
}

fn fork_exit(c: &Ctx) -> Result<(f64, String), String> {
    let child = || {
        // SAFETY: _exit is async-signal-safe and ends the child.
        unsafe { libc::_exit(0) }
    };
    fork_measure(c, &child)
}

/// Fork+execve `argv[0]` with `argv`, empty environment.
fn fork_exec_measure(c: &Ctx, argv: &[&str]) -> Result<(f64, String), String> {
    let prog = argv.first().ok_or("empty argv")?;
    if !Path::new(prog).exists() {
        return Err(format!("{prog} not found"));
    }
    let cargs: Vec<CString> =
        argv.iter().map(|a| CString::new(*a).map_err(|_| "NUL in argv".to_string())).collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const c_char; 1] = [std::ptr::null()];
    let child = || {
        // SAFETY: argv/envp are NUL-terminated arrays of C strings that live
        // in the parent's (copied) memory; execve and _exit are
        // async-signal-safe.
        unsafe {
            libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        }
    };
    let resolved = std::fs::canonicalize(prog).map_or_else(|_| (*prog).to_string(), |p| p.display().to_string());
    let bytes = std::fs::metadata(&resolved).map(|m| m.len()).unwrap_or(0);
    fork_measure(c, &child).map(|(v, how)| (v, format!("{prog} is {resolved} ({bytes} bytes); {how}")))
}

fn fork_exec(c: &Ctx) -> Result<(f64, String), String> {
    fork_exec_measure(c, &["/bin/true"])
}

fn fork_sh(c: &Ctx) -> Result<(f64, String), String> {
    fork_exec_measure(c, &["/bin/sh", "-c", "/bin/true"])
}

// ---------------------------------------------------------------- context switch

fn pipe_pair() -> Result<(RawFd, RawFd), String> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a live array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(os_err("pipe"));
    }
    Ok((fds[0], fds[1]))
}

fn close_fd(fd: RawFd) {
    // SAFETY: closing a descriptor this code opened; errors are irrelevant.
    unsafe { libc::close(fd) };
}

fn read1(fd: RawFd, b: &mut [u8; 1]) -> bool {
    // SAFETY: `b` is a live 1-byte buffer.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) == 1 }
}

fn write1(fd: RawFd, b: &[u8; 1]) -> bool {
    // SAFETY: `b` is a live 1-byte buffer.
    unsafe { libc::write(fd, b.as_ptr().cast(), 1) == 1 }
}

/// Pins the calling thread to the CPU it is on; restores the old mask on
/// drop.
struct PinGuard {
    old: libc::cpu_set_t,
    cpu: c_int,
}

impl PinGuard {
    fn pin() -> Option<PinGuard> {
        // SAFETY: cpu_set_t is a plain bit array; zero is a valid value; the
        // sched_* calls get live pointers and the right size.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return None;
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return None;
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return None;
            }
            Some(PinGuard { old, cpu })
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the mask read in `pin`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.old) };
    }
}

/// Children of a ring, killed and reaped on drop.
struct Kids(Vec<libc::pid_t>);

impl Drop for Kids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: signalling and reaping our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
            }
        }
    }
}

/// One context-switch measurement: the ring's time per hop and the
/// single-process overhead lmbench subtracts from it.
#[derive(Clone, Debug)]
pub struct CtxHop {
    /// Time per hop of the ring, in µs, nothing subtracted (what `perf bench
    /// sched pipe` reports, per switch).
    pub raw_us: f64,
    /// The single-process overhead per hop (a token through a pipe to itself
    /// plus the sum), in µs.
    pub overhead_us: f64,
    /// The CPU the ring was pinned to, if it was.
    pub pinned_cpu: Option<i32>,
    /// The ring's measurement.
    pub measurement: Measurement,
}

impl CtxHop {
    /// The context-switch time as lmbench `lat_ctx` reports it: per hop,
    /// minus the overhead.
    pub fn switch_us(&self) -> f64 {
        self.raw_us - self.overhead_us
    }
}

/// Measures a ring of `procs` processes that each sum `kib` KiB per hop,
/// pinned to the current CPU or not, with harness `h`.
pub fn ctx_hop(h: &Harness, procs: usize, kib: usize, pinned: bool) -> Result<CtxHop, String> {
    if procs == 0 {
        return Err("a ring needs at least one process".to_string());
    }
    let words = kib * 1024 / 8;
    // Each process gets its own, written (so really allocated) data.
    let data: Vec<Vec<u64>> = (0..procs).map(|i| vec![i as u64 + 1; words]).collect();

    let pin = if pinned {
        Some(PinGuard::pin().ok_or_else(|| os_err("pinning to the current CPU (sched_setaffinity)"))?)
    } else {
        None
    };

    // Overhead: one process passing the token through a pipe to itself and
    // summing its data, per hop.
    let (or, ow) = pipe_pair()?;
    let tok = [7u8; 1];
    let mut back = [0u8; 1];
    let d0 = &data[0];
    let ovh = h.measure(&mut |n| {
        for _ in 0..n {
            std::hint::black_box(kernels::read_sum(d0));
            if !write1(ow, &tok) || !read1(or, &mut back) {
                return Err(os_err("pipe to self"));
            }
        }
        Ok(())
    });
    close_fd(or);
    close_fd(ow);
    let ovh = ovh.map_err(harness_err)?;
    let overhead_ns = ovh.ns(Summary::Median);

    // The ring: process i reads pipe i and writes pipe (i+1) % procs.
    let mut pipes = Vec::with_capacity(procs);
    for _ in 0..procs {
        match pipe_pair() {
            Ok(p) => pipes.push(p),
            Err(e) => {
                for &(r, w) in &pipes {
                    close_fd(r);
                    close_fd(w);
                }
                return Err(e);
            }
        }
    }
    let mut kids = Kids(Vec::with_capacity(procs));
    let mut fork_err = None;
    for i in 1..procs {
        // SAFETY: the child only closes descriptors, reads, writes, sums its
        // data (no allocation) and _exits: all async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            fork_err = Some(os_err("fork"));
            break;
        }
        if pid == 0 {
            let (rd, wr) = (pipes[i].0, pipes[(i + 1) % procs].1);
            for &(r, w) in &pipes {
                if r != rd {
                    close_fd(r);
                }
                if w != wr {
                    close_fd(w);
                }
            }
            let mut t = [0u8; 1];
            let mine = &data[i];
            loop {
                if !read1(rd, &mut t) {
                    break;
                }
                std::hint::black_box(kernels::read_sum(mine));
                if !write1(wr, &t) {
                    break;
                }
            }
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(0) };
        }
        kids.0.push(pid);
    }
    let (rd, wr) = (pipes[0].0, pipes[1 % procs].1);
    for &(r, w) in &pipes {
        if r != rd {
            close_fd(r);
        }
        if w != wr {
            close_fd(w);
        }
    }
    let result = match fork_err {
        Some(e) => Err(e),
        None => h
            .measure(&mut |n| {
                let mut t = [1u8; 1];
                for _ in 0..n {
                    std::hint::black_box(kernels::read_sum(d0));
                    if !write1(wr, &t) || !read1(rd, &mut t) {
                        return Err(os_err("token ring broken"));
                    }
                }
                Ok(())
            })
            .map_err(harness_err),
    };
    drop(kids);
    close_fd(rd);
    close_fd(wr);
    let pinned = pin.as_ref().map(|p| p.cpu);
    drop(pin);
    let m = result?;
    Ok(CtxHop {
        raw_us: m.ns(Summary::Median) / procs as f64 / 1000.0,
        overhead_us: overhead_ns / 1000.0,
        pinned_cpu: pinned,
        measurement: m,
    })
}

fn ctx_switch(c: &Ctx, procs: usize, kib: usize, pinned: bool) -> Result<(f64, String), String> {
    let hop = ctx_hop(&c.h, procs, kib, pinned)?;
    Ok((
        hop.switch_us(),
        format!(
            "raw {:.3} µs per hop, overhead {:.3} µs per hop subtracted; {}; {}",
            hop.raw_us,
            hop.overhead_us,
            match hop.pinned_cpu {
                Some(cpu) => format!("pinned to CPU {cpu}"),
                None => "not pinned".to_string(),
            },
            how(c, &hop.measurement, Summary::Median)
        ),
    ))
}

// ---------------------------------------------------------------- file and VM

/// A mapping, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(len: usize, prot: c_int, flags: c_int, fd: RawFd) -> Result<Map, String> {
        // SAFETY: asking the kernel for a fresh mapping; no existing memory
        // is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(Map { ptr: p.cast(), len })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn mmap_lat(c: &Ctx) -> Result<(f64, String), String> {
    let p = make_file(c, "mmap-file", MMAP_BYTES)?;
    let f =
        OpenOptions::new().read(true).write(true).open(&p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
    let fd = f.as_raw_fd();
    median_us(
        c,
        c.h.measure(&mut |n| {
            for _ in 0..n {
                let m = Map::new(MMAP_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd)?;
                let mut off = 0;
                while off < MMAP_BYTES / MMAP_TOUCHED_PART {
                    // SAFETY: `off` < MMAP_BYTES, inside the writable mapping.
                    unsafe { std::ptr::write_volatile(m.ptr.add(off), off as u8) };
                    off += MMAP_TOUCH_STRIDE;
                }
                drop(m);
            }
            Ok(())
        }),
    )
}

fn minor_faults() -> Option<i64> {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return None;
    }
    Some(ru.ru_minflt)
}

/// Page offsets of `pages` pages in a fixed random order (Fisher-Yates with
/// the kernels' SplitMix64), as lmbench's `permutation()` gives
/// lat_pagefault (with a seed from its pid).
fn page_permutation(pages: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..pages).map(|p| p * PAGE).collect();
    let mut rng = kernels::SplitMix64::new(kernels::DEFAULT_SEED);
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// A shared read-only mapping of `len` bytes of `fd`, dropped from the
/// cache's view of this mapping with msync(MS_INVALIDATE), as lmbench does
/// after each mmap.
fn map_shared_ro(len: usize, fd: RawFd) -> Result<Map, String> {
    let m = Map::new(len, libc::PROT_READ, libc::MAP_SHARED, fd)?;
    // SAFETY: `m` is a live mapping of exactly `len` bytes.
    if unsafe { libc::msync(m.ptr.cast(), len, libc::MS_INVALIDATE) } != 0 {
        return Err(os_err("msync"));
    }
    Ok(m)
}

fn page_fault(c: &Ctx) -> Result<(f64, String), String> {
    let bytes = fault_file_bytes(c.quick);
    let pages = bytes / PAGE;
    let order = page_permutation(pages);
    let p = make_file(c, "fault-file", bytes)?;
    let f = File::open(&p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
    let fd = f.as_raw_fd();
    // lmbench's two loops over one mapping that each iteration replaces:
    // "touch every page, then munmap + mmap + msync", and "munmap + mmap +
    // msync" alone; the difference is the faults (and the extra cost of
    // unmapping what they populated).
    let mut map = Some(map_shared_ro(bytes, fd)?);
    let mut passes = 0u64;
    let mut faults = 0i64;
    let mut sum = 0u8;
    let touched =
        c.h.measure(&mut |n| {
            for _ in 0..n {
                let m = map.take().ok_or("no mapping")?;
                let f0 = minor_faults().ok_or_else(|| os_err("getrusage"))?;
                for &off in &order {
                    // SAFETY: `off` < bytes, inside the readable mapping.
                    sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(m.ptr.add(off)) });
                }
                faults += minor_faults().ok_or_else(|| os_err("getrusage"))? - f0;
                passes += 1;
                drop(m);
                map = Some(map_shared_ro(bytes, fd)?);
            }
            Ok(())
        })
        .map_err(harness_err)?;
    let remap =
        c.h.measure(&mut |n| {
            for _ in 0..n {
                drop(map.take());
                map = Some(map_shared_ro(bytes, fd)?);
            }
            Ok(())
        })
        .map_err(harness_err)?;
    drop(map);
    std::hint::black_box(sum);
    if faults <= 0 || passes == 0 {
        return Err("no minor faults were counted while touching the mapped file".to_string());
    }
    let per_pass_faults = faults as f64 / passes as f64;
    let (touch_ns, remap_ns) = (touched.ns(Summary::Median), remap.ns(Summary::Median));
    Ok((
        (touch_ns - remap_ns) / pages as f64 / 1000.0,
        format!(
            "{} file, {pages} pages per pass, {per_pass_faults:.1} faults per pass ({:.2} pages mapped per fault: kernel fault-around), {:.4} µs per fault; remap {:.1} µs per pass subtracted; {}",
            size_human(bytes),
            pages as f64 / per_pass_faults,
            (touch_ns - remap_ns) / per_pass_faults / 1000.0,
            remap_ns / 1000.0,
            how(c, &touched, Summary::Median)
        ),
    ))
}

fn anon_fault(c: &Ctx) -> Result<(f64, String), String> {
    let bytes: usize = if c.quick { 4 << 20 } else { 16 << 20 };
    let pages = bytes / PAGE;
    let mut passes = 0u64;
    let mut faults = 0i64;
    let m =
        c.h.measure_timed(&mut |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let m =
                    Map::new(bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
                // SAFETY: advising on exactly the mapping just made. Without
                // it a transparent huge page would turn 512 faults into one.
                if unsafe { libc::madvise(m.ptr.cast(), bytes, libc::MADV_NOHUGEPAGE) } != 0 {
                    return Err(os_err("madvise(MADV_NOHUGEPAGE)"));
                }
                let f0 = minor_faults().ok_or_else(|| os_err("getrusage"))?;
                let t = Instant::now();
                for pg in 0..pages {
                    // SAFETY: pg * PAGE < bytes, inside the writable mapping.
                    unsafe { std::ptr::write_volatile(m.ptr.add(pg * PAGE), 1) };
                }
                total += t.elapsed();
                faults += minor_faults().ok_or_else(|| os_err("getrusage"))? - f0;
                passes += 1;
                drop(m);
            }
            Ok(total)
        })
        .map_err(harness_err)?;
    if faults <= 0 || passes == 0 {
        return Err("no minor faults were counted while touching fresh pages".to_string());
    }
    let per_pass_faults = faults as f64 / passes as f64;
    let pass_ns = m.ns(Summary::Median);
    Ok((
        pass_ns / per_pass_faults / 1000.0,
        format!(
            "{} mapping, {pages} pages per pass, {per_pass_faults:.1} faults per pass; {}",
            size_human(bytes),
            how(c, &m, Summary::Median)
        ),
    ))
}

static PROT_PAGE: AtomicUsize = AtomicUsize::new(0);
static PROT_HITS: AtomicU64 = AtomicU64::new(0);

/// The faulting store `mov byte ptr [rdi], 1` is encoded C6 07 01.
#[cfg(target_arch = "x86_64")]
const PROT_STORE: [u8; 3] = [0xc6, 0x07, 0x01];

#[cfg(target_arch = "x86_64")]
extern "C" fn segv_handler(_sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an
    // SA_SIGINFO handler; we read the faulting address and instruction and
    // only move RIP past our own 3-byte store on our own page.
    unsafe {
        let addr = (*info).si_addr() as usize;
        let page = PROT_PAGE.load(Ordering::Relaxed);
        let uc = uctx.cast::<libc::ucontext_t>();
        let rip_slot = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        let rip = *rip_slot as usize as *const u8;
        if page != 0 && addr >= page && addr < page + PAGE && std::slice::from_raw_parts(rip, 3) == PROT_STORE {
            *rip_slot += 3;
            PROT_HITS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Not our fault: fall back to the default action; the instruction
        // re-executes and the process dies as it would have.
        let dfl = make_sigaction(libc::SIG_DFL, 0);
        libc::sigaction(libc::SIGSEGV, &dfl, std::ptr::null_mut());
    }
}

#[cfg(target_arch = "x86_64")]
fn prot_fault(c: &Ctx) -> Result<(f64, String), String> {
    let m = Map::new(PAGE, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
    // SAFETY: reading the first byte of our readable page maps it (present,
    // read-only), so the writes below take protection faults, not page-ins.
    std::hint::black_box(unsafe { std::ptr::read_volatile(m.ptr) });
    PROT_PAGE.store(m.ptr as usize, Ordering::Relaxed);
    let sa = make_sigaction(
        segv_handler as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize,
        libc::SA_SIGINFO | libc::SA_NODEFER,
    );
    let guard = SigGuard::install(libc::SIGSEGV, &sa)?;
    let ptr = m.ptr;
    let r = c.h.measure(&mut |n| {
        let before = PROT_HITS.load(Ordering::Relaxed);
        for _ in 0..n {
            // SAFETY: the store targets our read-only page and faults; the
            // handler skips exactly this 3-byte instruction, so no memory is
            // written and execution continues after it.
            unsafe { std::arch::asm!("mov byte ptr [rdi], 1", in("rdi") ptr, options(nostack)) };
        }
        let got = PROT_HITS.load(Ordering::Relaxed).wrapping_sub(before);
        if got != n {
            return Err(format!("{n} faulting stores, handler saw {got}"));
        }
        Ok(())
    });
    drop(guard);
    PROT_PAGE.store(0, Ordering::Relaxed);
    drop(m);
    let r = r.map_err(harness_err)?;
    let (catch_us, _, _) = sig_catch(c)?;
    let raw_us = r.us(Summary::Median);
    Ok((
        raw_us - catch_us,
        format!(
            "raw {raw_us:.4} µs per fault, signal catch {catch_us:.4} µs subtracted; {}",
            how(c, &r, Summary::Median)
        ),
    ))
}

#[cfg(not(target_arch = "x86_64"))]
fn prot_fault(_c: &Ctx) -> Result<(f64, String), String> {
    Err("implemented for x86_64 only (the handler steps over a known store instruction)".to_string())
}

// ---------------------------------------------------------------- memory

#[derive(Clone, Copy)]
enum BwKind {
    Read,
    Write,
    Copy,
}

fn mem_bw(c: &Ctx, kind: BwKind) -> Result<(f64, String), String> {
    let words = c.bw_bytes / 8;
    let bytes = (words * 8) as f64;
    // vec![1; n] writes every word, so the pages are really allocated.
    let mut a = vec![1u64; words];
    let mut b = match kind {
        BwKind::Copy => vec![2u64; words],
        _ => Vec::new(),
    };
    let mut acc = 0u64;
    let m =
        c.h.measure_timed(&mut |n| {
            let t = Instant::now();
            for i in 0..n {
                match kind {
                    BwKind::Read => acc = acc.wrapping_add(kernels::read_sum(&a)),
                    BwKind::Write => kernels::write_fill(&mut a, i),
                    BwKind::Copy => {
                        kernels::copy(&mut b, &a);
                    }
                }
            }
            Ok(t.elapsed())
        })
        .map_err(harness_err)?;
    std::hint::black_box((acc, &a, &b));
    Ok((m.mb_per_s(bytes), how(c, &m, Summary::Median)))
}

fn mem_lat(c: &Ctx, size: usize) -> Result<(f64, String), String> {
    let mut buf = vec![0usize; size / std::mem::size_of::<usize>()];
    let ring = kernels::build_ring(
        &mut buf,
        kernels::DEFAULT_STRIDE_BYTES,
        kernels::RingOrder::Shuffled(kernels::DEFAULT_SEED),
    )
    .map_err(|e| format!("cannot build ring: {e:?}"))?;
    // Warm up with up to two laps (capped), then keep walking from where the
    // last call stopped, so no repetition re-walks lines a previous one just
    // brought into the cache.
    let mut pos = kernels::chase(&buf, ring.start, (ring.lines as u64 * 2).min(1 << 20));
    let m =
        c.h.measure_kernel_loop(&mut |n| {
            let t = Instant::now();
            pos = kernels::chase(&buf, pos, n);
            let e = t.elapsed();
            if pos == usize::MAX {
                return Err("ring is malformed".to_string());
            }
            Ok(e)
        })
        .map_err(harness_err)?;
    Ok((
        m.us(Summary::Minimum),
        format!("{} lines; ns per load {:.2}; {}", ring.lines, m.ns(Summary::Minimum), how(c, &m, Summary::Minimum)),
    ))
}

// ---------------------------------------------------------------- select, files

fn select_tcp(c: &Ctx) -> Result<(f64, String), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let mut socks = Vec::with_capacity(2 * SELECT_FDS);
    for _ in 0..SELECT_FDS {
        let client = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (server, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        socks.push((client, server));
    }
    let fds: Vec<RawFd> = socks.iter().map(|(cl, _)| cl.as_raw_fd()).collect();
    let max = fds.iter().copied().max().unwrap_or(0);
    if max as usize >= libc::FD_SETSIZE {
        return Err(format!("descriptor {max} is past FD_SETSIZE {}", libc::FD_SETSIZE));
    }
    // SAFETY: an all-zero fd_set is a valid empty set; FD_SET is given
    // descriptors below FD_SETSIZE (checked above).
    let set = unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        for &fd in &fds {
            libc::FD_SET(fd, &mut set);
        }
        set
    };
    let r = c.h.measure(&mut |n| {
        for _ in 0..n {
            let mut rd = set;
            let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
            // SAFETY: `rd` and `tv` are live for the call; the other sets are null.
            let k = unsafe { libc::select(max + 1, &mut rd, std::ptr::null_mut(), std::ptr::null_mut(), &mut tv) };
            if k != 0 {
                return Err(if k < 0 { os_err("select") } else { format!("select found {k} readable idle sockets") });
            }
        }
        Ok(())
    });
    drop(socks);
    median_us(c, r)
}

/// The file system of `p`, by name where known (statfs f_type).
fn fs_type(p: &Path) -> String {
    let Ok(cp) = cpath(p) else { return "unknown".into() };
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `cp` is a NUL-terminated path, `st` a live buffer.
    if unsafe { libc::statfs(cp.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as i64 {
        0x0102_1994 => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x794c_7630 => "overlayfs".into(),
        0x5846_5342 => "xfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x9123_683E => "btrfs".into(),
        t => format!("f_type {t:#x}"),
    }
}

fn fs_latency(c: &Ctx, kib: usize, delete: bool) -> Result<(f64, String), String> {
    static BATCH: AtomicU64 = AtomicU64::new(0);
    let data = vec![0x3cu8; kib << 10];
    let fs = fs_type(&c.dir.0);
    let mut run = |n: u64| -> Result<Duration, String> {
        let dir = c.dir.0.join(format!("fs-{}", BATCH.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let paths: Vec<CString> = (0..n).map(|i| cpath(&dir.join(format!("{i}")))).collect::<Result<_, _>>()?;
        let create = |p: &CString| -> Result<(), String> {
            // SAFETY: `p` is a NUL-terminated path.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644) };
            if fd < 0 {
                return Err(os_err("open O_CREAT"));
            }
            if !data.is_empty() {
                // SAFETY: `data` is live for the call and `fd` is ours.
                let w = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
                if w != data.len() as isize {
                    // SAFETY: `fd` is ours and closed once.
                    unsafe { libc::close(fd) };
                    return Err(os_err("write"));
                }
            }
            // SAFETY: `fd` is ours and closed once.
            unsafe { libc::close(fd) };
            Ok(())
        };
        let unlink = |p: &CString| -> Result<(), String> {
            // SAFETY: `p` is a NUL-terminated path.
            if unsafe { libc::unlink(p.as_ptr()) } != 0 {
                return Err(os_err("unlink"));
            }
            Ok(())
        };
        let t = Instant::now();
        let timed = if delete {
            paths.iter().try_for_each(create)?;
            let t = Instant::now();
            paths.iter().try_for_each(unlink)?;
            t.elapsed()
        } else {
            paths.iter().try_for_each(create)?;
            let e = t.elapsed();
            paths.iter().try_for_each(unlink)?;
            e
        };
        let _ = std::fs::remove_dir(&dir);
        Ok(timed)
    };
    let m = c.h.measure_timed(&mut run).map_err(harness_err)?;
    Ok((m.us(Summary::Median), format!("file system {fs}; {}", how(c, &m, Summary::Median))))
}

// ---------------------------------------------------------------- TCP

/// A connected loopback pair: (client, server side).
fn loopback_pair() -> Result<(TcpStream, TcpStream), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let client = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (server, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    for s in [&client, &server] {
        s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    }
    Ok((client, server))
}

fn tcp_lat(c: &Ctx) -> Result<(f64, String), String> {
    let (mut client, mut server) = loopback_pair()?;
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while server.read_exact(&mut b).is_ok() {
            if server.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut b = [0u8; 1];
    let r = c.h.measure(&mut |n| {
        for _ in 0..n {
            client.write_all(&[1]).map_err(|e| format!("send: {e}"))?;
            client.read_exact(&mut b).map_err(|e| format!("receive: {e}"))?;
        }
        Ok(())
    });
    let _ = client.shutdown(Shutdown::Both);
    drop(client);
    let _ = echo.join();
    median_us(c, r).map(|(v, how)| (v, format!("round trip; {how}")))
}

/// The receiver of `tcp_bw`: reads each announced burst, then acknowledges it.
/// Runs in a forked child, so it only makes read/write system calls on
/// memory allocated before the fork.
fn tcp_sink(server: &mut TcpStream, buf: &mut [u8]) {
    let mut hdr = [0u8; 8];
    while server.read_exact(&mut hdr).is_ok() {
        let mut left = u64::from_le_bytes(hdr).saturating_mul(TCP_MSG_BYTES as u64);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match server.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(k) => left -= k as u64,
            }
        }
        if server.write_all(&[1]).is_err() {
            return;
        }
    }
}

fn tcp_bw(c: &Ctx) -> Result<(f64, String), String> {
    let (mut client, mut server) = loopback_pair()?;
    let mut buf = vec![0u8; TCP_MSG_BYTES];
    // The receiver is another process, as in lmbench's bw_tcp and iperf3:
    // two threads of one process switch more cheaply and read high.
    // SAFETY: the child only runs `tcp_sink` (read/write system calls on
    // buffers allocated before the fork) and then `_exit`, which is
    // async-signal-safe even though this process may have other threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        tcp_sink(&mut server, &mut buf);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(server);
    let msg = vec![0xa5u8; TCP_MSG_BYTES];
    let mut ack = [0u8; 1];
    let r = c.h.measure(&mut |n| {
        client.write_all(&n.to_le_bytes()).map_err(|e| format!("send: {e}"))?;
        for _ in 0..n {
            client.write_all(&msg).map_err(|e| format!("send: {e}"))?;
        }
        client.read_exact(&mut ack).map_err(|e| format!("ack: {e}"))?;
        Ok(())
    });
    let _ = client.shutdown(Shutdown::Both);
    drop(client);
    let mut status = 0;
    // SAFETY: waits for our own child, which exits once the socket closes.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let m = r.map_err(harness_err)?;
    Ok((
        m.mb_per_s(TCP_MSG_BYTES as f64),
        format!(
            "receiver in a forked process, acknowledges each burst; differs from lmbench bw_tcp in the socket buffers \
             (ours the kernel's autotuned defaults, lmbench sets SO_SNDBUF and SO_RCVBUF to 1 MiB, its SOCKBUF) and in \
             the timing end (ours times the sender up to the receiver's ack of each burst, lmbench its reading end); {}",
            how(c, &m, Summary::Median)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_ids() {
        assert_eq!(size_tag(512), "512b");
        assert_eq!(size_tag(4096), "4k");
        assert_eq!(size_tag(1 << 20), "1m");
        assert_eq!(size_tag(64 << 20), "64m");
        assert_eq!(size_tag(1536), "1536b");
        assert_eq!(size_human(64 << 20), "64 MiB");
        assert_eq!(ctx_id(16, 64), "ctx_16p_64k");
        let full = mem_lat_sizes(false);
        assert_eq!(full.first(), Some(&512));
        assert_eq!(full.last(), Some(&(64 << 20)));
        assert_eq!(full.len(), 18);
        let ids = row_ids(&NativeOptions::default());
        let mut dedup = ids.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), ids.len(), "duplicate row ids");
        for id in [
            "null_call",
            "ctx_2p_0k",
            "ctx_16p_64k",
            "ctx_2p_0k_unpinned",
            "mem_lat_1m",
            "tcp_bw",
            "page_fault",
            "anon_fault",
        ] {
            assert!(ids.iter().any(|i| i == id), "missing {id}");
        }
    }

    #[test]
    fn only_filter_is_a_prefix_match() {
        let o = NativeOptions { only: vec!["ctx_2p".into(), "null".into()], ..Default::default() };
        let ids = row_ids(&o);
        assert_eq!(
            ids,
            vec![
                "null_call",
                "null_io",
                "ctx_2p_0k",
                "ctx_2p_16k",
                "ctx_2p_64k",
                "ctx_2p_0k_unpinned",
                "ctx_2p_16k_unpinned",
                "ctx_2p_64k_unpinned"
            ]
        );
        let none = NativeOptions { only: vec!["nope".into()], ..Default::default() };
        assert!(run(&none, &mut |_| {}).is_empty());
    }

    /// The whole quick suite: every row is measured (finite, positive) or
    /// n/a with a reason; progress names every row. No speed is asserted.
    #[test]
    fn quick_suite_rows_are_measured_or_na() {
        let opts = NativeOptions { quick: true, ..Default::default() };
        let mut seen = Vec::new();
        let t = Instant::now();
        let rows = run(&opts, &mut |id| seen.push(id.to_string()));
        let took = t.elapsed();
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, row_ids(&opts));
        assert_eq!(seen, ids);
        for r in &rows {
            assert!(r.is_well_formed(), "bad row {r:?}");
            assert!(!r.method.is_empty());
            assert!(r.unit == UNIT_US || r.unit == UNIT_MBS);
            eprintln!(
                "{:<14} {:>12} {:<5} {}",
                r.id,
                r.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into()),
                r.unit,
                r.na_reason.as_deref().unwrap_or(&r.method)
            );
        }
        eprintln!("quick native suite took {took:?}");
    }
}
