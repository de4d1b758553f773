//! The guest side of the microbenchmarks, run in ring 3 with lmbench's
//! method: calibrate each measurement to at least ENOUGH, take 11
//! repetitions, report the median (the minimum for memory latency), and
//! subtract the loop overhead. Time comes from RDTSC scaled by the TSC
//! frequency the VMM passes. Each row goes to the VMM as one JSON result line
//! `{"row":{...}}`; the ids match the native rows of `bench-suites`.
//!
//! Rows: `null_call` (INT3 to ring 0 and back), `null_io` (MMIO read of a
//! VMM register), `page_fault` (a #PF handled by the guest's own handler),
//! memory bandwidth and the memory-latency curve (the shared kernels), and a
//! `ring0` finding: how fast a ring-0 loop runs against the same loop in
//! ring 3.

use crate::{abi, cmdline, hw, result};
use bench_suites::kernels;

const REPS: usize = 11;

/// Nanoseconds per TSC tick.
fn ns_per_tick() -> f64 {
    // SAFETY: the boot page is identity-mapped for the guest's whole life.
    let khz = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*hw::boot_info()).tsc_khz)) };
    1e6 / khz.max(1) as f64
}

struct Harness {
    enough_ns: f64,
    ns_per_tick: f64,
}

impl Harness {
    fn time(&self, f: &mut dyn FnMut(u64), n: u64) -> f64 {
        let t0 = hw::rdtsc();
        f(n);
        hw::rdtsc().wrapping_sub(t0) as f64 * self.ns_per_tick
    }

    /// Iterations that make one interval last at least ENOUGH (capped).
    fn calibrate(&self, f: &mut dyn FnMut(u64), cap: u64) -> u64 {
        let mut n = 1u64;
        loop {
            let t = self.time(f, n);
            if t >= self.enough_ns || n >= cap {
                return n;
            }
            let grow = if t <= 0.0 { 16.0 } else { (self.enough_ns / t * 1.2).clamp(1.5, 16.0) };
            n = ((n as f64 * grow) as u64).clamp(n + 1, cap);
        }
    }

    /// Per-iteration nanoseconds of 11 repetitions, sorted.
    fn reps(&self, f: &mut dyn FnMut(u64), cap: u64) -> ([f64; REPS], u64) {
        let n = self.calibrate(f, cap);
        let mut out = [0f64; REPS];
        for o in &mut out {
            *o = self.time(f, n) / n as f64;
        }
        out.sort_by(|a, b| a.total_cmp(b));
        (out, n)
    }
}

fn emit(id: &str, label: &str, unit: &str, value: f64, method: &str) {
    result!(
        "{{\"row\":{{\"id\":\"{}\",\"label\":\"{}\",\"unit\":\"{}\",\"value\":{},\"method\":\"{}\"}}}}",
        id,
        label,
        unit,
        value,
        method
    );
}

fn selected(id: &str) -> bool {
    match cmdline::value("bench.only") {
        None | Some("") => true,
        Some(list) => list.split(',').any(|p| id.starts_with(p)),
    }
}

fn size_tag(bytes: usize) -> (usize, &'static str) {
    if bytes >= 1 << 20 {
        (bytes >> 20, "m")
    } else if bytes >= 1 << 10 {
        (bytes >> 10, "k")
    } else {
        (bytes, "b")
    }
}

