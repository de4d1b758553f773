//! What each vCPU does, chosen by its role on the command line:
//! - `main`: the heartbeat, the VMM's requests, and the main work
//!   (`work=idle|memcheck|fault`);
//! - `stress`: a `stress --vm` worker;
//! - `idle`: sleeps in the VMM.

use crate::{abi, cmdline, hw, result};
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};

const PAGE: usize = abi::PAGE_SIZE as usize;
const WORDS_PER_PAGE: usize = PAGE / 8;

/// The main vCPU's loop.
pub fn main_vcpu(vcpu: usize) -> ! {
    // The first beat marks the end of boot for the VMM's `boot_ms`.
    hw::heartbeat_add(vcpu, 1);
    match cmdline::value("work").unwrap_or("idle") {
        "memcheck" => memcheck(vcpu),
        "bench" => crate::bench::run(vcpu),
        "fault" => fault(),
        _ => idle_main(vcpu),
    }
}

fn idle_main(vcpu: usize) -> ! {
    if crate::net::configured() {
        // Serves the network for good; returns only if the NIC is unusable.
        crate::net::serve(vcpu);
    }
    loop {
        hw::heartbeat_add(vcpu, 1);
        if let Some((seq, _)) = hw::pending_request() {
            // No memcheck region: nothing to verify, report success.
            hw::complete_request(seq, 0);
        }
        hw::wait_us(1000);
    }
}

/// A vCPU without work: sleeps in the VMM, waking now and then.
pub fn idle_vcpu(vcpu: usize) -> ! {
    loop {
        hw::heartbeat_add(vcpu, 1);
        hw::wait_us(100_000);
    }
}

/// `stress --vm` semantics: "allocate" this worker's region, write one byte
/// every 4096 bytes, "free" it, forever. Worker `index` owns the
/// `index`-th region of `stress.bytes` bytes after `abi::WORKLOAD_ADDR`.
pub fn stress_worker(vcpu: usize) -> ! {
    let index = (0..vcpu).filter(|&v| cmdline::role(v) == "stress").count();
    let bytes = cmdline::u64_or("stress.bytes", 128 << 20) as usize;
    let base = abi::WORKLOAD_ADDR as usize + index * bytes;
    let pages = bytes / PAGE;
    let mut round: u8 = 0;
    loop {
        round = round.wrapping_add(1);
        for p in 0..pages {
            // SAFETY: the VMM checked that RAM covers every worker's region,
            // which no other code uses.
            unsafe { write_volatile((base + p * PAGE) as *mut u8, round) }
            if p % 256 == 255 {
                hw::pages_written_add(vcpu, 256);
            }
        }
        hw::pages_written_add(vcpu, (pages % 256) as u64);
        hw::heartbeat_add(vcpu, 1);
    }
}

/// The content word `w` of page `page` at generation `gen`.
fn pattern(page: u64, gen: u64, w: u64) -> u64 {
    let x = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ gen.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x.wrapping_add(w.wrapping_mul(0x1656_67B1_9E37_79F9)) ^ (x >> 29)
}

/// Fills page `page` of the region at `base` for generation `gen`. Word 0
/// holds the generation, word 1 the page number.
fn fill_page(base: usize, page: usize, gen: u64) {
    let p = (base + page * PAGE) as *mut u64;
    // SAFETY: the page lies in the memcheck region, owned by this vCPU.
    unsafe {
        write_volatile(p, gen);
        write_volatile(p.add(1), page as u64);
        for w in 2..WORDS_PER_PAGE {
            write_volatile(p.add(w), pattern(page as u64, gen, w as u64));
        }
    }
}

/// Whether page `page` holds exactly generation `gen`'s content.
fn page_ok(base: usize, page: usize, gen: u64) -> bool {
    let p = (base + page * PAGE) as *const u64;
    // SAFETY: as in `fill_page`.
    unsafe {
        read_volatile(p) == gen
            && read_volatile(p.add(1)) == page as u64
            && (2..WORDS_PER_PAGE).all(|w| read_volatile(p.add(w)) == pattern(page as u64, gen, w as u64))
    }
}

/// Fills a region with a pattern derived from page number and generation,
/// keeps rewriting random pages at `memcheck.rate` pages/s, and verifies the
/// whole region when the VMM asks. The expected generation of every page is
/// kept in a table on the heap, so a lost write to either is caught.
fn memcheck(vcpu: usize) -> ! {
    let bytes = cmdline::u64_or("memcheck.bytes", 64 << 20) as usize;
    let rate = cmdline::u64_or("memcheck.rate", 20_000);
    let base = abi::WORKLOAD_ADDR as usize;
    let pages = bytes / PAGE;
    let mut gens: Vec<u64> = vec![1; pages];
    for p in 0..pages {
        fill_page(base, p, 1);
    }
    crate::println!("memcheck: {} pages filled, rewriting {} pages/s", pages, rate);

    let tsc_ms = hw::tsc_per_us() * 1000;
    let per_ms = (rate / 1000).max(1) as usize;
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = hw::rdtsc();
    loop {
        if let Some((seq, _)) = hw::pending_request() {
            let bad: Vec<usize> = (0..pages).filter(|&p| !page_ok(base, p, gens[p])).collect();
            result!(
                "{{\"memcheck\":{{\"pages\":{},\"bad\":{},\"first_bad\":{}}}}}",
                pages,
                bad.len(),
                bad.first().map_or(-1, |&p| p as i64)
            );
            hw::complete_request(seq, bad.len() as u64);
        }
        let now = hw::rdtsc();
        if now < next {
            hw::wait_us((next - now) / (tsc_ms / 1000));
            continue;
        }
        next += tsc_ms;
        for _ in 0..per_ms {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let p = (rng % pages as u64) as usize;
            gens[p] += 1;
            fill_page(base, p, gens[p]);
        }
        hw::heartbeat_add(vcpu, 1);
    }
}

/// Touches an unmapped address: a #PF the VMM must report.
fn fault() -> ! {
    crate::println!("fault: touching an unmapped address on purpose");
    // SAFETY: deliberately unsound: this address is not mapped, and the
    // resulting #PF ends the VM. It is the test of fault reporting.
    let v = unsafe { read_volatile(0x8_0000_0000u64 as *const u64) };
    hw::exit(v)
}
