//! The HTTP probe's result: the sample series, the summary, JSON and CSV
//! output. The probe (`probes::http`) fills it; reports and checks read it.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::series::Sample;
use crate::series::{self, Gap, PhaseRates};

/// Per-request latency (request start to last body byte) of complete responses, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of recorded requests.
    pub count: u64,
    /// Smallest latency.
    pub min: u64,
    /// Mean latency.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest latency.
    pub max: u64,
}

/// Sampler tick jitter (actual minus nominal spacing), in µs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JitterSummary {
    /// Mean signed jitter.
    pub mean: f64,
    /// Most negative jitter (tick early relative to the previous one).
    pub min: i64,
    /// Largest jitter (latest tick).
    pub max: i64,
    /// Median of |jitter|.
    pub p50_abs: u64,
    /// 99th percentile of |jitter|.
    pub p99_abs: u64,
    /// Samples whose spacing exceeded 1.5 × the interval.
    pub late_ticks: u64,
    /// Nominal ticks skipped because the sampler woke up after them
    /// (missed ticks are skipped, never bunched up).
    pub missed_ticks: u64,
}

/// Counters and statistics over a whole probe run.
///
/// What is counted:
/// * `requests`: responses whose body was received completely
///   (= `verified + corruptions + unverified`);
/// * `errors`: failed requests of any kind (connect errors, non-2xx status,
///   body errors, timeouts); `timeouts` and `http_errors` are subsets of it;
/// * `timeouts`: no progress (headers or next body chunk) within the
///   configured timeout, or a connect timeout;
/// * `connects`: TCP connections successfully established (counted in the
///   HTTP client's connector); `reconnects` counts those beyond each
///   connection slot's first one; `connect_failures` counts connection
///   attempts that failed (refused, unreachable, ...);
/// * `aborted_at_stop`: requests still in flight when the drain period
///   after the stop ran out (their bytes so far are counted, nothing else).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Real time covered by the samples (timestamp of the last sample).
    pub duration_ns: u64,
    /// Number of samples.
    pub samples: usize,
    /// Body bytes received in total, including partial responses.
    pub bytes: u64,
    /// `bytes` over `duration_ns`, in Mbit/s.
    pub mean_rate_mbps: f64,
    /// Complete responses.
    pub requests: u64,
    /// Complete responses whose body matched their ETag.
    pub verified: u64,
    /// Complete responses whose body did not match their ETag (data corruption).
    pub corruptions: u64,
    /// Complete responses without a usable ETag header (not verified).
    pub unverified: u64,
    /// Failed requests (all kinds).
    pub errors: u64,
    /// Responses with a non-2xx status (subset of `errors`).
    pub http_errors: u64,
    /// Timeouts (subset of `errors`).
    pub timeouts: u64,
    /// TCP connections established.
    pub connects: u64,
    /// TCP connections established beyond each connection slot's first.
    pub reconnects: u64,
    /// Failed TCP connection attempts.
    pub connect_failures: u64,
    /// Requests cut off at the end of the drain period.
    pub aborted_at_stop: u64,
    /// The last error message seen, if any.
    pub last_error: Option<String>,
    /// Request latencies in µs.
    pub latency_us: LatencySummary,
    /// Sampler jitter in µs.
    pub jitter_us: JitterSummary,
    /// Application-visible downtime (see [`series::app_downtime`]).
    pub app_downtime: Option<Gap>,
}

/// Everything one probe run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probed URL.
    pub url: String,
    /// Nominal sampling interval.
    pub interval_ns: u64,
    /// Number of parallel connections.
    pub connections: usize,
    /// No-progress timeout per request.
    pub timeout_ns: u64,
    /// Absolute `CLOCK_MONOTONIC` time (ns) of the probe's start (`t_ns == 0`).
    /// Add it to a sample's `t_ns` to compare with other processes' timestamps.
    pub start_monotonic_ns: u64,
    /// Wall-clock time of the start, ns since the Unix epoch (for humans only).
    pub start_unix_ns: u64,
    /// The time series.
    pub samples: Vec<Sample>,
    /// Totals and statistics.
    pub summary: Summary,
}

impl ProbeResult {
    /// Convert an absolute `CLOCK_MONOTONIC` time to this probe's timeline
    /// (ns since start); `None` if it is before the start.
    pub fn probe_time_ns(&self, monotonic_ns: u64) -> Option<u64> {
        monotonic_ns.checked_sub(self.start_monotonic_ns)
    }

    /// See [`series::app_downtime`].
    pub fn app_downtime(&self) -> Option<Gap> {
        series::app_downtime(&self.samples)
    }

    /// See [`series::gap_around`]; `t_ns` is on the probe's timeline.
    pub fn gap_around(&self, t_ns: u64) -> Option<Gap> {
        series::gap_around(&self.samples, t_ns)
    }

