//! Synthetic inputs for the tests: migration statistics and probe series
//! shaped like a real idle and a real loaded run. These stand in for the
//! VMM and the probe, which are outside the system under test here.
#![allow(dead_code)]

use bench_suites::env::Environment;
use reports::ScenarioResult;
use results::Policy;
use results::{DowntimeBreakdown, MigrationStats, Outcome, RoundStats};
use results::{ProbeResult, Sample, Summary};

/// Absolute CLOCK_MONOTONIC of the probe's start.
pub const PROBE_START: u64 = 5_000_000_000_000;
/// The migration starts this long after the probe.
pub const MIGRATION_OFFSET_NS: u64 = 4_000_000_000;

/// One round: (start_ms, duration_ms, MB sent, dirty pages, rate, limit).
type R = (f64, f64, f64, u64, f64, Option<f64>);

fn rounds(spec: &[R]) -> Vec<RoundStats> {
    spec.iter()
        .enumerate()
        .map(|(i, &(start_ms, duration_ms, mb, dirty_pages, rate_mbps, limit))| RoundStats {
            round: i as u32,
            pages_sent: (mb * 1e6 / 4096.0) as u64 + 100,
            bytes: (mb * 1e6) as u64,
            zero_pages: if i == 0 { 60_000 } else { 0 },
            dirty_pages,
            start_ms,
            duration_ms,
            rate_mbps,
            rate_limit_mbps: limit,
            dirty_rate_pages_s: dirty_pages as f64 / (duration_ms / 1e3),
            throttle_pct: None,
        })
        .collect()
}

/// Migration statistics: `downtime_ms` long stop-and-copy after `spec`.
pub fn stats(policy: Policy, spec: &[R], downtime_ms: f64) -> MigrationStats {
    let rs = rounds(spec);
    let last = rs.last().map_or(0.0, |r| r.start_ms + r.duration_ms);
    let paused = last + 2.0;
    let resumed = paused + downtime_ms;
    MigrationStats {
        outcome: Outcome::Completed,
        reason: None,
        stop_reason: Some("remaining pages fit the downtime target".into()),
        policy,
        start_mono_ns: PROBE_START + MIGRATION_OFFSET_NS,
        total_ms: resumed + 25.0,
        setup_ms: rs.first().map(|r| r.start_ms),
        ram_bytes: 512 << 20,
        transferred_bytes: rs.iter().map(|r| r.bytes).sum::<u64>() + 3_000_000,
        zero_pages: 60_000,
        final_pages: rs.last().map_or(0, |r| r.dirty_pages),
        rounds: rs,
        paused_at_ms: Some(paused),
        resumed_at_ms: Some(resumed),
        downtime_ms: Some(downtime_ms),
        downtime_breakdown: Some(DowntimeBreakdown {
            pause_ms: downtime_ms * 0.05,
            final_copy_ms: downtime_ms * 0.7,
            state_ms: downtime_ms * 0.05,
            restore_ms: downtime_ms * 0.15,
            resume_ms: downtime_ms * 0.05,
        }),
        paused_total_ms: Some(downtime_ms),
        verify: None,
        thread_priorities: None,
    }
}

/// A deterministic noise source in [-1, 1].
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A 10 ms probe series of `secs` seconds: `base` Mbit/s, `during` Mbit/s
/// while the migration runs, nothing from the pause to `resume + 20 ms`.
pub fn probe(m: &MigrationStats, secs: f64, base: f64, during: f64, seed: u64) -> ProbeResult {
    let mut rng = Lcg(seed);
    let mig = (m.start_mono_ns - PROBE_START) as f64 / 1e6; // ms on the probe timeline
    let paused = mig + m.paused_at_ms.unwrap_or(0.0);
    let resumed = mig + m.resumed_at_ms.unwrap_or(0.0) + 20.0;
    let n = (secs * 100.0) as u64;
    let mut samples = Vec::new();
    let mut total = 0u64;
    let mut prev = 0u64;
    for i in 1..=n {
        let jitter_us = (rng.next() * 300.0) as i64;
        let t_ns = (i * 10_000_000) as i64 + jitter_us * 1000;
        let t_ns = t_ns as u64;
        let t_ms = t_ns as f64 / 1e6;
        let level = if t_ms > paused && t_ms < resumed {
            0.0
        } else if t_ms > mig && t_ms <= paused {
            during
        } else {
            base
        };
        let rate = if level > 0.0 { (level + rng.next() * 0.06 * level).max(0.0) } else { 0.0 };
        let dt = t_ns - prev;
        let bytes = (rate * dt as f64 / 8000.0) as u64;
        total += bytes;
        samples.push(Sample {
            t_ns,
            bytes_total: total,
            bytes,
            rate_mbps: results::series::rate_mbps(bytes, dt),
            jitter_us,
        });
        prev = t_ns;
    }
    let summary = Summary {
        duration_ns: prev,
        samples: samples.len(),
        bytes: total,
        mean_rate_mbps: results::series::rate_mbps(total, prev),
        requests: total / (16 << 20),
        verified: total / (16 << 20),
        app_downtime: results::series::app_downtime(&samples),
        ..Summary::default()
    };
    ProbeResult {
        url: "http://10.0.0.2/file".into(),
        interval_ns: 10_000_000,
        connections: 4,
        timeout_ns: 5_000_000_000,
        start_monotonic_ns: PROBE_START,
        start_unix_ns: 1_795_678_883_000_000_000,
        samples,
        summary,
    }
}

pub fn env() -> Environment {
    Environment {
        cpu_model: "Synthetic CPU @ 2.4GHz".into(),
        logical_cpus: 2,
        memory_bytes: 24 << 30,
        kernel_version: "6.18.44".into(),
        ..Environment::default()
    }
}

pub const IDLE_DOWNTIME_MS: f64 = 41.25;
pub const LOADED_DOWNTIME_MS: f64 = 387.5;

/// An idle guest: one big round, one tiny one, a short downtime.
pub fn idle() -> ScenarioResult {
    let m = stats(
        Policy::default(),
        &[(0.0, 2000.0, 210.0, 300, 840.0, None), (2000.0, 30.0, 1.2, 25, 320.0, None)],
        IDLE_DOWNTIME_MS,
    );
    let p = probe(&m, 10.0, 900.0, 860.0, 7);
    ScenarioResult::new("idle", "2026-11-26T07:41:23Z", env(), m, Some(p))
}

/// A loaded guest (stress --vm 3): many rounds under the xen policy, a long downtime.
pub fn loaded() -> ScenarioResult {
    let m = stats(
        Policy::xen(),
        &[
            (0.0, 2600.0, 260.0, 31_000, 800.0, Some(1000.0)),
            (2600.0, 1300.0, 127.0, 28_000, 780.0, Some(830.0)),
            (3900.0, 1150.0, 115.0, 27_500, 790.0, Some(830.0)),
            (5050.0, 1120.0, 113.0, 27_000, 800.0, Some(830.0)),
            (6170.0, 1100.0, 110.0, 26_800, 800.0, Some(830.0)),
        ],
        LOADED_DOWNTIME_MS,
    );
    let p = probe(&m, 14.0, 900.0, 620.0, 11);
    ScenarioResult::new("loaded", "2026-11-26T07:43:02Z", env(), m, Some(p))
        .with_description("heavily loaded: stress --vm 3")
}
