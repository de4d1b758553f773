//! The page send path and the dirty-bitmap helpers it works with: walk a
//! bitmap (one bit per 4 KiB page), copy each page out of guest RAM, send
//! all-zero pages as a marker only, and batch the rest into checksummed
//! `Pages` frames, paced to a rate limit. Pages the host never populated
//! go first, as one `ZeroMap` bitmap, and are not walked at all.

use super::wire::{pages, FrameWriter, Kind};
use crate::abi::PAGE_SIZE;
use results::clock::mono_ns;
use std::io::Write;
use std::time::Duration;

const PAGE: usize = PAGE_SIZE as usize;

/// Pages set in `map`.
pub fn count(map: &[u64]) -> u64 {
    map.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// ORs `other` into `map` (a dirty log merged with the VMM's own writes).
pub fn merge_into(map: &mut [u64], other: &[u64]) {
    for (a, b) in map.iter_mut().zip(other) {
        *a |= b;
    }
}

/// Whether a page is all zero: an OR over its 64-bit words with no early
/// exit, which the compiler turns into wide vector loads.
pub fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8).fold(0u64, |acc, c| acc | u64::from_ne_bytes(c.try_into().unwrap_or([1; 8]))) == 0
}

/// What one pass sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Pages, zero markers included.
    pub pages: u64,
    /// Of those, zero markers.
    pub zero: u64,
    /// Page data bytes.
    pub bytes: u64,
}

/// Sends pages of guest RAM as `Pages` frames.
pub struct PageSender<W: Write> {
    /// The framed stream.
    pub w: FrameWriter<W>,
    base: *const u8,
    ram_pages: u64,
    entries: Vec<u64>,
    data: Vec<u8>,
    table: Vec<u8>,
    /// Pages known never to have been touched (round 0 only): sent as one
    /// `ZeroMap` frame, without being read or walked. Taken by the next
    /// [`PageSender::send`].
    pub untouched: Option<Vec<u64>>,
    /// When the first `Pages` frame went out (CLOCK_MONOTONIC ns): the end
    /// of the migration's setup.
    pub first_frame_ns: Option<u64>,
}

impl<W: Write> PageSender<W> {
    /// A sender over `ram_pages` pages of guest RAM mapped at `base`.
    ///
    /// # Safety
    /// `base` must point to `ram_pages * 4096` readable bytes that stay
    /// mapped for the sender's life. Others may write them concurrently.
    pub unsafe fn new(w: FrameWriter<W>, base: *const u8, ram_pages: u64) -> Self {
        Self {
            w,
            base,
            ram_pages,
            entries: Vec::with_capacity(pages::BATCH),
            data: Vec::with_capacity(pages::BATCH * PAGE),
            table: Vec::with_capacity(4 + pages::BATCH * 8),
            untouched: None,
            first_frame_ns: None,
        }
    }

    fn flush_batch(&mut self) -> std::io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        pages::encode_table(&self.entries, &mut self.table);
        self.w.send_parts(Kind::Pages, &[&self.table, &self.data])?;
        self.first_frame_ns.get_or_insert_with(mono_ns);
        self.entries.clear();
        self.data.clear();
        Ok(())
    }

    /// Sends the pages set in `map`, paced to `rate_mbps` of page data.
    pub fn send(&mut self, map: &[u64], rate_mbps: Option<f64>) -> std::io::Result<Sent> {
        let mut sent = Sent::default();
        let t0 = mono_ns();
        // The untouched pages of this pass go as one bitmap and are not
        // walked below.
        let untouched = self.untouched.take().map(|mut u| {
            u.truncate(map.len());
            u.iter_mut().zip(map).for_each(|(u, m)| *u &= m);
            u
        });
        if let Some(u) = &untouched {
            pages::encode_zero_map(u, &mut self.table);
            self.w.send_parts(Kind::ZeroMap, &[&self.table])?;
            self.first_frame_ns.get_or_insert_with(mono_ns);
            let n = count(u);
            sent.pages += n;
            sent.zero += n;
        }
        for (wi, &word) in map.iter().enumerate() {
            let mut w = word & !untouched.as_ref().and_then(|u| u.get(wi)).copied().unwrap_or(0);
            while w != 0 {
                let pfn = wi as u64 * 64 + u64::from(w.trailing_zeros());
                w &= w - 1;
                if pfn >= self.ram_pages {
                    break;
                }
                // Copy once, straight into the batch; drop it again if it
                // turns out to be all zero.
                let at = self.data.len();
                self.data.reserve(PAGE);
                // SAFETY: pfn < ram_pages, so the page lies inside the
                // mapping `new` was given, and `reserve` made room for it
                // past `at`; `set_len` covers exactly the bytes just copied.
                // The guest may write the page concurrently; the copy may
                // then be torn, but the page's dirty tracking was re-armed
                // before this copy, so it is sent again.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.base.add(pfn as usize * PAGE),
                        self.data.as_mut_ptr().add(at),
                        PAGE,
                    );
                    self.data.set_len(at + PAGE);
                }
                let zero = is_zero(&self.data[at..]);
                if zero {
                    self.data.truncate(at);
                }
                sent.pages += 1;
                if zero {
                    sent.zero += 1;
                    self.entries.push(pfn | pages::ZERO_PAGE);
                } else {
                    sent.bytes += PAGE as u64;
                    self.entries.push(pfn);
                }
                if self.entries.len() == pages::BATCH {
                    self.flush_batch()?;
                    if let Some(rate) = rate_mbps {
                        let due_ns = (sent.bytes as f64 * 8.0 / (rate * 1e6) * 1e9) as u64;
                        let now = mono_ns() - t0;
                        if due_ns > now {
                            std::thread::sleep(Duration::from_nanos(due_ns - now));
                        }
                    }
                }
            }
        }
        self.flush_batch()?;
        self.w.flush()?;
        Ok(sent)
    }
}

