//! The measurement kernels shared by the host and the guest's ring 3.
//!
//! This module owns the inner loops only: memory read, write and copy
//! bandwidth (lmbench `bw_mem` rd/wr/cp), the pointer-chase ring and walk for
//! memory latency (lmbench `lat_mem_rd`), and a null loop for loop overhead.
//! It is pure `core`: no allocation, no I/O, no timing, and no panics on any
//! input (malformed input gives a meaningless result, never a panic). The
//! caller owns every buffer, and times the calls with whatever clock it has.
//!
//! Differences from lmbench, on purpose:
//! * `read_sum` reads every 64-bit word (lmbench `rd` reads one 4-byte int
//!   per 16 bytes). Both fetch every cache line, so the bandwidth is the same
//!   kind of number; ours also lets a test check the sum exactly.
//! * `write_fill` and `copy` store one 64-bit word at a time with volatile
//!   stores, so the compiler can neither drop them nor turn them into a call
//!   to `memset`/`memcpy` (whose host and guest implementations differ, and
//!   which may use non-temporal stores). lmbench's C loops store ints one by
//!   one too.
//! * The latency ring is a single random cycle through all the cache lines
//!   of the buffer (Sattolo's shuffle with a fixed-seed SplitMix64), so
//!   the hardware prefetcher cannot follow it. This is closest to lmbench 3's
//!   randomised `lat_mem_rd -t`; lmbench's default walks backwards at a fixed
//!   stride, which modern prefetchers hide. Beyond the TLB reach the random
//!   ring also pays TLB misses, as lmbench's random mode does.

use core::hint::black_box;

/// Default stride of the pointer-chase ring, in bytes (one cache line).
pub const DEFAULT_STRIDE_BYTES: usize = 64;

/// Default seed of the deterministic shuffle of the ring.
pub const DEFAULT_SEED: u64 = 0x6d69_6762_656e_6368; // "migbench"

/// Sum of every 64-bit word of `buf` (wrapping), with 8 independent
/// accumulators so the loop is bound by memory, not by the add chain.
///
/// Bandwidth = `buf.len() * 8` bytes per call. The sum is returned so that
/// the reads cannot be elided; compare it with [`reference_sum`] in tests.
#[inline(never)]
pub fn read_sum(buf: &[u64]) -> u64 {
    let buf = black_box(buf);
    let mut acc = [0u64; 8];
    let mut chunks = buf.chunks_exact(8);
    for c in &mut chunks {
        acc[0] = acc[0].wrapping_add(c[0]);
        acc[1] = acc[1].wrapping_add(c[1]);
        acc[2] = acc[2].wrapping_add(c[2]);
        acc[3] = acc[3].wrapping_add(c[3]);
        acc[4] = acc[4].wrapping_add(c[4]);
        acc[5] = acc[5].wrapping_add(c[5]);
        acc[6] = acc[6].wrapping_add(c[6]);
        acc[7] = acc[7].wrapping_add(c[7]);
    }
    let mut sum = 0u64;
    for w in chunks.remainder() {
        sum = sum.wrapping_add(*w);
    }
    for a in acc {
        sum = sum.wrapping_add(a);
    }
    black_box(sum)
}

/// The plain one-accumulator wrapping sum, for checking [`read_sum`].
pub fn reference_sum(buf: &[u64]) -> u64 {
    buf.iter().fold(0u64, |s, w| s.wrapping_add(*w))
}

/// Store `value` into every 64-bit word of `buf` (lmbench `wr`).
///
/// Bandwidth = `buf.len() * 8` bytes per call. Volatile stores, unrolled by
/// eight, so the compiler keeps every store and makes no `memset` of it.
#[inline(never)]
pub fn write_fill(buf: &mut [u64], value: u64) {
    let value = black_box(value);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        for w in c.iter_mut() {
            // SAFETY: `w` is a unique, aligned, live reference into `buf`.
            unsafe { core::ptr::write_volatile(w, value) };
        }
    }
    for w in chunks.into_remainder() {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(w, value) };
    }
}

/// Copy `src` into `dst` word by word (lmbench `cp`); copies
/// `min(src.len(), dst.len())` words and returns that count.
///
/// Bandwidth is conventionally counted as the bytes copied (lmbench counts
/// the copy size, not read + write traffic). Volatile stores keep the
/// compiler from turning the loop into a `memcpy` call.
#[inline(never)]
pub fn copy(dst: &mut [u64], src: &[u64]) -> usize {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dc, sc) in (&mut d).zip(&mut s) {
        for (dw, sw) in dc.iter_mut().zip(sc) {
            // SAFETY: `dw` is a unique, aligned, live reference into `dst`.
            unsafe { core::ptr::write_volatile(dw, *sw) };
        }
    }
    for (dw, sw) in d.into_remainder().iter_mut().zip(s.remainder()) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(dw, *sw) };
    }
    n
}

