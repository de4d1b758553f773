//! The timing harness, with lmbench's method.
//!
//! This module owns how a number is obtained from a body of code:
//! * the timer is [`std::time::Instant`] (CLOCK_MONOTONIC on Linux); its
//!   resolution and the cost of reading it are measured when a [`Harness`] is
//!   made, and ENOUGH is raised if it is under 1000 timer ticks;
//! * the iteration count is calibrated until one measured interval lasts at
//!   least ENOUGH (default 5 ms);
//! * one untimed warm-up call precedes calibration; if the repetitions then
//!   fall short of ENOUGH/2 (a calibration fooled by a slow first call), the
//!   count is scaled up and they are taken again (at most three times);
//! * 11 repetitions are taken at that count, and the summary is their median
//!   (their minimum for memory latency, as lmbench's `lat_mem_rd` does);
//! * the timer overhead (one clock read per interval) is subtracted from each
//!   interval, and the loop overhead (one empty iteration of
//!   [`kernels::null_loop`](crate::kernels::null_loop)) from each iteration,
//!   where the harness, not a kernel, runs the loop.
//!
//! The pure helpers [`median`] and [`minimum`] work on any slice, so their
//! logic is tested on synthetic data.

use std::time::{Duration, Instant};

use crate::kernels;

/// lmbench's default minimum interval.
pub const DEFAULT_ENOUGH: Duration = Duration::from_millis(5);

/// lmbench's number of repetitions.
pub const REPETITIONS: usize = 11;

/// ENOUGH is raised to at least this many timer resolutions (0.1% error).
pub const MIN_TICKS_PER_INTERVAL: f64 = 1000.0;

/// Iteration counts are never raised past this (a body that takes no time).
pub const MAX_ITERATIONS: u64 = 1 << 40;

/// Median of the finite values of `xs` (mean of the two middle ones for an
/// even count); `None` when there is none.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Minimum of the finite values of `xs`; `None` when there is none.
pub fn minimum(xs: &[f64]) -> Option<f64> {
    xs.iter().copied().filter(|x| x.is_finite()).min_by(f64::total_cmp)
}

/// Which summary of the repetitions a row reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    /// The median (lmbench's default).
    Median,
    /// The minimum (lmbench's memory latency).
    Minimum,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The body reported an error.
    #[error("{0}")]
    Body(String),
    /// The body never took ENOUGH time, even at the largest iteration count.
    #[error("calibration did not reach {enough:?} after {iterations} iterations (last interval {last:?})")]
    NeverEnough {
        /// The target interval.
        enough: Duration,
        /// The last iteration count tried.
        iterations: u64,
        /// The interval that count gave.
        last: Duration,
    },
}

/// The outcome of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Iterations per repetition (after calibration).
    pub iterations: u64,
    /// Raw interval of each repetition, in ns.
    pub intervals_ns: Vec<f64>,
    /// Per-iteration time of each repetition, overheads subtracted, in ns.
    pub per_iter_ns: Vec<f64>,
    /// Timer overhead subtracted from each interval, in ns.
    pub timer_overhead_ns: f64,
    /// Loop overhead subtracted from each iteration, in ns (0 when the loop
    /// belongs to the kernel).
    pub loop_overhead_ns: f64,
}

impl Measurement {
    /// The summary per-iteration time in ns (`0.0` if there were no samples,
    /// which the harness never produces).
    pub fn ns(&self, s: Summary) -> f64 {
        let v = match s {
            Summary::Median => median(&self.per_iter_ns),
            Summary::Minimum => minimum(&self.per_iter_ns),
        };
        v.unwrap_or(0.0)
    }

    /// The summary per-iteration time in µs.
    pub fn us(&self, s: Summary) -> f64 {
        self.ns(s) / 1000.0
    }

    /// Bandwidth in MB/s (MB = 10^6 bytes) for `bytes` moved per iteration,
    /// from the median time.
    pub fn mb_per_s(&self, bytes: f64) -> f64 {
        let ns = self.ns(Summary::Median);
        if ns > 0.0 {
            bytes / ns * 1000.0
        } else {
            0.0
        }
    }

