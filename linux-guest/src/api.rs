//! The agent's HTTP endpoints and the JSON bodies the host reads.
//!
//! | path | body |
//! |---|---|
//! | `/file` | the served file (`served-file` content), `ETag` = FNV-1a 64 of the body |
//! | `/health` | `ok\n` as soon as the server listens |
//! | `/status` | [`AgentStatus`] |
//! | `/memcheck` | [`MemcheckReport`] (404 unless the workload is `memcheck`) |
//! | `POST /bench` | body [`BenchRequest`]: starts the native suite in the guest; answers [`BenchStatus`] (409 while a run is in progress) |
//! | `GET /bench` | [`BenchStatus`]: the rows so far, the row running, whether the run is done |
//! | `POST /ttcp` | body [`TtcpRequest`]: one raw TCP transfer with the host (the ttcp table); answers [`TtcpStatus`] (409 while one runs) |
//! | `POST /macro` | body [`MacroRequest`]: starts the process-based stand-ins of the Xen paper's Figure 3 in the guest; answers [`MacroStatus`] (409 while they run) |
//! | `GET /macro` | [`MacroStatus`]: the bars so far, the workload running, whether the run is done |
//! | `GET /ttcp` | [`TtcpStatus`]: the transfer's state and, once done, what the guest's end counted and timed |
//!
//! The bench rows are `results::bench::Row`, the type `migbench bench
//! native --json` writes, so a guest's row and a native row are the same
//! value on both sides.

use results::bench::{MacroBar, Row};
use serde::{Deserialize, Serialize};

/// The port the agent's HTTP server listens on.
pub const PORT: u16 = 80;
/// Path of the served file.
pub const FILE_PATH: &str = "/file";
/// Path of the readiness check.
pub const HEALTH_PATH: &str = "/health";
/// Path of [`AgentStatus`].
pub const STATUS_PATH: &str = "/status";
/// Path of [`MemcheckReport`].
pub const MEMCHECK_PATH: &str = "/memcheck";
/// Path of the bench runner ([`BenchRequest`] in, [`BenchStatus`] out).
pub const BENCH_PATH: &str = "/bench";
/// Largest `POST /bench` (and `POST /ttcp`) body the agent reads.
pub const BENCH_REQUEST_MAX_BYTES: usize = 64 << 10;
/// Path of the macro runner ([`MacroRequest`] in, [`MacroStatus`] out).
pub const MACRO_PATH: &str = "/macro";

/// What the host asks the guest's macro runner to run: the stand-ins of
/// `bench_suites::macro_bench` that are processes (`cpu`, `build`, `fs`),
/// with its options for `quick`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacroRequest {
    /// `MacroOptions::new(quick)`.
    pub quick: bool,
}

/// The guest's macro runner (`GET /macro`, and the reply to `POST /macro`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacroStatus {
    /// Where the run stands.
    pub state: BenchState,
    /// One bar per finished workload (`system` is `qemu`): the score, or
    /// n/a with why; `relative` is the host's to fill.
    pub bars: Vec<(String, MacroBar)>,
    /// The workload being measured.
    pub current: Option<String>,
    /// Milliseconds since the run started (guest's monotonic clock).
    pub elapsed_ms: u64,
}

/// Path of the ttcp endpoint ([`TtcpRequest`] in, [`TtcpStatus`] out).
pub const TTCP_PATH: &str = "/ttcp";
/// The port the guest's ttcp receiver listens on.
pub const TTCP_PORT: u16 = 5001;

/// One raw TCP transfer between the guest and the host, with ttcp's method
/// (`bench_suites::ttcp`: 128 KiB socket buffers, 8 KiB writes). Before it,
/// the guest sets its NIC's MTU to `mtu`, as the paper's hosts were set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase", deny_unknown_fields)]
pub enum TtcpRequest {
    /// The guest sends `bytes` to a receiver the host listens with at `to`
    /// (TX: the host times it, at its receiving end).
    Send {
        /// The host's receiver.
        to: std::net::SocketAddr,
        /// Payload bytes.
        bytes: u64,
        /// The guest NIC's MTU for the transfer.
        mtu: u32,
    },
    /// The guest listens on [`TTCP_PORT`] (listening when the reply comes)
    /// and receives one connection's bytes, timing them from the first to
    /// the last (RX, timed at the guest's receiving end, as ttcp -r).
    Receive {
        /// Payload bytes the host will send.
        bytes: u64,
        /// The guest NIC's MTU for the transfer.
        mtu: u32,
    },
}

