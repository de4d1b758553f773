//! The memory-verifying workload: tags every 4 KiB page of a region, checks
//! each tag on the next pass, and counts the pages that changed behind its
//! back (see `linux_guest::api::MemcheckReport`).

use linux_guest::api::{MemcheckReport, Mismatch};
use std::sync::Mutex;
use std::time::Duration;

const PAGE_WORDS: usize = 4096 / 8;
/// Pause between passes, so the checker leaves the (emulated) CPU to the
/// HTTP server part of the time.
const PASS_PAUSE: Duration = Duration::from_millis(20);

/// The tag of word `i` of page `page` in pass `pass`: unique per word and
/// per pass, so a stale, moved or zeroed page never matches.
fn tag(pass: u64, page: u64, i: usize) -> u64 {
    (pass << 40) ^ (page << 9) ^ (i as u64) ^ 0x6d62_0000_0000_0000
}

/// The checker's region and report.
pub struct Memcheck {
    bytes: u64,
    report: Mutex<MemcheckReport>,
}

impl Memcheck {
    /// A checker over `bytes` bytes (rounded down to whole pages).
    pub fn new(bytes: u64) -> Memcheck {
        let pages = bytes / 4096;
        Memcheck {
            bytes,
            report: Mutex::new(MemcheckReport {
                pages,
                passes: 0,
                pages_checked: 0,
                mismatches: 0,
                first_mismatch: None,
            }),
        }
    }

    /// The report so far.
    pub fn report(&self) -> MemcheckReport {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs passes forever.
    pub fn run(&self) {
        let mut region = vec![0u64; (self.bytes / 4096) as usize * PAGE_WORDS];
        for pass in 0u64.. {
            let (checked, bad, first) = check_and_tag(&mut region, pass);
            {
                let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                r.passes = pass + 1;
                r.pages_checked += checked;
                r.mismatches += bad;
                if r.first_mismatch.is_none() {
                    r.first_mismatch = first;
                }
            }
            std::thread::sleep(PASS_PAUSE);
        }
    }
}

/// One pass over `region`: checks the tags of pass `pass - 1` (unless this
/// is pass 0) and writes those of `pass`. Returns pages checked, pages that
/// did not match, and the first mismatch.
fn check_and_tag(region: &mut [u64], pass: u64) -> (u64, u64, Option<Mismatch>) {
    let (mut checked, mut bad, mut first) = (0u64, 0u64, None);
    for (p, page) in region.chunks_exact_mut(PAGE_WORDS).enumerate() {
        let p = p as u64;
        if pass > 0 {
            checked += 1;
            if let Some((i, &found)) = page.iter().enumerate().find(|&(i, &w)| w != tag(pass - 1, p, i)) {
                bad += 1;
                first.get_or_insert(Mismatch { page: p, pass, expected: tag(pass - 1, p, i), found });
            }
        }
        for (i, w) in page.iter_mut().enumerate() {
            *w = tag(pass, p, i);
        }
    }
    (checked, bad, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_page_is_found_on_the_next_pass() {
        let mut region = vec![0u64; 8 * PAGE_WORDS];
        assert_eq!(check_and_tag(&mut region, 0), (0, 0, None));
        assert_eq!(check_and_tag(&mut region, 1), (8, 0, None));
        region[5 * PAGE_WORDS + 7] ^= 1;
        region[6 * PAGE_WORDS..7 * PAGE_WORDS].fill(0);
        let (checked, bad, first) = check_and_tag(&mut region, 2);
        assert_eq!((checked, bad), (8, 2));
        let m = first.unwrap();
        assert_eq!((m.page, m.pass, m.expected ^ m.found), (5, 2, 1));
        assert_eq!(check_and_tag(&mut region, 3).1, 0, "the next pass starts clean");
    }

    #[test]
    fn tags_differ_between_passes_pages_and_words() {
        assert_ne!(tag(0, 0, 0), tag(1, 0, 0));
        assert_ne!(tag(0, 0, 0), tag(0, 1, 0));
        assert_ne!(tag(0, 0, 0), tag(0, 0, 1));
        assert_ne!(tag(0, 0, 0), 0);
    }
}
