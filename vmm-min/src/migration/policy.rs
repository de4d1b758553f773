//! The source's side of the migration policy ([`results::policy::Policy`]):
//! the rate of round 0 and, after each round, whether to go on, stop and
//! copy, or give up.

pub use results::policy::{OnTimeout, Policy};

/// The rate limit of round 0, Mbit/s (`None`: unlimited).
pub fn first_rate(policy: &Policy) -> Option<f64> {
    match policy {
        Policy::Xen { initial_mbps, max_mbps, .. } => Some(initial_mbps.min(*max_mbps)),
        Policy::Downtime { max_bandwidth_mbps, .. } => *max_bandwidth_mbps,
    }
}

/// What pre-copy has seen so far, for a decision.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Rounds completed.
    pub rounds: u32,
    /// Pages dirty now (to send next).
    pub dirty_pages: u64,
    /// Pages dirty after the previous round (`None` after round 0).
    pub prev_dirty_pages: Option<u64>,
    /// Dirty rate during the last round, Mbit/s.
    pub dirty_rate_mbps: f64,
    /// Rate the last round was limited to, Mbit/s (`None`: unlimited).
    pub last_rate: Option<f64>,
    /// Bandwidth measured over the last round, Mbit/s.
    pub measured_mbps: f64,
    /// Bytes of page data sent so far.
    pub sent_bytes: u64,
    /// Guest RAM.
    pub ram_bytes: u64,
    /// Time since pre-copy started, ms.
    pub elapsed_ms: f64,
}

/// The policy's decision after a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Another round, at this rate (Mbit/s; `None`: unlimited).
    Continue(Option<f64>),
    /// Stop and copy, with the reason.
    StopAndCopy(String),
    /// Give up, with the reason; the source keeps running.
    Cancel(String),
}

/// Decides what follows the round described by `p`.
pub fn decide(policy: &Policy, p: &Progress) -> Decision {
    let page = crate::abi::PAGE_SIZE as f64;
    match *policy {
        Policy::Xen { increment_mbps, max_mbps, min_pages, max_rounds, max_factor, .. } => {
            if p.dirty_pages < min_pages {
                return Decision::StopAndCopy(format!("{} pages remain (< {min_pages})", p.dirty_pages));
            }
            if p.rounds >= max_rounds {
                return Decision::StopAndCopy(format!("{max_rounds} rounds done"));
            }
            if p.sent_bytes as f64 >= max_factor * p.ram_bytes as f64 {
                return Decision::StopAndCopy(format!("sent {max_factor}x RAM"));
            }
            let at_max = p.last_rate.is_some_and(|r| r >= max_mbps);
            if at_max && p.prev_dirty_pages.is_some_and(|prev| p.dirty_pages >= prev) {
                return Decision::StopAndCopy("at the maximum rate and the dirty set no longer shrinks".into());
            }
            Decision::Continue(Some((p.dirty_rate_mbps + increment_mbps).min(max_mbps)))
        }
        Policy::Downtime { downtime_ms, timeout_ms, on_timeout, max_bandwidth_mbps } => {
            let bw = p.measured_mbps.max(1.0);
            let expected_ms = p.dirty_pages as f64 * page * 8.0 / (bw * 1e6) * 1e3;
            if expected_ms <= downtime_ms {
                return Decision::StopAndCopy(format!(
                    "expected downtime {expected_ms:.1} ms <= {downtime_ms} ms target"
                ));
            }
            if p.elapsed_ms >= timeout_ms {
                return match on_timeout {
                        OnTimeout::Cancel => Decision::Cancel(format!(
                            "did not converge within {timeout_ms} ms (expected downtime {expected_ms:.0} ms > {downtime_ms} ms)"
                        )),
                        OnTimeout::Force => Decision::StopAndCopy(format!(
                            "timeout after {timeout_ms} ms: forcing the switchover (expected downtime {expected_ms:.0} ms)"
                        )),
                    };
            }
            Decision::Continue(max_bandwidth_mbps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(dirty: u64, prev: Option<u64>, rate: Option<f64>) -> Progress {
        Progress {
            rounds: 1,
            dirty_pages: dirty,
            prev_dirty_pages: prev,
            dirty_rate_mbps: 400.0,
            last_rate: rate,
            measured_mbps: 8000.0,
            sent_bytes: 1 << 20,
            ram_bytes: 512 << 20,
            elapsed_ms: 10.0,
        }
    }

    #[test]
    fn xen_raises_the_rate_and_stops_as_specified() {
        let x = Policy::xen();
        assert_eq!(first_rate(&x), Some(100.0));
        assert_eq!(decide(&x, &progress(1000, None, Some(100.0))), Decision::Continue(Some(450.0)));
        assert!(matches!(decide(&x, &progress(10, None, Some(100.0))), Decision::StopAndCopy(_)));
        assert!(matches!(decide(&x, &progress(1000, Some(900), Some(1000.0))), Decision::StopAndCopy(_)));
        assert_eq!(decide(&x, &progress(1000, Some(900), Some(500.0))), Decision::Continue(Some(450.0)));
        let mut p = progress(1000, None, Some(100.0));
        p.dirty_rate_mbps = 5000.0;
        assert_eq!(decide(&x, &p), Decision::Continue(Some(1000.0)));
        p.sent_bytes = 3 * p.ram_bytes;
        assert!(matches!(decide(&x, &p), Decision::StopAndCopy(_)));
    }

    #[test]
    fn downtime_switches_cancels_or_forces() {
        let d = Policy::default();
        // 1000 pages at 8000 Mbit/s is about 4 ms.
        assert!(matches!(decide(&d, &progress(1000, None, None)), Decision::StopAndCopy(_)));
        let mut p = progress(10_000_000, None, None);
        assert_eq!(decide(&d, &p), Decision::Continue(None));
        p.elapsed_ms = 40_000.0;
        assert!(matches!(decide(&d, &p), Decision::Cancel(_)));
        let f = Policy::Downtime {
            downtime_ms: 300.0,
            timeout_ms: 30_000.0,
            on_timeout: OnTimeout::Force,
            max_bandwidth_mbps: None,
        };
        assert!(matches!(decide(&f, &p), Decision::StopAndCopy(_)));
    }
}
