//! The migration policy: when pre-copy stops iterating, and how fast it
//! sends. One typed value travels from the CLI flags or a scenario file to
//! the source (and to QEMU's parameters), with one set of defaults here.
//!
//! - `xen`: Clark et al.'s dynamic rate limiting. Round 0 goes at
//!   `initial_mbps`; after each round the rate becomes the observed dirty
//!   rate + `increment_mbps`, capped at `max_mbps`. Stop-and-copy starts when
//!   fewer than `min_pages` remain, after `max_rounds`, after sending
//!   `max_factor` × RAM, or when at the maximum rate the dirty set no longer
//!   shrinks.
//! - `downtime` (default, QEMU-like): no rate limit but `max_bandwidth_mbps`;
//!   stop-and-copy once remaining bytes ÷ measured bandwidth is under
//!   `downtime_ms`. After `timeout_ms` it cancels (the default: the source
//!   keeps running) or forces the switch, as `on_timeout` says.
//!
//! The decision itself runs in the source (`vmm_min::migration::policy`).

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

    /// Sets a bandwidth cap (Mbit/s) on either policy.
    pub fn with_max_bandwidth(mut self, mbps: f64) -> Self {
        match &mut self {
            Policy::Xen { max_mbps, .. } => *max_mbps = mbps,
            Policy::Downtime { max_bandwidth_mbps, .. } => *max_bandwidth_mbps = Some(mbps),
        }
        self
    }

    /// The policy's name as the CLI and scenario files spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::Xen { .. } => "xen",
            Policy::Downtime { .. } => "downtime",
        }
    }

    /// Checks every value, so that no later arithmetic overflows or sleeps
    /// for ever: rates at least [`MIN_RATE_MBPS`], times positive and at
    /// most [`MAX_TIME_MS`], counts positive.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let rate = |name: &'static str, v: f64| {
            if v.is_finite() && (MIN_RATE_MBPS..=MAX_RATE_MBPS).contains(&v) {
                Ok(())
            } else {
                Err(PolicyError::OutOfRange { name, value: v, range: "1 to 10000000 Mbit/s" })
            }
        };
        let time = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= MAX_TIME_MS {
                Ok(())
            } else {
                Err(PolicyError::OutOfRange { name, value: v, range: "more than 0 and at most 86400000 ms (a day)" })
            }
        };
        match *self {
            Policy::Xen { initial_mbps, increment_mbps, max_mbps, min_pages: _, max_rounds, max_factor } => {
                rate("initial_mbps", initial_mbps)?;
                rate("max_mbps", max_mbps)?;
                if !(increment_mbps.is_finite() && (0.0..=MAX_RATE_MBPS).contains(&increment_mbps)) {
                    return Err(PolicyError::OutOfRange {
                        name: "increment_mbps",
                        value: increment_mbps,
                        range: "0 to 10000000 Mbit/s",
                    });
                }
                if max_rounds == 0 {
                    return Err(PolicyError::OutOfRange { name: "max_rounds", value: 0.0, range: "at least 1" });
                }
                if !(max_factor.is_finite() && max_factor > 0.0 && max_factor <= 1000.0) {
                    return Err(PolicyError::OutOfRange {
                        name: "max_factor",
                        value: max_factor,
                        range: "more than 0 and at most 1000",
                    });
                }
            }
            Policy::Downtime { downtime_ms, timeout_ms, on_timeout: _, max_bandwidth_mbps } => {
                time("downtime_ms", downtime_ms)?;
                time("timeout_ms", timeout_ms)?;
                if let Some(b) = max_bandwidth_mbps {
                    rate("max_bandwidth_mbps", b)?;
                }
            }
        }
        Ok(())
    }
}

/// Values a user gave (flags or scenario keys), to lay over a policy's
/// defaults with [`Policy::build`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOverrides {
    /// `downtime`'s target, ms.
    pub downtime_ms: Option<f64>,
    /// `downtime`'s timeout, ms.
    pub timeout_ms: Option<f64>,
    /// `downtime`'s strategy at the timeout.
    pub on_timeout: Option<OnTimeout>,
    /// A bandwidth cap (for `xen`, its maximum rate), Mbit/s.
    pub max_bandwidth_mbps: Option<f64>,
}