    /// Shortest raw interval, in ns (to check against ENOUGH).
    pub fn shortest_interval_ns(&self) -> f64 {
        minimum(&self.intervals_ns).unwrap_or(0.0)
    }
}

/// The lmbench-style timing harness. Make one per suite run: making it
/// measures the timer and the loop overhead.
#[derive(Clone, Debug)]
pub struct Harness {
    /// ENOUGH as asked for.
    pub requested_enough: Duration,
    /// ENOUGH in force (raised to [`MIN_TICKS_PER_INTERVAL`] timer ticks if
    /// the timer is coarse).
    pub enough: Duration,
    /// Repetitions per measurement (11).
    pub repetitions: usize,
    /// Smallest non-zero step seen between two clock reads, in ns.
    pub timer_resolution_ns: f64,
    /// Cost of one clock read, in ns (subtracted once per interval).
    pub timer_overhead_ns: f64,
    /// Cost of one empty loop iteration, in ns.
    pub loop_overhead_ns: f64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new(DEFAULT_ENOUGH)
    }
}

impl Harness {
    /// A harness with the given ENOUGH and 11 repetitions; measures the
    /// timer's resolution and overhead, and the loop overhead.
    pub fn new(enough: Duration) -> Self {
        let timer_resolution_ns = measure_timer_resolution_ns();
        let timer_overhead_ns = measure_timer_overhead_ns();
        let floor = Duration::from_nanos((timer_resolution_ns * MIN_TICKS_PER_INTERVAL).ceil() as u64);
        let effective = enough.max(floor).max(Duration::from_micros(1));
        let mut h = Harness {
            requested_enough: enough,
            enough: effective,
            repetitions: REPETITIONS,
            timer_resolution_ns,
            timer_overhead_ns,
            loop_overhead_ns: 0.0,
        };
        let lo = h
            .measure_kernel_loop(&mut |n| {
                let t = Instant::now();
                std::hint::black_box(kernels::null_loop(n));
                Ok(t.elapsed())
            })
            .map(|m| m.ns(Summary::Median))
            .unwrap_or(0.0);
        h.loop_overhead_ns = lo;
        h
    }

    /// Same harness with another repetition count (at least 1).
    pub fn with_repetitions(mut self, reps: usize) -> Self {
        self.repetitions = reps.max(1);
        self
    }

    /// Find an iteration count `n` for which `f(n)` lasts at least ENOUGH.
    /// `f(n)` runs the body `n` times and returns the time it measured.
    pub fn calibrate(&self, f: &mut dyn FnMut(u64) -> Result<Duration, String>) -> Result<u64, HarnessError> {
        let enough = self.enough;
        let mut n: u64 = 1;
        loop {
            let t = f(n).map_err(HarnessError::Body)?;
            if t >= enough {
                return Ok(n);
            }
            if n >= MAX_ITERATIONS {
                return Err(HarnessError::NeverEnough { enough, iterations: n, last: t });
            }
            // Aim 10% past ENOUGH from the last rate, at least doubling and at
            // most multiplying by 100 per step.
            let next = if t.as_nanos() == 0 {
                n.saturating_mul(100)
            } else {
                let scale = enough.as_secs_f64() * 1.1 / t.as_secs_f64();
                let guess = (n as f64 * scale).ceil();
                let lo = n.saturating_mul(2) as f64;
                let hi = n.saturating_mul(100) as f64;
                guess.clamp(lo, hi) as u64
            };
            n = next.min(MAX_ITERATIONS);
        }
    }

    /// Measure a body whose loop the harness owns: `f(n)` runs the body `n`
    /// times. Timer and loop overhead are subtracted.
    pub fn measure(&self, f: &mut dyn FnMut(u64) -> Result<(), String>) -> Result<Measurement, HarnessError> {
        let mut timed = |n: u64| {
            let t = Instant::now();
            f(n)?;
            Ok(t.elapsed())
        };
        self.run(&mut timed, self.loop_overhead_ns)
    }

