//! Pure analysis of a probe's sample series.
//!
//! A [`Sample`] at `t_ns` holds the bytes received in `(t_prev, t_ns]`,
//! where `t_prev` is the previous sample's timestamp (or 0, the probe start,
//! for the first sample). All durations here come from those real
//! timestamps, never from the nominal sampling interval.
//!
//! * [`app_downtime`]: the application-visible downtime, i.e. the longest
//!   (in real time) run of consecutive zero-byte samples, measured from the
//!   last sample with bytes before the run to the first sample with bytes
//!   after it. Zero samples before the very first byte (connection set-up)
//!   are not downtime. A run that lasts until the end of the series is
//!   reported with `first_byte_after_ns = None` and its duration measured to
//!   the last sample.
//! * [`gap_around`]: the gap from the last byte before a given time (e.g.
//!   the VMM's switchover, put on the probe's timeline) to the first byte
//!   after it.
//! * [`phase_rates`]: mean rate before, during and after a window.
//!
//! Resolution: a byte counted in a sample arrived somewhere in that sample's
//! interval, so gaps are accurate to about one sampling interval. Both
//! endpoints are sample timestamps, so a gap is an upper bound that
//! overestimates by at most one interval (plus tick jitter), and
//! `(zero_samples + 1)` intervals is a rough lower bound.

use serde::{Deserialize, Serialize};

/// One tick of the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Real `CLOCK_MONOTONIC` time of the sample, in ns since the probe's
    /// start (`ProbeResult::start_monotonic_ns`).
    pub t_ns: u64,
    /// Cumulative body bytes received by all connections so far.
    pub bytes_total: u64,
    /// Bytes received since the previous sample (since the start for the first).
    pub bytes: u64,
    /// `bytes` over the *real* time since the previous sample, in Mbit/s (10^6 bit/s).
    pub rate_mbps: f64,
    /// Actual spacing from the previous sample minus the nominal interval, in µs.
    /// Positive: the tick came late.
    pub jitter_us: i64,
}

/// Megabits per second (10^6 bit/s) for `bytes` received over `dt_ns`.
/// Returns 0.0 when `dt_ns` is 0.
pub fn rate_mbps(bytes: u64, dt_ns: u64) -> f64 {
    if dt_ns == 0 {
        return 0.0;
    }
    // bits / seconds / 1e6 == bytes * 8 * 1e9 / ns / 1e6 == bytes * 8000 / ns
    (bytes as f64) * 8000.0 / (dt_ns as f64)
}

/// A stretch of time in which the application received no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Timestamp (ns since probe start) of the last sample with bytes before the gap.
    pub last_byte_before_ns: u64,
    /// Timestamp of the first sample with bytes after the gap; `None` if no
    /// byte arrived before the series ended.
    pub first_byte_after_ns: Option<u64>,
    /// `first_byte_after_ns - last_byte_before_ns`, or, if the traffic never
    /// resumed, the last sample's timestamp minus `last_byte_before_ns`.
    pub duration_ns: u64,
    /// Number of zero-byte samples strictly between the two endpoints.
    pub zero_samples: usize,
}

impl Gap {
    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.duration_ns as f64 / 1e6
    }

    /// Whether bytes flowed again after the gap.
    pub fn recovered(&self) -> bool {
        self.first_byte_after_ns.is_some()
    }
}

/// Every run of consecutive zero-byte samples after the first byte, in order.
pub fn zero_runs(samples: &[Sample]) -> Vec<Gap> {
    let mut runs = Vec::new();
    let mut last_nonzero: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        if s.bytes == 0 {
            continue;
        }
        if let Some(p) = last_nonzero {
            if i > p + 1 {
                runs.push(Gap {
                    last_byte_before_ns: samples[p].t_ns,
                    first_byte_after_ns: Some(s.t_ns),
                    duration_ns: s.t_ns.saturating_sub(samples[p].t_ns),
                    zero_samples: i - p - 1,
                });
            }
        }
        last_nonzero = Some(i);
    }
    if let (Some(p), Some(last)) = (last_nonzero, samples.last()) {
        if p + 1 < samples.len() {
            runs.push(Gap {
                last_byte_before_ns: samples[p].t_ns,
                first_byte_after_ns: None,
                duration_ns: last.t_ns.saturating_sub(samples[p].t_ns),
                zero_samples: samples.len() - p - 1,
            });
        }
    }
    runs
}