/// Runs the selected rows, then powers off with exit code 0.
pub fn run(vcpu: usize) -> ! {
    let quick = cmdline::u64_or("bench.quick", 0) != 0;
    let h = Harness { enough_ns: if quick { 1e6 } else { 5e6 }, ns_per_tick: ns_per_tick() };
    hw::heartbeat_add(vcpu, 1);

    // Loop overhead, subtracted from the per-call rows.
    let (lo, _) = h.reps(
        &mut |n| {
            core::hint::black_box(kernels::null_loop(n));
        },
        1 << 40,
    );
    let overhead = lo[REPS / 2];

    if selected("ring0") {
        let spin = 2000u64;
        let (r0, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    hw::syscall(abi::syscall::SPIN, spin)
                }
            },
            1 << 20,
        );
        let (r3, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    ring3_spin(spin)
                }
            },
            1 << 30,
        );
        result!(
            "{{\"ring0\":{{\"ring0_ns_per_iter\":{},\"ring3_ns_per_iter\":{},\"iters\":{}}}}}",
            r0[REPS / 2] / spin as f64,
            r3[REPS / 2] / spin as f64,
            spin
        );
    }
    if selected("null_call") {
        let (r, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    hw::syscall(abi::syscall::NULL, 0)
                }
            },
            1 << 30,
        );
        emit(
            "null_call",
            "null call",
            "us",
            (r[REPS / 2] - overhead) / 1e3,
            "guest ring 3: INT3 to the guest's ring-0 #BP handler and IRETQ back; median of 11",
        );
    }
    if selected("null_io") {
        let (r, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    core::hint::black_box(hw::ctrl_read_magic());
                }
            },
            1 << 30,
        );
        emit(
            "null_io",
            "null I/O",
            "us",
            (r[REPS / 2] - overhead) / 1e3,
            "guest ring 3: 8-byte MMIO read of a VMM control register (exit to the VMM and back); median of 11",
        );
    }
    if selected("page_fault") {
        page_fault(&h);
    }
    bandwidth(&h, quick);
    latency(&h, quick);
    hw::exit(0)
}

#[inline(never)]
fn ring3_spin(n: u64) {
    // SAFETY: a register-only loop, the same instructions the ring-0 SPIN runs.
    unsafe { core::arch::asm!("2:", "dec {0}", "jnz 2b", inout(reg) n => _, options(nomem, nostack)) }
}

/// Unmaps the whole demand-fault window: ring 3 clears the page table (RAM,
/// mapped user-writable), ring 0 reloads CR3.
fn reset_fault_window() {
    let pt = abi::FAULT_PT_ADDR as *mut u64;
    for i in 0..512 {
        // SAFETY: the fault window's page table is a page of RAM reserved for it.
        unsafe { core::ptr::write_volatile(pt.add(i), 0) }
    }
    hw::syscall(abi::syscall::FLUSH_TLB, 0);
}