    /// Measure a body that times itself: `f(n)` runs `n` iterations and
    /// returns the time of the part that counts (setup left out). Timer and
    /// loop overhead are subtracted.
    pub fn measure_timed(
        &self,
        f: &mut dyn FnMut(u64) -> Result<Duration, String>,
    ) -> Result<Measurement, HarnessError> {
        self.run(f, self.loop_overhead_ns)
    }

    /// Like [`Harness::measure_timed`], for a kernel that runs its own
    /// (unrolled) loop: only the timer overhead is subtracted.
    pub fn measure_kernel_loop(
        &self,
        f: &mut dyn FnMut(u64) -> Result<Duration, String>,
    ) -> Result<Measurement, HarnessError> {
        self.run(f, 0.0)
    }

    fn run(
        &self,
        f: &mut dyn FnMut(u64) -> Result<Duration, String>,
        loop_overhead_ns: f64,
    ) -> Result<Measurement, HarnessError> {
        // One untimed warm-up iteration (first-touch faults, cold caches,
        // scheduling of freshly forked children), as lmbench warms up.
        f(1).map_err(HarnessError::Body)?;
        let mut n = self.calibrate(f)?;
        let enough_ns = self.enough.as_nanos() as f64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut intervals_ns = Vec::with_capacity(self.repetitions);
            let mut per_iter_ns = Vec::with_capacity(self.repetitions);
            for _ in 0..self.repetitions {
                let t = f(n).map_err(HarnessError::Body)?;
                let raw = t.as_nanos() as f64;
                intervals_ns.push(raw);
                per_iter_ns.push(per_iteration_ns(raw, n, self.timer_overhead_ns, loop_overhead_ns));
            }
            let typical = median(&intervals_ns).unwrap_or(0.0);
            // If calibration was fooled (a slow first call), the intervals
            // fall short of ENOUGH: scale the count up and measure again.
            if typical >= enough_ns * 0.5 || attempt >= 3 || n >= MAX_ITERATIONS {
                return Ok(Measurement {
                    iterations: n,
                    intervals_ns,
                    per_iter_ns,
                    timer_overhead_ns: self.timer_overhead_ns,
                    loop_overhead_ns,
                });
            }
            let scale = (enough_ns * 1.1 / typical.max(1.0)).ceil().max(2.0);
            n = ((n as f64 * scale) as u64).min(MAX_ITERATIONS);
        }
    }

    /// One line describing the harness, for a row's `method`.
    pub fn describe(&self) -> String {
        format!(
            "ENOUGH {:.1} ms, {} repetitions, timer resolution {:.0} ns, timer overhead {:.1} ns/interval, loop overhead {:.2} ns/iteration subtracted",
            self.enough.as_secs_f64() * 1e3,
            self.repetitions,
            self.timer_resolution_ns,
            self.timer_overhead_ns,
            self.loop_overhead_ns
        )
    }
}

/// Per-iteration time of an interval: `(interval - timer) / n - loop`,
/// never below zero.
pub fn per_iteration_ns(interval_ns: f64, n: u64, timer_overhead_ns: f64, loop_overhead_ns: f64) -> f64 {
    let n = n.max(1) as f64;
    ((interval_ns - timer_overhead_ns).max(0.0) / n - loop_overhead_ns).max(0.0)
}

/// Smallest non-zero step between consecutive reads of `Instant`, in ns
/// (minimum over 200 tries).
pub fn measure_timer_resolution_ns() -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..200 {
        let t0 = Instant::now();
        let mut t1 = Instant::now();
        let deadline = t0 + Duration::from_millis(50);
        while t1 <= t0 {
            t1 = Instant::now();
            if t1 > deadline {
                break;
            }
        }
        let d = t1.saturating_duration_since(t0).as_nanos() as f64;
        if d > 0.0 && d < best {
            best = d;
        }
    }
    if best.is_finite() {
        best
    } else {
        1.0
    }
}