impl Policy {
    /// The policy `kind` ("downtime" or "xen") with `o` over its defaults,
    /// validated.
    pub fn build(kind: &str, o: &PolicyOverrides) -> Result<Policy, PolicyError> {
        let mut p = match kind {
            "downtime" => Policy::default(),
            "xen" => Policy::xen(),
            other => return Err(PolicyError::UnknownKind(other.to_owned())),
        };
        match &mut p {
            Policy::Downtime { downtime_ms, timeout_ms, on_timeout, .. } => {
                *downtime_ms = o.downtime_ms.unwrap_or(*downtime_ms);
                *timeout_ms = o.timeout_ms.unwrap_or(*timeout_ms);
                *on_timeout = o.on_timeout.unwrap_or(*on_timeout);
            }
            Policy::Xen { .. } => {
                if o.downtime_ms.is_some() || o.timeout_ms.is_some() || o.on_timeout.is_some() {
                    return Err(PolicyError::NotForXen);
                }
            }
        }
        if let Some(m) = o.max_bandwidth_mbps {
            p = p.with_max_bandwidth(m);
        }
        p.validate()?;
        Ok(p)
    }
}

/// The smallest rate a policy accepts, Mbit/s: below it pacing would sleep
/// for hours per batch.
pub const MIN_RATE_MBPS: f64 = 1.0;
/// The largest rate a policy accepts, Mbit/s (10 Tbit/s).
pub const MAX_RATE_MBPS: f64 = 10_000_000.0;
/// The longest time a policy accepts, ms (a day).
pub const MAX_TIME_MS: f64 = 86_400_000.0;

/// A policy that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Neither "downtime" nor "xen".
    #[error("unknown migration policy '{0}': expected downtime or xen")]
    UnknownKind(String),
    /// A `downtime` setting given to `xen`.
    #[error("the downtime target, timeout and on_timeout belong to the downtime policy, not xen")]
    NotForXen,
    /// A number outside what the policy accepts.
    #[error("migration policy: {name} = {value} is out of range; expected {range}")]
    OutOfRange {
        /// The field.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is accepted.
        range: &'static str,
    },
}

/// Auto-converge, QEMU's semantics: when a pre-copy round does not shrink
/// the dirty set enough (the guest dirtied more than `trigger_pct` percent
/// of what the round sent), the worker vCPUs are throttled: `initial_pct`
/// percent of their time held off at first, `increment_pct` more after each
/// further such round, up to `max_pct`. Throttling is a duty cycle on the
/// worker vCPU threads; the vCPU that runs the guest's network is never
/// throttled. Independent of the policy (either policy can use it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// The first throttle, percent (QEMU's `cpu-throttle-initial`, 20).
    #[serde(default = "d_throttle_initial")]
    pub initial_pct: f64,
    /// Added per round that still does not converge, percent
    /// (`cpu-throttle-increment`, 10).
    #[serde(default = "d_throttle_increment")]
    pub increment_pct: f64,
    /// The most, percent (`max-cpu-throttle`, 99).
    #[serde(default = "d_throttle_max")]
    pub max_pct: f64,
    /// A round "does not converge" when the pages dirtied during it exceed
    /// this share of the pages it sent, percent (`throttle-trigger-threshold`, 50).
    #[serde(default = "d_throttle_trigger")]
    pub trigger_pct: f64,
}

fn d_throttle_initial() -> f64 {
    20.0
}
fn d_throttle_increment() -> f64 {
    10.0
}
fn d_throttle_max() -> f64 {
    99.0
}
fn d_throttle_trigger() -> f64 {
    50.0
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            initial_pct: d_throttle_initial(),
            increment_pct: d_throttle_increment(),
            max_pct: d_throttle_max(),
            trigger_pct: d_throttle_trigger(),
        }
    }
}

impl Throttle {
    /// QEMU's defaults with another maximum.
    pub fn with_max(max_pct: f64) -> Self {
        Throttle { max_pct, ..Throttle::default() }
    }