/// The application-visible downtime: the longest (by real duration) run of
/// zero-byte samples, see the module docs. `None` if there was no such run
/// (or no byte at all).
pub fn app_downtime(samples: &[Sample]) -> Option<Gap> {
    zero_runs(samples).into_iter().reduce(|best, g| if g.duration_ns > best.duration_ns { g } else { best })
}

/// The gap around `t_ns` (ns since probe start): from the last sample with
/// bytes at or before `t_ns` to the first sample with bytes after it.
///
/// If traffic flowed continuously across `t_ns` the result is about one
/// sampling interval with `zero_samples == 0`. `None` if no byte arrived at
/// or before `t_ns`.
pub fn gap_around(samples: &[Sample], t_ns: u64) -> Option<Gap> {
    let before = samples.iter().rposition(|s| s.t_ns <= t_ns && s.bytes > 0)?;
    let after = samples.iter().enumerate().skip(before + 1).find(|(_, s)| s.t_ns > t_ns && s.bytes > 0).map(|(i, _)| i);
    let t0 = samples[before].t_ns;
    Some(match after {
        Some(a) => Gap {
            last_byte_before_ns: t0,
            first_byte_after_ns: Some(samples[a].t_ns),
            duration_ns: samples[a].t_ns.saturating_sub(t0),
            zero_samples: a - before - 1,
        },
        None => Gap {
            last_byte_before_ns: t0,
            first_byte_after_ns: None,
            duration_ns: samples.last().map_or(0, |l| l.t_ns.saturating_sub(t0)),
            zero_samples: samples.len() - before - 1,
        },
    })
}

/// Bytes and mean rate over one phase.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseRate {
    /// Number of samples in the phase.
    pub samples: usize,
    /// Bytes received in the phase.
    pub bytes: u64,
    /// Real time covered by the phase's samples (sum of their spacings).
    pub duration_ns: u64,
    /// `bytes` over `duration_ns` in Mbit/s; 0.0 for an empty phase.
    pub mean_mbps: f64,
}

/// Mean rates before, during and after a `[start_ns, end_ns]` window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseRates {
    /// Samples with `t_ns <= start_ns`.
    pub before: PhaseRate,
    /// Samples with `start_ns < t_ns <= end_ns`.
    pub during: PhaseRate,
    /// Samples with `t_ns > end_ns`.
    pub after: PhaseRate,
}