/// A loop of `n` iterations that does nothing but keep itself alive; the
/// harness times it to learn the per-iteration loop overhead. Returns `n`.
#[inline(never)]
pub fn null_loop(n: u64) -> u64 {
    let mut i = 0u64;
    while i < black_box(n) {
        i = black_box(i) + 1;
    }
    i
}

/// SplitMix64: a small, fixed, well-mixed generator (no_std, no state but
/// the seed), used only to shuffle the ring deterministically.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`), by rejection so it is unbiased.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound <= 1 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }
}

/// Why a ring could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The stride is zero or not a multiple of the word size.
    BadStride,
    /// The buffer holds fewer than two strides.
    TooSmall,
}

/// How the lines of a ring follow each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingOrder {
    /// Line k points to line k+1, the last to the first (prefetcher-friendly).
    Sequential,
    /// One random cycle through all lines, shuffled with the given seed.
    Shuffled(u64),
}

/// A pointer-chase ring built in a caller's buffer; see [`build_ring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Word index of the first element (where [`chase`] should start).
    pub start: usize,
    /// Number of elements (cache lines) in the ring.
    pub lines: usize,
    /// Distance between elements, in words.
    pub stride_words: usize,
}

/// Build a pointer-chase ring in `buf`: the first word of each
/// `stride_bytes`-sized line holds the word index of the next line's first
/// word, and following the indices from [`Ring::start`] visits every line
/// exactly once per lap. Only the first word of each line is written.
///
/// With [`RingOrder::Shuffled`] the lap order is a uniformly random single
/// cycle through the lines (Sattolo's algorithm driven by SplitMix64 with the
/// given seed), so the same seed and size give the same ring on the host and
/// in the guest.
pub fn build_ring(buf: &mut [usize], stride_bytes: usize, order: RingOrder) -> Result<Ring, RingError> {
    let word = core::mem::size_of::<usize>();
    if stride_bytes == 0 || !stride_bytes.is_multiple_of(word) {
        return Err(RingError::BadStride);
    }
    let stride_words = stride_bytes / word;
    let lines = buf.len() / stride_words;
    if lines < 2 {
        return Err(RingError::TooSmall);
    }
    match order {
        RingOrder::Sequential => {
            for k in 0..lines {
                buf[k * stride_words] = ((k + 1) % lines) * stride_words;
            }
            Ok(Ring { start: 0, lines, stride_words })
        }
        RingOrder::Shuffled(seed) => {
            // Sattolo's algorithm (the Fisher-Yates variant whose result is
            // a single cycle): start from the identity, and for i from the
            // last line down to 1 swap line i's entry with that of a line
            // j < i. Entry k then names the line after line k.
            for k in 0..lines {
                buf[k * stride_words] = k;
            }
            let mut rng = SplitMix64::new(seed);
            for i in (1..lines).rev() {
                let j = rng.below(i as u64) as usize;
                buf.swap(i * stride_words, j * stride_words);
            }
            for k in 0..lines {
                buf[k * stride_words] *= stride_words;
            }
            Ok(Ring { start: 0, lines, stride_words })
        }
    }
}

