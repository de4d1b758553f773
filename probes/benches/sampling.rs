//! Criterion benches of the probe's own hot paths: recording a sample on
//! every 10 ms tick, and the analysis of a long series (application-visible
//! downtime, before/during/after rates).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use probes::http::{app_downtime, phase_rates, SampleRecorder};
use std::hint::black_box;

fn sampling(c: &mut Criterion) {
    let mut g = c.benchmark_group("probe");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record_one_sample", |b| {
        let mut r = SampleRecorder::new(0, 10_000_000);
        let mut t = 0u64;
        let mut total = 0u64;
        b.iter(|| {
            t += 10_000_123;
            total += 4_000_000;
            black_box(r.record(black_box(t), black_box(total)))
        })
    });
    // Ten minutes at 10 ms, with a 300 ms outage in the middle.
    let mut r = SampleRecorder::new(0, 10_000_000);
    let series: Vec<_> = (1..=60_000u64)
        .map(|k| {
            let bytes = if (30_000..30_030).contains(&k) { 0 } else { 4_000_000 };
            (k * 10_000_000, bytes)
        })
        .scan(0u64, |tot, (t, b)| {
            *tot += b;
            Some(r.record(t, *tot))
        })
        .collect();
    g.throughput(Throughput::Elements(series.len() as u64));
    g.bench_function("analyse_60k_samples", |b| {
        b.iter(|| {
            let gap = app_downtime(black_box(&series));
            let rates = phase_rates(&series, 290_000_000_000, 310_000_000_000);
            black_box((gap, rates))
        })
    });
    g.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
