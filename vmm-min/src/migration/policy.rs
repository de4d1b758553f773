//! When pre-copy stops iterating, and how fast it sends.
//!
//! - `xen`: Clark et al.'s dynamic rate limiting. Round 0 goes at
//!   `initial_mbps`; after each round the rate becomes the observed dirty
//!   rate + `increment_mbps`, capped at `max_mbps`. Stop-and-copy starts when
//!   fewer than `min_pages` remain, after `max_rounds`, after sending
//!   `max_factor` × RAM, or when at the maximum rate the dirty set no longer
//!   shrinks.
//! - `downtime` (default, QEMU-like): no rate limit but `max_bandwidth_mbps`;
//!   stop-and-copy once remaining bytes ÷ measured bandwidth is under
//!   `downtime_ms`. After `timeout_ms` it cancels (the source keeps running)
//!   or forces the switch, as `on_timeout` says.

use serde::{Deserialize, Serialize};

/// What to do when the `downtime` policy times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Give up; the source VM keeps running.
    #[default]
    Cancel,
    /// Stop and copy whatever remains.
    Force,
}

/// A migration policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Policy {
    /// Clark/Xen dynamic rate limiting.
    Xen {
        /// Rate of round 0, Mbit/s.
        #[serde(default = "d_initial")]
        initial_mbps: f64,
        /// Added to the dirty rate each round, Mbit/s.
        #[serde(default = "d_increment")]
        increment_mbps: f64,
        /// The cap, Mbit/s.
        #[serde(default = "d_max")]
        max_mbps: f64,
        /// Stop when fewer pages than this remain.
        #[serde(default = "d_min_pages")]
        min_pages: u64,
        /// Stop after this many rounds.
        #[serde(default = "d_max_rounds")]
        max_rounds: u32,
        /// Stop after sending this many times RAM.
        #[serde(default = "d_max_factor")]
        max_factor: f64,
    },
    /// Switch over when the rest fits in the downtime target.
    Downtime {
        /// Target downtime, ms.
        #[serde(default = "d_downtime")]
        downtime_ms: f64,
        /// Give up or force after this long, ms.
        #[serde(default = "d_timeout")]
        timeout_ms: f64,
        /// What happens at the timeout.
        #[serde(default)]
        on_timeout: OnTimeout,
        /// Optional bandwidth cap, Mbit/s.
        #[serde(default)]
        max_bandwidth_mbps: Option<f64>,
    },
}

fn d_initial() -> f64 {
    100.0
}
fn d_increment() -> f64 {
    50.0
}
/// Xen's cap defaults to a gigabit link, as in Clark et al.'s testbed.
fn d_max() -> f64 {
    1000.0
}
fn d_min_pages() -> u64 {
    50
}
fn d_max_rounds() -> u32 {
    30
}
fn d_max_factor() -> f64 {
    3.0
}
fn d_downtime() -> f64 {
    300.0
}
fn d_timeout() -> f64 {
    30_000.0
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Downtime {
            downtime_ms: d_downtime(),
            timeout_ms: d_timeout(),
            on_timeout: OnTimeout::Cancel,
            max_bandwidth_mbps: None,
        }
    }
}

impl Policy {
    /// The default `xen` policy.
    pub fn xen() -> Self {
        Policy::Xen {
            initial_mbps: d_initial(),
            increment_mbps: d_increment(),
            max_mbps: d_max(),
            min_pages: d_min_pages(),
            max_rounds: d_max_rounds(),
            max_factor: d_max_factor(),
        }
    }

    /// Parses a policy from JSON (`null` gives the default), with a message
    /// that names what was expected.
    pub fn from_json(v: &serde_json::Value) -> Result<Policy, String> {
        if v.is_null() {
            return Ok(Policy::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| {
            format!("bad migration policy {v}: {e}; expected {{\"kind\":\"downtime\",\"downtime_ms\":300,\"timeout_ms\":30000,\"on_timeout\":\"cancel\"|\"force\"}} or {{\"kind\":\"xen\",...}}")
        })
    }

    /// Sets a bandwidth cap (Mbit/s) on either policy.
    pub fn with_max_bandwidth(mut self, mbps: f64) -> Self {
        match &mut self {
            Policy::Xen { max_mbps, .. } => *max_mbps = mbps,
            Policy::Downtime { max_bandwidth_mbps, .. } => *max_bandwidth_mbps = Some(mbps),
        }
        self
    }

    /// The rate limit of round 0, Mbit/s (`None`: unlimited).
    pub fn first_rate(&self) -> Option<f64> {
        match self {
            Policy::Xen { initial_mbps, max_mbps, .. } => Some(initial_mbps.min(*max_mbps)),
            Policy::Downtime { max_bandwidth_mbps, .. } => *max_bandwidth_mbps,
        }
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

impl Policy {
    /// Decides what follows the round described by `p`.
    pub fn decide(&self, p: &Progress) -> Decision {
        let page = crate::abi::PAGE_SIZE as f64;
        match *self {
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
        assert_eq!(x.first_rate(), Some(100.0));
        assert_eq!(x.decide(&progress(1000, None, Some(100.0))), Decision::Continue(Some(450.0)));
        assert!(matches!(x.decide(&progress(10, None, Some(100.0))), Decision::StopAndCopy(_)));
        assert!(matches!(x.decide(&progress(1000, Some(900), Some(1000.0))), Decision::StopAndCopy(_)));
        assert_eq!(x.decide(&progress(1000, Some(900), Some(500.0))), Decision::Continue(Some(450.0)));
        let mut p = progress(1000, None, Some(100.0));
        p.dirty_rate_mbps = 5000.0;
        assert_eq!(x.decide(&p), Decision::Continue(Some(1000.0)));
        p.sent_bytes = 3 * p.ram_bytes;
        assert!(matches!(x.decide(&p), Decision::StopAndCopy(_)));
    }

    #[test]
    fn downtime_switches_cancels_or_forces() {
        let d = Policy::default();
        // 1000 pages at 8000 Mbit/s is about 4 ms.
        assert!(matches!(d.decide(&progress(1000, None, None)), Decision::StopAndCopy(_)));
        let mut p = progress(10_000_000, None, None);
        assert_eq!(d.decide(&p), Decision::Continue(None));
        p.elapsed_ms = 40_000.0;
        assert!(matches!(d.decide(&p), Decision::Cancel(_)));
        let f: Policy = Policy::from_json(&serde_json::json!({"kind":"downtime","on_timeout":"force"})).unwrap();
        assert!(matches!(f.decide(&p), Decision::StopAndCopy(_)));
        assert!(Policy::from_json(&serde_json::json!({"kind":"warp"})).is_err());
    }
}