/// Follow the ring `n` times from `start` and return the index reached.
/// Each load depends on the previous one, so the time per step is the load
/// latency. An index outside `buf` (a malformed ring) stops the walk and
/// returns `usize::MAX` instead of panicking.
#[inline(never)]
pub fn chase(buf: &[usize], start: usize, n: u64) -> usize {
    let buf = black_box(buf);
    let mut i = start;
    let mut left = n;
    macro_rules! step {
        () => {
            match buf.get(i) {
                Some(&next) => i = next,
                None => return usize::MAX,
            }
        };
    }
    while left >= 16 {
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        step!();
        left -= 16;
    }
    while left > 0 {
        step!();
        left -= 1;
    }
    black_box(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ring(buf: &[usize], ring: Ring) {
        // One lap visits every line head exactly once and returns to start.
        let mut seen = [false; 4096];
        let mut i = ring.start;
        for _ in 0..ring.lines {
            assert_eq!(i % ring.stride_words, 0, "link not at a line head");
            let line = i / ring.stride_words;
            assert!(line < ring.lines);
            assert!(!seen[line], "line {line} visited twice in one lap");
            seen[line] = true;
            i = chase(buf, i, 1);
        }
        assert_eq!(i, ring.start, "lap did not close");
        assert!(seen[..ring.lines].iter().all(|s| *s));
        // chase of a whole number of laps returns to start, unrolled path too.
        assert_eq!(chase(buf, ring.start, ring.lines as u64 * 17), ring.start);
    }

    #[test]
    fn shuffled_ring_visits_every_line_once_per_lap() {
        for &(words, stride) in &[(8 * 2, 64), (8 * 64, 64), (8 * 1000, 64), (4 * 333, 32), (2 * 77, 16)] {
            let mut buf = [0usize; 8 * 1000];
            let buf = &mut buf[..words];
            let ring = build_ring(buf, stride, RingOrder::Shuffled(DEFAULT_SEED)).unwrap();
            assert_eq!(ring.lines, words / (stride / core::mem::size_of::<usize>()));
            check_ring(buf, ring);
        }
    }

    #[test]
    fn one_word_stride_ring_is_a_single_cycle() {
        let mut buf = [0usize; 500];
        let w = core::mem::size_of::<usize>();
        let ring = build_ring(&mut buf, w, RingOrder::Shuffled(7)).unwrap();
        check_ring(&buf, ring);
    }

    #[test]
    fn sequential_ring_and_shuffle_is_not_sequential() {
        let mut a = [0usize; 8 * 256];
        let ring = build_ring(&mut a, 64, RingOrder::Sequential).unwrap();
        check_ring(&a, ring);
        assert_eq!(chase(&a, 0, 1), 8);
        let mut b = [0usize; 8 * 256];
        let ring = build_ring(&mut b, 64, RingOrder::Shuffled(1)).unwrap();
        check_ring(&b, ring);
        assert_ne!(a, b);
        // Deterministic: the same seed gives the same ring.
        let mut c = [0usize; 8 * 256];
        build_ring(&mut c, 64, RingOrder::Shuffled(1)).unwrap();
        assert_eq!(b, c);
    }

    #[test]
    fn ring_errors_and_malformed_chase() {
        let mut buf = [0usize; 16];
        assert_eq!(build_ring(&mut buf, 0, RingOrder::Sequential), Err(RingError::BadStride));
        assert_eq!(build_ring(&mut buf, 3, RingOrder::Sequential), Err(RingError::BadStride));
        assert_eq!(build_ring(&mut buf, 128, RingOrder::Sequential), Err(RingError::TooSmall));
        let bad = [1usize, 100, 0, 0, 0, 0];
        assert_eq!(chase(&bad, 0, 10), usize::MAX);
        assert_eq!(chase(&bad, 0, 0), 0);
    }

    #[test]
    fn read_sum_matches_reference() {
        let mut buf = [0u64; 1003];
        let mut rng = SplitMix64::new(3);
        for w in buf.iter_mut() {
            *w = rng.next_u64();
        }
        for len in [0, 1, 7, 8, 9, 64, 1003] {
            assert_eq!(read_sum(&buf[..len]), reference_sum(&buf[..len]));
        }
        let ones = [1u64; 1003];
        assert_eq!(read_sum(&ones), 1003);
    }

    #[test]
    fn write_fill_touches_every_word() {
        for len in [0usize, 1, 8, 13, 1000] {
            let mut buf = [0u64; 1000];
            write_fill(&mut buf[..len], 0xabcd);
            assert!(buf[..len].iter().all(|w| *w == 0xabcd));
            assert!(buf[len..].iter().all(|w| *w == 0));
            assert_eq!(read_sum(&buf), 0xabcd * len as u64);
        }
    }

    #[test]
    fn copy_copies_every_word() {
        let mut src = [0u64; 777];
        for (i, w) in src.iter_mut().enumerate() {
            *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        let mut dst = [0u64; 777];
        assert_eq!(copy(&mut dst, &src), 777);
        assert_eq!(dst, src);
        assert_eq!(read_sum(&dst), reference_sum(&src));
        let mut short = [0u64; 10];
        assert_eq!(copy(&mut short, &src), 10);
        assert_eq!(short[..], src[..10]);
    }

    #[test]
    fn null_loop_runs_n_times() {
        assert_eq!(null_loop(0), 0);
        assert_eq!(null_loop(12345), 12345);
    }

    #[test]
    fn below_is_in_range() {
        let mut r = SplitMix64::new(9);
        for b in 1..200u64 {
            assert!(r.below(b) < b);
        }
        assert_eq!(r.below(0), 0);
    }
}