/// Pages that the host has never populated, which are therefore zero. Only
/// trusted when the host has no swap (a swapped-out page is not resident
/// either). `None` when that cannot be known.
pub fn untouched_pages(base: *const u8, len: usize) -> Option<Vec<u64>> {
    let swaps = std::fs::read_to_string("/proc/swaps").ok()?;
    if swaps.lines().count() > 1 {
        return None;
    }
    let pages = len / PAGE;
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore only reads the page tables of `base..base+len` (the
    // page-aligned guest mapping) and writes one byte per page into `vec`,
    // which has room for all of them.
    let rc = unsafe { libc::mincore(base as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    let mut map = vec![0u64; pages.div_ceil(64)];
    for (i, v) in vec.iter().enumerate() {
        if v & 1 == 0 {
            map[i / 64] |= 1 << (i % 64);
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::wire::FrameReader;

    #[test]
    fn zero_pages_go_as_markers_and_data_round_trips() {
        let mut ram = vec![0u8; 8 * PAGE];
        ram[3 * PAGE + 5] = 7;
        ram[6 * PAGE..7 * PAGE].fill(0xaa);
        let mut out = Vec::new();
        // SAFETY: `ram` outlives the sender.
        let mut s = unsafe { PageSender::new(FrameWriter::new(&mut out), ram.as_ptr(), 8) };
        let sent = s.send(&[0b0100_1001], None).unwrap();
        assert_eq!(sent, Sent { pages: 3, zero: 1, bytes: 2 * PAGE as u64 });
        drop(s);
        let mut r = FrameReader::new(&out[..]);
        let (kind, payload) = r.recv().unwrap();
        assert_eq!(kind, Kind::Pages);
        let (entries, data) = pages::decode(payload, 8).unwrap();
        assert_eq!(entries, vec![pages::ZERO_PAGE, 3, 6]);
        assert_eq!(&data[..PAGE], &ram[3 * PAGE..4 * PAGE]);
        assert_eq!(&data[PAGE..], &ram[6 * PAGE..7 * PAGE]);
    }

    #[test]
    fn untouched_pages_go_as_one_zero_map_and_are_not_walked() {
        let mut ram = vec![0u8; 8 * PAGE];
        ram[PAGE] = 5;
        ram[2 * PAGE] = 1;
        // Page 2 is claimed untouched but not in the map: left out; page 3
        // is untouched and in it: in the zero map, its (non-zero) bytes
        // never read.
        ram[3 * PAGE] = 9;
        let mut out = Vec::new();
        // SAFETY: `ram` outlives the sender.
        let mut s = unsafe { PageSender::new(FrameWriter::new(&mut out), ram.as_ptr(), 8) };
        s.untouched = Some(vec![0b1100]);
        let sent = s.send(&[0b1011], None).unwrap();
        assert_eq!(sent, Sent { pages: 3, zero: 2, bytes: PAGE as u64 });
        assert!(s.untouched.is_none(), "round 0 only");
        drop(s);
        let mut r = FrameReader::new(&out[..]);
        let (kind, payload) = r.recv().unwrap();
        assert_eq!(kind, Kind::ZeroMap);
        assert_eq!(pages::decode_zero_map(payload, 8).unwrap(), vec![0b1000]);
        let (kind, payload) = r.recv().unwrap();
        assert_eq!(kind, Kind::Pages);
        assert_eq!(pages::decode(payload, 8).unwrap().0, vec![pages::ZERO_PAGE, 1]);
    }

    #[test]
    fn bitmap_helpers() {
        let mut a = vec![0b1010u64, 0];
        merge_into(&mut a, &[0b0101, 1 << 63]);
        assert_eq!(count(&a), 5);
        assert_eq!(a, vec![0b1111, 1 << 63]);
    }
}