fn page_fault(h: &Harness) {
    let pages = abi::FAULT_WINDOW_SIZE / abi::PAGE_SIZE;
    let touch = |n: u64| {
        for p in 0..n.min(pages) {
            // SAFETY: inside the demand-fault window: the guest's #PF handler
            // maps the page, then the store completes.
            unsafe { core::ptr::write_volatile((abi::FAULT_WINDOW_ADDR + p * abi::PAGE_SIZE) as *mut u8, 1) }
        }
    };
    // Warm the host side once so only the guest's fault is timed.
    reset_fault_window();
    touch(pages);
    let mut samples = [0f64; REPS];
    let mut n = 0;
    for s in &mut samples {
        reset_fault_window();
        let t0 = hw::rdtsc();
        touch(pages);
        *s = hw::rdtsc().wrapping_sub(t0) as f64 * h.ns_per_tick / pages as f64;
        n = pages;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    result!(
        "{{\"row\":{{\"id\":\"page_fault\",\"label\":\"page fault\",\"unit\":\"us\",\"value\":{},\"method\":\"guest ring 3: store to a not-present 4 KiB page; the guest's #PF handler maps it; {} faults per interval; median of 11\"}}}}",
        samples[REPS / 2] / 1e3,
        n
    );
}

fn buffers(bytes: usize) -> (&'static mut [u64], &'static mut [u64]) {
    let words = bytes / 8;
    let base = abi::WORKLOAD_ADDR as *mut u64;
    // SAFETY: the VMM reserved 2 × 64 MiB of workload memory for `bench`,
    // used by nothing else; the two halves do not overlap.
    unsafe { (core::slice::from_raw_parts_mut(base, words), core::slice::from_raw_parts_mut(base.add(words), words)) }
}

fn bandwidth(h: &Harness, quick: bool) {
    let bytes = if quick { 32 << 20 } else { 64 << 20 };
    let (a, b) = buffers(bytes);
    kernels::write_fill(a, 1);
    kernels::write_fill(b, 2);
    let mbs = |ns_per_pass: f64| bytes as f64 / ns_per_pass * 1e3;
    if selected("mem_rd_bw") {
        let (r, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    core::hint::black_box(kernels::read_sum(a));
                }
            },
            1 << 20,
        );
        emit(
            "mem_rd_bw",
            "mem read bw",
            "MB/s",
            mbs(r[REPS / 2]),
            "guest ring 3: sum of every 64-bit word; median of 11",
        );
    }
    if selected("mem_wr_bw") {
        let (r, _) = h.reps(
            &mut |n| {
                for i in 0..n {
                    kernels::write_fill(a, i)
                }
            },
            1 << 20,
        );
        emit(
            "mem_wr_bw",
            "mem write bw",
            "MB/s",
            mbs(r[REPS / 2]),
            "guest ring 3: volatile 64-bit stores over the buffer; median of 11",
        );
    }
    if selected("mem_cp_bw") {
        let (r, _) = h.reps(
            &mut |n| {
                for _ in 0..n {
                    core::hint::black_box(kernels::copy(b, a));
                }
            },
            1 << 20,
        );
        emit(
            "mem_cp_bw",
            "mem copy bw",
            "MB/s",
            mbs(r[REPS / 2]),
            "guest ring 3: 64-bit word copy, bytes copied per second; median of 11",
        );
    }
}

fn latency(h: &Harness, quick: bool) {
    let sizes: &[usize] = if quick {
        &[512, 4 << 10, 32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
    } else {
        &[
            512,
            1 << 10,
            2 << 10,
            4 << 10,
            8 << 10,
            16 << 10,
            32 << 10,
            64 << 10,
            128 << 10,
            256 << 10,
            512 << 10,
            1 << 20,
            2 << 20,
            4 << 20,
            8 << 20,
            16 << 20,
            32 << 20,
            64 << 20,
        ]
    };
    let (a, _) = buffers(64 << 20);
    for &size in sizes {
        let (num, unit) = size_tag(size);
        let mut id = crate::rt::LineBuf::new();
        let _ = core::fmt::Write::write_fmt(&mut id, format_args!("mem_lat_{num}{unit}"));
        let Ok(id) = core::str::from_utf8(id.as_bytes()) else { continue };
        if !selected(id) {
            continue;
        }
        // SAFETY: reinterpreting the u64 buffer as usize words (same size here).
        let ring_buf = unsafe { core::slice::from_raw_parts_mut(a.as_mut_ptr() as *mut usize, size / 8) };
        let Ok(ring) = kernels::build_ring(
            ring_buf,
            kernels::DEFAULT_STRIDE_BYTES,
            kernels::RingOrder::Shuffled(kernels::DEFAULT_SEED),
        ) else {
            continue;
        };
        let ring_buf = &*ring_buf;
        let (r, _) = h.reps(
            &mut |n| {
                core::hint::black_box(kernels::chase(ring_buf, ring.start, n));
            },
            1 << 34,
        );
        let mut label = crate::rt::LineBuf::new();
        let _ = core::fmt::Write::write_fmt(&mut label, format_args!("mem latency {num} {unit}"));
        emit(id, core::str::from_utf8(label.as_bytes()).unwrap_or("mem latency"), "us", r[0] / 1e3,
            "guest ring 3: dependent loads around a random single-cycle ring at 64 B stride, guest RAM on 2 MiB pages; minimum of 11");
    }
}