/// Cost of one `Instant::now()`, in ns: the median over 11 runs of 10 000
/// back-to-back reads.
pub fn measure_timer_overhead_ns() -> f64 {
    const READS: u32 = 10_000;
    let mut samples = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let t = Instant::now();
        for _ in 0..READS {
            std::hint::black_box(Instant::now());
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(READS));
    }
    median(&samples).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_minimum_on_synthetic_data() {
        assert_eq!(median(&[]), None);
        assert_eq!(minimum(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let eleven = [9.0, 2.0, 7.0, 11.0, 1.0, 5.0, 3.0, 10.0, 4.0, 8.0, 6.0];
        assert_eq!(median(&eleven), Some(6.0));
        assert_eq!(minimum(&eleven), Some(1.0));
        // An outlier moves neither the median nor (upwards) the minimum.
        let spiky = [1.0, 1.1, 0.9, 1.0, 1000.0, 1.05, 0.95, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(median(&spiky), Some(1.0));
        assert_eq!(minimum(&spiky), Some(0.9));
        // Non-finite values are ignored.
        assert_eq!(median(&[f64::NAN, 2.0, f64::INFINITY]), Some(2.0));
        assert_eq!(minimum(&[f64::NAN]), None);
        assert_eq!(minimum(&[-1.0, 0.0]), Some(-1.0));
    }

    #[test]
    fn per_iteration_subtracts_overheads() {
        assert_eq!(per_iteration_ns(1000.0, 10, 100.0, 5.0), 85.0);
        assert_eq!(per_iteration_ns(10.0, 10, 100.0, 5.0), 0.0);
        assert_eq!(per_iteration_ns(1000.0, 0, 0.0, 0.0), 1000.0);
    }

    #[test]
    fn calibration_reaches_enough() {
        let h = Harness::new(Duration::from_millis(2));
        assert!(h.enough >= Duration::from_millis(2));
        assert!(h.timer_resolution_ns > 0.0);
        let mut body = |n: u64| {
            let t = Instant::now();
            let mut buf = [1u64; 512];
            for _ in 0..n {
                buf[0] = buf[0].wrapping_add(kernels::read_sum(std::hint::black_box(&buf)));
            }
            std::hint::black_box(buf);
            Ok(t.elapsed())
        };
        let n = h.calibrate(&mut body).unwrap();
        assert!(body(n).unwrap() >= h.enough / 2, "calibrated count gives a short interval");
        let m = h.measure_timed(&mut body).unwrap();
        assert_eq!(m.per_iter_ns.len(), REPETITIONS);
        assert_eq!(m.intervals_ns.len(), REPETITIONS);
        assert!(m.ns(Summary::Median) > 0.0);
        assert!(m.ns(Summary::Minimum) <= m.ns(Summary::Median));
    }

    #[test]
    fn calibration_with_a_synthetic_clock() {
        // A body that "takes" 1 µs per iteration on a fake clock.
        let h = Harness::new(Duration::from_millis(5));
        let mut calls = Vec::new();
        let mut fake = |n: u64| {
            calls.push(n);
            Ok(Duration::from_micros(n))
        };
        let n = h.calibrate(&mut fake).unwrap();
        assert!(Duration::from_micros(n) >= h.enough);
        assert!(n <= 2 * h.enough.as_micros() as u64, "overshot: {n}");
        // Errors and bodies that take no time are reported, not looped on.
        let mut failing = |_n: u64| Err("boom".to_string());
        assert!(matches!(h.calibrate(&mut failing), Err(HarnessError::Body(_))));
        let mut instant = |_n: u64| Ok(Duration::ZERO);
        assert!(matches!(h.calibrate(&mut instant), Err(HarnessError::NeverEnough { .. })));
    }

    #[test]
    fn measurement_summaries() {
        let m = Measurement {
            iterations: 1,
            intervals_ns: vec![1.0; 3],
            per_iter_ns: vec![3.0, 1.0, 2.0],
            timer_overhead_ns: 0.0,
            loop_overhead_ns: 0.0,
        };
        assert_eq!(m.ns(Summary::Median), 2.0);
        assert_eq!(m.ns(Summary::Minimum), 1.0);
        assert_eq!(m.us(Summary::Median), 0.002);
        // 1000 bytes in 2 ns = 500 GB/s = 500 000 MB/s.
        assert_eq!(m.mb_per_s(1000.0), 500_000.0);
    }
}
