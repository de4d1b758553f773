//! The sampler thread.
//!
//! A dedicated OS thread (not a tokio task, so a busy runtime cannot delay
//! it) sleeps until absolute `CLOCK_MONOTONIC` deadlines `start + k·interval`
//! with `clock_nanosleep(TIMER_ABSTIME)`, then reads the clock and the
//! shared byte counter. The recorded timestamp is the time actually read,
//! never the deadline; rates use the real spacing. When the thread wakes up
//! after one or more later deadlines, those ticks are skipped (counted in
//! `missed_ticks`) rather than fired in a burst.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use results::clock::{mono_ns as monotonic_ns, sleep_until as sleep_until_monotonic};
use results::probe::Sample;
use results::series::rate_mbps;

/// Turns successive reads of the clock and the byte counter into samples:
/// the rate uses the real time since the previous read, and the jitter is
/// that time minus the nominal interval.
#[derive(Debug, Clone)]
pub struct SampleRecorder {
    start_ns: u64,
    interval_ns: u64,
    prev_t: u64,
    prev_total: u64,
}

impl SampleRecorder {
    /// A recorder for a series that starts at `start_ns` (CLOCK_MONOTONIC).
    pub fn new(start_ns: u64, interval_ns: u64) -> Self {
        SampleRecorder { start_ns, interval_ns: interval_ns.max(1), prev_t: start_ns, prev_total: 0 }
    }

    /// The sample for a read of `total` bytes at `now_ns`.
    pub fn record(&mut self, now_ns: u64, total: u64) -> Sample {
        let dt = now_ns.saturating_sub(self.prev_t);
        let delta = total.saturating_sub(self.prev_total);
        self.prev_t = now_ns;
        self.prev_total = total;
        Sample {
            t_ns: now_ns.saturating_sub(self.start_ns),
            bytes_total: total,
            bytes: delta,
            rate_mbps: rate_mbps(delta, dt),
            jitter_us: (dt as i64 - self.interval_ns as i64) / 1000,
        }
    }
}

/// What the sampler thread hands back.
pub(crate) struct SamplerOutput {
    pub samples: Vec<Sample>,
    pub missed_ticks: u64,
}

/// Run the sampling loop until `done` is set; the tick that observes `done`
/// is recorded as the final sample.
///
/// `done` must be set (with `Release`) only after every byte has been added
/// to `bytes`, so that the final sample includes them all.
pub(crate) fn run_sampler(
    bytes: &AtomicU64,
    done: &AtomicBool,
    start_ns: u64,
    interval_ns: u64,
    capacity: usize,
) -> SamplerOutput {
    let interval_ns = interval_ns.max(1);
    let mut samples = Vec::with_capacity(capacity);
    let mut missed_ticks = 0u64;
    let mut k: u64 = 1;
    let mut recorder = SampleRecorder::new(start_ns, interval_ns);
    loop {
        sleep_until_monotonic(start_ns.saturating_add(k.saturating_mul(interval_ns)));
        // Read `done` before the counter: if it is set, every byte is in.
        let finished = done.load(Ordering::Acquire);
        let now = monotonic_ns();
        let total = bytes.load(Ordering::Acquire);
        samples.push(recorder.record(now, total));
        if finished {
            break;
        }
        let next_k = now.saturating_sub(start_ns) / interval_ns + 1;
        missed_ticks += next_k.saturating_sub(k + 1);
        k = next_k.max(k + 1);
    }
    SamplerOutput { samples, missed_ticks }
}

/// Spawn [`run_sampler`] on its own thread, sharing the counters.
pub(crate) fn spawn_sampler(
    bytes: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    start_ns: u64,
    interval_ns: u64,
    capacity: usize,
) -> std::io::Result<std::thread::JoinHandle<SamplerOutput>> {
    std::thread::Builder::new()
        .name("probe-sampler".into())
        .spawn(move || run_sampler(&bytes, &done, start_ns, interval_ns, capacity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_until_done_with_real_timestamps() {
        let bytes = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = monotonic_ns();
        let h = spawn_sampler(bytes.clone(), done.clone(), start, 5_000_000, 64).expect("spawn");
        for _ in 0..10 {
            bytes.fetch_add(100, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        done.store(true, Ordering::Release);
        let out = h.join().expect("join");
        assert!(out.samples.len() >= 3, "{} samples", out.samples.len());
        let last = out.samples.last().expect("last");
        assert_eq!(last.bytes_total, 1000);
        assert_eq!(out.samples.iter().map(|s| s.bytes).sum::<u64>(), 1000);
        let mut prev = 0;
        for s in &out.samples {
            assert!(s.t_ns > prev);
            assert_eq!(s.jitter_us, ((s.t_ns - prev) as i64 - 5_000_000) / 1000);
            prev = s.t_ns;
        }
    }
}
