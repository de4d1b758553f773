//! Migration statistics, as a source reports them (vmm-min's over its
//! control socket, QEMU's mapped from `query-migrate`). Times are milliseconds on the host's monotonic clock,
//! relative to the migration's start (`start_mono_ns`, absolute, so other
//! processes' timestamps can be placed on the same timeline).

use crate::policy::Policy;
use serde::{Deserialize, Serialize};

/// How a migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The destination runs the guest; the source released it.
    Completed,
    /// The policy gave up; the source keeps running.
    Cancelled,
    /// Something failed; the source keeps running.
    Failed,
    /// The source committed the VM to the destination but never heard
    /// that it runs there: the source's copy stays paused until an
    /// operator resolves it (resume here, or discard).
    Indeterminate,
}

/// One pre-copy round (the final stop-and-copy pass is not a round).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundStats {
    /// Round number, from 0.
    pub round: u32,
    /// Pages sent, zero pages included.
    pub pages_sent: u64,
    /// Page data bytes sent (zero pages send none).
    pub bytes: u64,
    /// Pages sent as a zero marker.
    pub zero_pages: u64,
    /// Pages found dirty at the end of the round.
    pub dirty_pages: u64,
    /// Start, ms since the migration started.
    pub start_ms: f64,
    /// Duration, ms.
    pub duration_ms: f64,
    /// Achieved rate of page data on the link, Mbit/s, over the round's
    /// duration. vmm-min: the stream bytes that left the socket during the
    /// round (written, plus what its send queue held unacknowledged at the
    /// start, less what it holds at the end: `SIOCOUTQ`), times the round's
    /// share of page data in what it wrote; bytes still in the kernel count
    /// for the round in which they leave (with TLS the queue holds record
    /// bytes, a fraction of a percent more). QEMU: `ram.transferred` over
    /// the round's polls.
    pub rate_mbps: f64,
    /// The rate limit in force, Mbit/s (`null`: none).
    pub rate_limit_mbps: Option<f64>,
    /// Pages dirtied per second during the round.
    pub dirty_rate_pages_s: f64,
    /// Auto-converge: the share of time the worker vCPUs were held off
    /// during the round, percent (`null`: not throttled).
    #[serde(default)]
    pub throttle_pct: Option<f64>,
}

/// Where the downtime went. The parts add up to `downtime_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DowntimeBreakdown {
    /// Pause requested until every vCPU stopped.
    pub pause_ms: f64,
    /// Final dirty sync and sending the remaining pages.
    pub final_copy_ms: f64,
    /// Saving and sending vCPU, VM and device state.
    pub state_ms: f64,
    /// From the last frame sent to the state restored on the destination.
    pub restore_ms: f64,
    /// From restored on the destination (Ready sent) to its first
    /// `KVM_RUN`: the Ready/Commit round trip and starting the vCPUs.
    pub resume_ms: f64,
}

/// Memory verification (`--verify`), kept out of `downtime_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyStats {
    /// Whether the destination's RAM matched the source's.
    pub ok: bool,
    /// Hashing on the source, ms.
    pub source_ms: f64,
    /// Hashing and comparing on the destination, ms.
    pub destination_ms: f64,
}

/// A migration's statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationStats {
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was cancelled or failed.
    pub reason: Option<String>,
    /// Why pre-copy stopped iterating.
    pub stop_reason: Option<String>,
    /// The policy used.
    pub policy: Policy,
    /// The migration's start on CLOCK_MONOTONIC, ns.
    pub start_mono_ns: u64,
    /// Start to end (acknowledgement or failure), ms.
    pub total_ms: f64,
    /// Setup: from the start to the first page sent, ms (QEMU's
    /// `setup-time`). `null` when no page was sent.
    #[serde(default)]
    pub setup_ms: Option<f64>,
    /// Guest RAM, bytes.
    pub ram_bytes: u64,
    /// Bytes written to the stream, headers and state included.
    pub transferred_bytes: u64,
    /// Pages sent as zero markers, all rounds and the final pass.
    pub zero_pages: u64,
    /// The pre-copy rounds.
    pub rounds: Vec<RoundStats>,
    /// Pages sent in the stop-and-copy pass.
    pub final_pages: u64,
    /// When the guest was paused, ms since start.
    pub paused_at_ms: Option<f64>,
    /// When the guest first ran on the destination, ms since start.
    pub resumed_at_ms: Option<f64>,
    /// The guest's last instruction on the source to its first on the
    /// destination, less memory verification, ms.
    pub downtime_ms: Option<f64>,
    /// Where the downtime went.
    pub downtime_breakdown: Option<DowntimeBreakdown>,
    /// The whole pause including verification, ms.
    pub paused_total_ms: Option<f64>,
    /// Memory verification, if requested.
    pub verify: Option<VerifyStats>,
}