/// Mean rate before, during and after `[start_ns, end_ns]` (ns since probe
/// start). Each sample is assigned to a phase by its timestamp (the end of
/// the interval it covers) and contributes its real spacing from the
/// previous sample (from 0 for the first sample) to the phase's duration.
pub fn phase_rates(samples: &[Sample], start_ns: u64, end_ns: u64) -> PhaseRates {
    let mut out = PhaseRates::default();
    let mut prev_t = 0u64;
    for s in samples {
        let dt = s.t_ns.saturating_sub(prev_t);
        prev_t = s.t_ns;
        let phase = if s.t_ns <= start_ns {
            &mut out.before
        } else if s.t_ns <= end_ns {
            &mut out.during
        } else {
            &mut out.after
        };
        phase.samples += 1;
        phase.bytes += s.bytes;
        phase.duration_ns += dt;
    }
    for p in [&mut out.before, &mut out.during, &mut out.after] {
        p.mean_mbps = rate_mbps(p.bytes, p.duration_ns);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 10 ms (with an optional per-index override of t) and the given byte counts.
    fn series(bytes: &[u64]) -> Vec<Sample> {
        let mut total = 0;
        bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                total += b;
                Sample {
                    t_ns: (i as u64 + 1) * 10_000_000,
                    bytes_total: total,
                    bytes: b,
                    rate_mbps: rate_mbps(b, 10_000_000),
                    jitter_us: 0,
                }
            })
            .collect()
    }

    #[test]
    fn rate_units() {
        // 1250 bytes in 10 ms = 10_000 bit / 0.01 s = 1 Mbit/s
        assert!((rate_mbps(1250, 10_000_000) - 1.0).abs() < 1e-9);
        assert_eq!(rate_mbps(5, 0), 0.0);
    }

    #[test]
    fn downtime_is_longest_run_from_real_timestamps() {
        // leading zeros (start-up) ignored; runs of 2 and 4 zero samples
        let mut s = series(&[0, 0, 5, 5, 0, 0, 5, 0, 0, 0, 0, 5, 5]);
        // make the first run's real duration longer than the second's:
        // stretch samples 4..=6 by 100 ms (a late sampler).
        for x in s.iter_mut().skip(4) {
            x.t_ns += 100_000_000;
        }
        let runs = zero_runs(&s);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].zero_samples, 2);
        assert_eq!(runs[0].last_byte_before_ns, 40_000_000);
        assert_eq!(runs[0].first_byte_after_ns, Some(170_000_000));
        assert_eq!(runs[0].duration_ns, 130_000_000);
        assert_eq!(runs[1].zero_samples, 4);
        assert_eq!(runs[1].duration_ns, 50_000_000);
        let d = app_downtime(&s).expect("downtime");
        assert_eq!(d, runs[0]);
        assert!(d.recovered());
        assert!((d.duration_ms() - 130.0).abs() < 1e-9);
    }

    #[test]
    fn downtime_none_and_unrecovered() {
        assert_eq!(app_downtime(&[]), None);
        assert_eq!(app_downtime(&series(&[0, 0, 0])), None);
        assert_eq!(app_downtime(&series(&[1, 2, 3])), None);
        let d = app_downtime(&series(&[1, 2, 0, 0, 0])).expect("trailing run");
        assert_eq!(d.first_byte_after_ns, None);
        assert_eq!(d.last_byte_before_ns, 20_000_000);
        assert_eq!(d.duration_ns, 30_000_000);
        assert_eq!(d.zero_samples, 3);
    }

    #[test]
    fn gap_around_switchover() {
        let s = series(&[5, 5, 5, 0, 0, 0, 5, 5]);
        // switchover at 45 ms, inside the zero run (samples at 40, 50, 60 ms)
        let g = gap_around(&s, 45_000_000).expect("gap");
        assert_eq!(g.last_byte_before_ns, 30_000_000);
        assert_eq!(g.first_byte_after_ns, Some(70_000_000));
        assert_eq!(g.duration_ns, 40_000_000);
        assert_eq!(g.zero_samples, 3);
        // continuous traffic: about one interval
        let g = gap_around(&s, 15_000_000).expect("gap");
        assert_eq!(g.duration_ns, 10_000_000);
        assert_eq!(g.zero_samples, 0);
        // before any byte
        assert_eq!(gap_around(&s, 5_000_000), None);
        // never resumed
        let g = gap_around(&series(&[5, 0, 0]), 15_000_000).expect("gap");
        assert_eq!(g.first_byte_after_ns, None);
        assert_eq!(g.duration_ns, 20_000_000);
    }

    #[test]
    fn phases() {
        let s = series(&[1250, 1250, 0, 0, 2500, 2500]);
        let p = phase_rates(&s, 20_000_000, 40_000_000);
        assert_eq!(p.before.samples, 2);
        assert_eq!(p.before.bytes, 2500);
        assert_eq!(p.before.duration_ns, 20_000_000);
        assert!((p.before.mean_mbps - 1.0).abs() < 1e-9);
        assert_eq!(p.during.samples, 2);
        assert_eq!(p.during.mean_mbps, 0.0);
        assert_eq!(p.after.bytes, 5000);
        assert!((p.after.mean_mbps - 2.0).abs() < 1e-9);
        let empty = phase_rates(&[], 0, 1);
        assert_eq!(empty.during, PhaseRate::default());
    }
}
