//! The agent's HTTP endpoints and the JSON bodies the host reads.
//!
//! | path | body |
//! |---|---|
//! | `/file` | the served file (`served-file` content), `ETag` = FNV-1a 64 of the body |
//! | `/health` | `ok\n` as soon as the server listens |
//! | `/status` | [`AgentStatus`] |
//! | `/memcheck` | [`MemcheckReport`] (404 unless the workload is `memcheck`) |

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