    /// Checks every value: percentages from 1 to 99 (the maximum at least
    /// the initial value), the increment 0 to 99, the trigger 1 to 100.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let pct = |name: &'static str, v: f64, lo: f64, hi: f64, range: &'static str| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(PolicyError::OutOfRange { name, value: v, range })
            }
        };
        pct("throttle initial_pct", self.initial_pct, 1.0, 99.0, "1 to 99 percent")?;
        pct("throttle increment_pct", self.increment_pct, 0.0, 99.0, "0 to 99 percent")?;
        pct("throttle max_pct", self.max_pct, self.initial_pct, 99.0, "the initial percentage to 99 percent")?;
        pct("throttle trigger_pct", self.trigger_pct, 1.0, 100.0, "1 to 100 percent")
    }

    /// The throttle after a round, given the one in force during it
    /// (`None`: none yet), the pages the round sent and the pages dirtied
    /// during it. Unchanged when the round converged well enough.
    pub fn next(&self, current: Option<f64>, pages_sent: u64, dirtied: u64) -> Option<f64> {
        if (dirtied as f64) <= pages_sent as f64 * self.trigger_pct / 100.0 {
            return current;
        }
        Some(match current {
            None => self.initial_pct,
            Some(c) => (c + self.increment_pct).min(self.max_pct),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_starts_at_20_and_climbs_by_10_to_the_max() {
        let t = Throttle::with_max(45.0);
        t.validate().unwrap();
        assert_eq!(t.next(None, 1000, 400), None, "a round that converges leaves it off");
        assert_eq!(t.next(None, 1000, 900), Some(20.0));
        assert_eq!(t.next(Some(20.0), 1000, 900), Some(30.0));
        assert_eq!(t.next(Some(40.0), 1000, 900), Some(45.0));
        assert_eq!(t.next(Some(30.0), 1000, 100), Some(30.0), "kept, not lowered");
        assert!(Throttle::with_max(10.0).validate().is_err());
        assert!(Throttle { initial_pct: f64::NAN, ..Throttle::default() }.validate().is_err());
        let parsed: Throttle = serde_json::from_str(r#"{"max_pct": 80}"#).unwrap();
        assert_eq!(parsed, Throttle::with_max(80.0));
    }

    #[test]
    fn one_set_of_defaults() {
        let d: Policy = serde_json::from_str(r#"{"kind":"downtime"}"#).expect("parse");
        assert_eq!(d, Policy::default());
        assert!(matches!(d, Policy::Downtime { on_timeout: OnTimeout::Cancel, .. }));
        let x: Policy = serde_json::from_str(r#"{"kind":"xen"}"#).expect("parse");
        assert_eq!(x, Policy::xen());
        assert!(serde_json::from_str::<Policy>(r#"{"kind":"warp"}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"kind":"xen","bogus":1}"#).is_err());
    }

    #[test]
    fn overrides_lie_over_the_defaults() {
        let o = PolicyOverrides { downtime_ms: Some(50.0), on_timeout: Some(OnTimeout::Force), ..Default::default() };
        let p = Policy::build("downtime", &o).expect("policy");
        assert_eq!(
            p,
            Policy::Downtime {
                downtime_ms: 50.0,
                timeout_ms: 30_000.0,
                on_timeout: OnTimeout::Force,
                max_bandwidth_mbps: None
            }
        );
        assert_eq!(Policy::build("xen", &o), Err(PolicyError::NotForXen));
        assert!(matches!(Policy::build("warp", &PolicyOverrides::default()), Err(PolicyError::UnknownKind(_))));
        let slow = PolicyOverrides { max_bandwidth_mbps: Some(0.001), ..Default::default() };
        assert!(matches!(Policy::build("xen", &slow), Err(PolicyError::OutOfRange { .. })));
    }

    #[test]
    fn validation_rejects_what_would_hang_or_overflow() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy::xen().validate().is_ok());
        assert!(Policy::default().with_max_bandwidth(0.0).validate().is_err());
        assert!(Policy::default().with_max_bandwidth(0.001).validate().is_err());
        assert!(Policy::xen().with_max_bandwidth(f64::NAN).validate().is_err());
        let p = Policy::Downtime {
            downtime_ms: 0.0,
            timeout_ms: 1.0,
            on_timeout: OnTimeout::Force,
            max_bandwidth_mbps: None,
        };
        assert!(p.validate().is_err());
        let p = Policy::Downtime {
            downtime_ms: 1.0,
            timeout_ms: 1e300,
            on_timeout: OnTimeout::Force,
            max_bandwidth_mbps: None,
        };
        assert!(p.validate().is_err());
    }
}
