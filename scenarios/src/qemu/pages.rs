//! Guest RAM dumps and their page digests, for `--verify`: where a
//! `pmemsave` dump goes (memory when the host has room), and a 64-bit
//! XXH3 hash of every 4 KiB page of one, so two machines can compare their
//! copies of the guest by exchanging 8 bytes per page instead of the RAM.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The page size the digests and comparisons use, bytes.
pub const PAGE: usize = 4096;

/// One RAM dump file, removed on drop (also on an error).
pub struct Dump {
    /// Where it is.
    pub path: PathBuf,
}

impl Dump {
    /// A dump of `ram_bytes` named `tag`: in `/dev/shm` (memory) when the
    /// host has memory available for four times that, else in `dir`.
    pub fn new(dir: &Path, ram_bytes: u64, tag: &str) -> Dump {
        let shm = Path::new("/dev/shm");
        let room = shm.is_dir() && mem_available().is_some_and(|free| free > ram_bytes.saturating_mul(4));
        let path = if room {
            shm.join(format!("migbench-{}-{}-{tag}.ram", std::process::id(), results::clock::mono_ns()))
        } else {
            dir.join(format!("{tag}.ram"))
        };
        Dump { path }
    }
}

impl Drop for Dump {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The host's available memory (`MemAvailable` of `/proc/meminfo`), bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// XXH3-64 of every [`PAGE`] of guest RAM, in address order (a short last
/// page is hashed as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageDigests {
    /// One hash per page.
    pub pages: Vec<u64>,
}

impl PageDigests {
    /// Hashes the file at `path` (a `pmemsave` dump).
    pub fn of_file(path: &Path) -> std::io::Result<PageDigests> {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut pages = Vec::new();
        loop {
            let n = read_full(&mut f, &mut buf)?;
            pages.extend(buf[..n].chunks(PAGE).map(xxhash_rust::xxh3::xxh3_64));
            if n < buf.len() {
                return Ok(PageDigests { pages });
            }
        }
    }

    /// Pages that differ from `other` (a length difference counts its
    /// pages as differing), and the guest-physical addresses of the first
    /// eight.
    pub fn compare(&self, other: &PageDigests) -> (u64, Vec<u64>) {
        let mut bad = self.pages.len().abs_diff(other.pages.len()) as u64;
        let mut first = Vec::new();
        for (i, (a, b)) in self.pages.iter().zip(&other.pages).enumerate() {
            if a != b {
                bad += 1;
                if first.len() < 8 {
                    first.push(i as u64 * PAGE as u64);
                }
            }
        }
        (bad, first)
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
pub fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_find_the_changed_and_missing_pages() {
        let d = std::env::temp_dir().join(format!("mbq-pages-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let a = d.join("a");
        let mut x = vec![7u8; 300 * PAGE];
        std::fs::write(&a, &x).unwrap();
        let da = PageDigests::of_file(&a).unwrap();
        assert_eq!(da.pages.len(), 300);
        x[PAGE * 290 + 1] = 0;
        x[5] = 1;
        std::fs::write(&a, &x).unwrap();
        let db = PageDigests::of_file(&a).unwrap();
        assert_eq!(da.compare(&db), (2, vec![0, 290 * PAGE as u64]));
        std::fs::write(&a, &x[..PAGE * 299]).unwrap();
        assert_eq!(da.compare(&PageDigests::of_file(&a).unwrap()).0, 3, "2 changed pages + 1 missing");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
