//! Per-round statistics derived from `query-migrate` polls.
//!
//! QEMU reports cumulative counters, not rounds. Each poll is stamped with
//! the host's monotonic clock when its reply arrived; a change of
//! `ram.dirty-sync-count` (QEMU synced the dirty bitmap, i.e. started a new
//! pass over RAM) starts a new round at that poll. A round's bytes and pages
//! are the counters' growth until the next round starts (or pre-copy ends);
//! its rate is those bytes over the polls' own interval, and its dirty rate
//! QEMU's `dirty-pages-rate` at its last poll. Its throttle is QEMU's
//! `cpu-throttle-percentage` at its first poll: auto-converge raises it at
//! the dirty sync that begins a pass, so that is the value in force during it.

use results::RoundStats;

/// The RAM counters of one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RamSample {
    /// When the reply arrived (`CLOCK_MONOTONIC`, ns).
    pub mono_ns: u64,
    /// Whether the migration was in pre-copy (`active`) at this poll.
    pub active: bool,
    /// `ram.dirty-sync-count`.
    pub dirty_sync_count: i64,
    /// `ram.transferred`, bytes.
    pub transferred: i64,
    /// `ram.remaining`, bytes.
    pub remaining: i64,
    /// `ram.duplicate`: zero pages.
    pub duplicate: i64,
    /// `ram.normal`: pages sent whole.
    pub normal: i64,
    /// `ram.dirty-pages-rate`, pages/s.
    pub dirty_pages_rate: i64,
    /// `ram.page-size`, bytes.
    pub page_size: i64,
    /// `cpu-throttle-percentage` (auto-converge; absent or 0: none).
    pub cpu_throttle_pct: Option<i64>,
}

/// Rounds from the polls (in time order) of a migration that started at
/// `start_ns`, with QEMU's bandwidth cap `rate_limit_mbps`.
pub fn derive(start_ns: u64, polls: &[RamSample], rate_limit_mbps: Option<f64>) -> Vec<RoundStats> {
    let active: Vec<&RamSample> = polls.iter().filter(|p| p.active).collect();
    if active.is_empty() {
        return Vec::new();
    }
    // Round boundaries: the first active poll, then every count change.
    let mut starts = vec![0usize];
    for i in 1..active.len() {
        if active[i].dirty_sync_count != active[i - 1].dirty_sync_count {
            starts.push(i);
        }
    }
    // Where pre-copy ended: the first poll after the last active one, if any.
    let last_active = active[active.len() - 1];
    let end = polls.iter().find(|p| p.mono_ns > last_active.mono_ns).copied();
    let mut rounds = Vec::new();
    for (r, &s) in starts.iter().enumerate() {
        let a = active[s];
        let b = match starts.get(r + 1) {
            Some(&n) => *active[n],
            None => end.unwrap_or(*last_active),
        };
        let bytes = (b.transferred - a.transferred).max(0) as u64;
        let normal = (b.normal - a.normal).max(0) as u64;
        let zero = (b.duplicate - a.duplicate).max(0) as u64;
        let dur_ns = b.mono_ns.saturating_sub(a.mono_ns);
        let page = a.page_size.max(1) as u64;
        rounds.push(RoundStats {
            round: r as u32,
            pages_sent: normal + zero,
            bytes,
            zero_pages: zero,
            // What this pass had to send: the remaining bytes when it began.
            dirty_pages: a.remaining.max(0) as u64 / page,
            start_ms: a.mono_ns.saturating_sub(start_ns) as f64 / 1e6,
            duration_ms: dur_ns as f64 / 1e6,
            rate_mbps: if dur_ns > 0 { bytes as f64 * 8.0 / (dur_ns as f64 / 1e9) / 1e6 } else { 0.0 },
            rate_limit_mbps,
            dirty_rate_pages_s: b.dirty_pages_rate.max(0) as f64,
            throttle_pct: a.cpu_throttle_pct.filter(|&p| p > 0).map(|p| p as f64),
        });
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, active: bool, sync: i64, transferred: i64, remaining: i64) -> RamSample {
        RamSample {
            mono_ns: 1_000_000_000 + ms * 1_000_000,
            active,
            dirty_sync_count: sync,
            transferred,
            remaining,
            duplicate: transferred / 10_000,
            normal: transferred / 4096,
            dirty_pages_rate: 100 * sync,
            page_size: 4096,
            cpu_throttle_pct: (sync > 1).then_some(10 + 10 * sync),
        }
    }

    #[test]
    fn a_sync_count_change_starts_a_round() {
        let polls = [
            s(0, false, 0, 0, 0),
            s(50, true, 1, 1_000_000, 9_000_000),
            s(100, true, 1, 6_000_000, 4_000_000),
            s(150, true, 2, 10_000_000, 400_000),
            s(200, true, 3, 10_300_000, 40_960),
            s(250, false, 4, 10_400_000, 0),
        ];
        let r = derive(1_000_000_000, &polls, Some(1000.0));
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].round, r[0].bytes, r[0].start_ms, r[0].duration_ms), (0, 9_000_000, 50.0, 100.0));
        assert_eq!(r[0].dirty_pages, 9_000_000 / 4096);
        assert!((r[0].rate_mbps - 720.0).abs() < 1e-9, "{}", r[0].rate_mbps);
        assert_eq!((r[1].bytes, r[1].duration_ms), (300_000, 50.0));
        // The last round runs to the first poll after pre-copy.
        assert_eq!((r[2].bytes, r[2].duration_ms), (100_000, 50.0));
        assert_eq!(r[2].dirty_rate_pages_s, 400.0);
        assert!(r.iter().all(|x| x.rate_limit_mbps == Some(1000.0)));
        // QEMU's throttle at each round's first poll; 0 or absent: none.
        let t: Vec<_> = r.iter().map(|x| x.throttle_pct).collect();
        assert_eq!(t, [None, Some(30.0), Some(40.0)]);
    }

    #[test]
    fn no_active_poll_no_round() {
        assert!(derive(0, &[s(0, false, 0, 0, 0)], None).is_empty());
        assert!(derive(0, &[], None).is_empty());
    }
}