/// Where the guest's ttcp transfer stands (`GET /ttcp`, and the reply to
/// `POST /ttcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtcpStatus {
    /// Idle (none asked for), running, or done (`error` says if it failed).
    pub state: BenchState,
    /// The transfer asked for.
    pub request: Option<TtcpRequest>,
    /// Payload bytes the guest's end moved.
    pub bytes: u64,
    /// The guest's end's time from its first byte to its last, ns (its
    /// monotonic clock); for `Send`, until its last write returned.
    pub elapsed_ns: u64,
    /// Why the transfer failed, if it did.
    pub error: Option<String>,
}

/// What the host asks the guest's bench runner to run: the same options as
/// `migbench bench native` (`bench_suites::native::NativeOptions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRequest {
    /// Quick mode (ENOUGH 1 ms, fewer sizes, smaller buffers).
    pub quick: bool,
    /// Only rows whose id starts with one of these (empty: all).
    pub only: Vec<String>,
    /// How long one row may run, ms; a row that takes longer is killed and
    /// comes back n/a with that reason.
    pub row_budget_ms: u64,
}

/// Where a bench run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchState {
    /// No run was asked for.
    Idle,
    /// Rows are being measured.
    Running,
    /// Every row has its result.
    Done,
}

/// The guest's facts that the rows depend on, for their method text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFacts {
    /// `uname -r` of the guest kernel (`/proc/sys/kernel/osrelease`).
    pub kernel_release: String,
    /// The guest kernel's clocksource (what `Instant::now()` reads).
    pub clocksource: String,
    /// Online CPUs in the guest.
    pub cpus: u32,
    /// `MemTotal` of the guest, KiB.
    pub mem_total_kib: u64,
}

/// The bench runner's state (`GET /bench`, and the reply to `POST /bench`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchStatus {
    /// Where the run stands.
    pub state: BenchState,
    /// The options of the run (`None` while idle).
    pub request: Option<BenchRequest>,
    /// The ids the run produces, in order.
    pub ids: Vec<String>,
    /// The finished rows, in order: measured, or n/a with the cause.
    pub rows: Vec<Row>,
    /// The row being measured.
    pub current: Option<String>,
    /// Milliseconds since the run started (guest's monotonic clock).
    pub elapsed_ms: u64,
    /// The guest it runs in.
    pub guest: GuestFacts,
}

/// The agent's view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    /// Milliseconds since the guest kernel booted (`/proc/uptime`).
    pub uptime_ms: u64,
    /// The workload as given on the command line.
    pub workload: String,
    /// Whether the workload's process (or thread) is still running.
    pub workload_running: bool,
    /// How the workload ended, if it did: its exit status or the error that
    /// kept it from starting.
    pub workload_end: Option<String>,
    /// Bytes of the served file.
    pub file_bytes: u64,
}

/// What the memory-verifying workload has seen so far.
///
/// Every pass reads each 4 KiB page of its region, checks the tag the
/// previous pass wrote (page index and pass number in every 8-byte word),
/// then writes this pass's tag. A page changed by anything else, such as a
/// migration that lost or corrupted it, is a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcheckReport {
    /// Pages in the region.
    pub pages: u64,
    /// Completed passes (the first only writes).
    pub passes: u64,
    /// Pages checked in all passes.
    pub pages_checked: u64,
    /// Pages whose content was not what the previous pass wrote.
    pub mismatches: u64,
    /// The first mismatch, if any.
    pub first_mismatch: Option<Mismatch>,
}

/// One page that did not hold the expected tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mismatch {
    /// Index of the page in the region.
    pub page: u64,
    /// The pass that found it.
    pub pass: u64,
    /// The word expected.
    pub expected: u64,
    /// The word found.
    pub found: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ttcp request's JSON names its role; a wrong or extra key is an
    /// error the agent answers with 400, not a transfer.
    #[test]
    fn ttcp_request_json() {
        let r = TtcpRequest::Send { to: "10.0.0.1:5001".parse().unwrap(), bytes: 8, mtu: 500 };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"role":"send","to":"10.0.0.1:5001","bytes":8,"mtu":500}"#);
        assert_eq!(serde_json::from_str::<TtcpRequest>(&j).unwrap(), r);
        for bad in [
            r#"{"role":"fly","bytes":8,"mtu":500}"#,
            r#"{"role":"receive","bytes":8,"mtu":500,"port":1}"#,
            r#"{"role":"receive","bytes":-1,"mtu":500}"#,
            r#"{"role":"send","bytes":8,"mtu":500}"#,
        ] {
            assert!(serde_json::from_str::<TtcpRequest>(bad).is_err(), "{bad}");
        }
    }
}
