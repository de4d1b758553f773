//! Criterion benches of the migration's hot paths: the dirty-bitmap merge and
//! count of every round, and the page send path (copy, zero check, batching,
//! CRC, framing) into a sink, so the VMM's own cost is seen without a network.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use vmm_min::migration::page_sender::{count, merge_into, PageSender};
use vmm_min::migration::wire::FrameWriter;

const PAGE: usize = 4096;

fn bitmaps(c: &mut Criterion) {
    // 512 MiB of guest RAM: 131072 pages, 2048 words.
    let words = 131072 / 64;
    let kvm: Vec<u64> = (0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let own: Vec<u64> = (0..words as u64).map(|i| if i % 7 == 0 { 1 << (i % 64) } else { 0 }).collect();
    let mut g = c.benchmark_group("dirty_bitmap");
    g.throughput(Throughput::Elements(131072));
    g.bench_function("merge_and_count_512MiB", |b| {
        b.iter_batched(
            || kvm.clone(),
            |mut map| {
                merge_into(&mut map, &own);
                black_box(count(&map))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn send_path(c: &mut Criterion) {
    let pages = 16384; // 64 MiB
    let mut ram = vec![0u8; pages * PAGE];
    for p in (0..pages).step_by(2) {
        ram[p * PAGE..(p + 1) * PAGE].fill((p % 251) as u8 + 1);
    }
    let all = vec![u64::MAX; pages / 64];
    let mut g = c.benchmark_group("page_send");
    g.throughput(Throughput::Bytes((pages * PAGE) as u64));
    g.sample_size(20);
    g.bench_function("half_zero_64MiB_to_sink", |b| {
        b.iter(|| {
            // SAFETY: `ram` outlives the sender.
            let mut s = unsafe { PageSender::new(FrameWriter::new(std::io::sink()), ram.as_ptr(), pages as u64) };
            black_box(s.send(&all, None).expect("sink never fails"))
        })
    });
    g.finish();
}

criterion_group!(benches, bitmaps, send_path);
criterion_main!(benches);