    /// [`Self::gap_around`] for an absolute `CLOCK_MONOTONIC` time.
    pub fn gap_around_monotonic(&self, monotonic_ns: u64) -> Option<Gap> {
        self.gap_around(self.probe_time_ns(monotonic_ns)?)
    }

    /// See [`series::phase_rates`]; times are on the probe's timeline.
    pub fn phase_rates(&self, start_ns: u64, end_ns: u64) -> PhaseRates {
        series::phase_rates(&self.samples, start_ns, end_ns)
    }

    /// Write the series as CSV: header `t_s,bytes,rate_mbps,jitter_us`, one
    /// row per sample (`t_s` in seconds since the probe start, `bytes` since
    /// the previous sample).
    pub fn write_csv<W: Write>(&self, mut w: W) -> io::Result<()> {
        writeln!(w, "t_s,bytes,rate_mbps,jitter_us")?;
        for s in &self.samples {
            writeln!(w, "{:.6},{},{:.3},{}", s.t_ns as f64 / 1e9, s.bytes, s.rate_mbps, s.jitter_us)?;
        }
        w.flush()
    }

    /// [`Self::write_csv`] to a file.
    pub fn save_csv(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let f = std::fs::File::create(path)?;
        self.write_csv(io::BufWriter::new(f))
    }

    /// Write the whole result as pretty JSON to a file.
    pub fn save_json(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let f = std::fs::File::create(path)?;
        let mut w = io::BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, self)?;
        w.flush()
    }
}

/// Jitter statistics over a series; `interval_ns` is the nominal interval.
pub fn jitter_summary(samples: &[Sample], interval_ns: u64, missed_ticks: u64) -> JitterSummary {
    if samples.is_empty() {
        return JitterSummary { missed_ticks, ..JitterSummary::default() };
    }
    let mut abs: Vec<u64> = samples.iter().map(|s| s.jitter_us.unsigned_abs()).collect();
    abs.sort_unstable();
    let pct = |q: f64| abs[((abs.len() - 1) as f64 * q).round() as usize];
    let late_limit_us = (interval_ns / 2 / 1000) as i64;
    JitterSummary {
        mean: samples.iter().map(|s| s.jitter_us as f64).sum::<f64>() / samples.len() as f64,
        min: samples.iter().map(|s| s.jitter_us).min().unwrap_or(0),
        max: samples.iter().map(|s| s.jitter_us).max().unwrap_or(0),
        p50_abs: pct(0.5),
        p99_abs: pct(0.99),
        late_ticks: samples.iter().filter(|s| s.jitter_us > late_limit_us).count() as u64,
        missed_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> ProbeResult {
        let samples = vec![
            Sample { t_ns: 10_000_000, bytes_total: 1250, bytes: 1250, rate_mbps: 1.0, jitter_us: 0 },
            Sample { t_ns: 25_000_000, bytes_total: 1250, bytes: 0, rate_mbps: 0.0, jitter_us: 5000 },
            Sample { t_ns: 30_000_000, bytes_total: 2500, bytes: 1250, rate_mbps: 2.0, jitter_us: -5000 },
        ];
        ProbeResult {
            url: "http://x/file".into(),
            interval_ns: 10_000_000,
            connections: 4,
            timeout_ns: 1,
            start_monotonic_ns: 1_000,
            start_unix_ns: 0,
            summary: Summary { jitter_us: jitter_summary(&samples, 10_000_000, 2), ..Summary::default() },
            samples,
        }
    }

    #[test]
    fn csv_format() {
        let mut out = Vec::new();
        result().write_csv(&mut out).expect("csv");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "t_s,bytes,rate_mbps,jitter_us\n0.010000,1250,1.000,0\n0.025000,0,0.000,5000\n0.030000,1250,2.000,-5000\n"
        );
    }

    #[test]
    fn json_round_trip_and_timeline() {
        let r = result();
        let json = serde_json::to_string(&r).expect("ser");
        let back: ProbeResult = serde_json::from_str(&json).expect("de");
        assert_eq!(back, r);
        assert_eq!(r.probe_time_ns(500), None);
        assert_eq!(r.probe_time_ns(1_500), Some(500));
        let g = r.gap_around_monotonic(1_000 + 20_000_000).expect("gap");
        assert_eq!(g.duration_ns, 20_000_000);
    }

    #[test]
    fn jitter_stats() {
        let j = result().summary.jitter_us;
        assert_eq!(j.min, -5000);
        assert_eq!(j.max, 5000);
        assert_eq!(j.mean, 0.0);
        assert_eq!(j.p50_abs, 5000);
        assert_eq!(j.late_ticks, 0);
        assert_eq!(j.missed_ticks, 2);
    }
}
