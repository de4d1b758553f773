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

/// A thread whose priority the VMM sets itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadRole {
    /// vCPU 0, which runs the guest's network and heartbeat (raised only
    /// when the VM has worker vCPUs besides it).
    NetVcpu,
    /// The virtio-net device thread.
    VirtioNet,
    /// The migration's sending thread (source).
    MigrationSend,
    /// The migration's receiving thread (destination).
    MigrationReceive,
}

impl ThreadRole {
    /// How a report names the thread.
    pub fn describe(self) -> &'static str {
        match self {
            ThreadRole::NetVcpu => "vCPU 0 (network)",
            ThreadRole::VirtioNet => "virtio-net",
            ThreadRole::MigrationSend => "migration send",
            ThreadRole::MigrationReceive => "migration receive",
        }
    }
}

/// The nice value the VMM asked for one of its threads, and whether the
/// kernel applied it (lowering it below 0 needs CAP_SYS_NICE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPriority {
    /// Which thread.
    pub role: ThreadRole,
    /// The nice value asked for.
    pub nice: i32,
    /// Whether `setpriority` succeeded.
    pub applied: bool,
    /// The OS error when it did not.
    pub error: Option<String>,
}

impl ThreadPriority {
    /// `role` asked for `nice`, with `setpriority`'s result.
    pub fn new(role: ThreadRole, nice: i32, result: &std::io::Result<()>) -> Self {
        Self { role, nice, applied: result.is_ok(), error: result.as_ref().err().map(|e| e.to_string()) }
    }

    /// "virtio-net nice -5" or "virtio-net nice -5 refused (why)".
    pub fn describe(&self) -> String {
        match (&self.error, self.applied) {
            (_, true) => format!("{} nice {}", self.role.describe(), self.nice),
            (Some(e), false) => format!("{} nice {} refused ({e})", self.role.describe(), self.nice),
            (None, false) => format!("{} nice {} refused", self.role.describe(), self.nice),
        }
    }
}

/// The priorities vmm-min set on both sides of a migration; the threads not
/// listed (worker vCPUs, the control socket) run at the process's nice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPriorities {
    /// The source VMM's threads.
    pub source: Vec<ThreadPriority>,
    /// The destination VMM's threads, as its `Started` reported them
    /// (empty when the migration did not get that far).
    pub destination: Vec<ThreadPriority>,
}

impl ThreadPriorities {
    /// One line: "source: … ; destination: …".
    pub fn describe(&self) -> String {
        let side = |v: &[ThreadPriority]| {
            if v.is_empty() {
                "none reported".to_owned()
            } else {
                v.iter().map(ThreadPriority::describe).collect::<Vec<_>>().join(", ")
            }
        };
        format!("source: {}; destination: {}", side(&self.source), side(&self.destination))
    }
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
    /// The thread priorities the VMMs set themselves (`null`: a system
    /// that sets none, such as QEMU).
    #[serde(default)]
    pub thread_priorities: Option<ThreadPriorities>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_priority_keeps_the_os_error() {
        // EPERM, what setpriority gives without CAP_SYS_NICE.
        let e = std::io::Error::from_raw_os_error(1);
        let p = ThreadPriority::new(ThreadRole::VirtioNet, -5, &Err(e));
        assert!(!p.applied);
        let text = p.describe();
        assert!(text.starts_with("virtio-net nice -5 refused (") && text.contains("not permitted"), "{text}");
        let ok = ThreadPriority::new(ThreadRole::MigrationSend, -5, &Ok(()));
        let all = ThreadPriorities { source: vec![ok], destination: vec![] };
        assert_eq!(all.describe(), "source: migration send nice -5; destination: none reported");
    }
}
