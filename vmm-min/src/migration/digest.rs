//! A digest of guest RAM for `--verify`: XXH3-64 of every 2 MiB chunk, so a
//! mismatch names where it is.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Bytes hashed per digest entry.
pub const CHUNK: usize = 2 << 20;

/// Per-chunk hashes of guest RAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// One hash per [`CHUNK`] bytes.
    pub chunks: Vec<u64>,
}

impl Digest {
    /// Hashes `ram`, splitting the work over up to `threads` threads.
    pub fn of(ram: &[u8], threads: usize) -> Digest {
        let parts: Vec<&[u8]> = ram.chunks(CHUNK).collect();
        let per = parts.len().div_ceil(threads.max(1)).max(1);
        let chunks = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .chunks(per)
                .map(|group| s.spawn(move || group.iter().map(|c| xxh3_64(c)).collect::<Vec<u64>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        Digest { chunks }
    }

    /// The first chunk that differs, as a byte offset, if any.
    pub fn first_mismatch(&self, other: &Digest) -> Option<u64> {
        if self.chunks.len() != other.chunks.len() {
            return Some(0);
        }
        self.chunks.iter().zip(&other.chunks).position(|(a, b)| a != b).map(|i| (i * CHUNK) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_finds_the_changed_chunk() {
        let mut ram = vec![0u8; 4 * CHUNK];
        let a = Digest::of(&ram, 2);
        assert_eq!(a.chunks.len(), 4);
        assert_eq!(a, Digest::of(&ram, 1));
        ram[2 * CHUNK + 17] = 1;
        assert_eq!(a.first_mismatch(&Digest::of(&ram, 3)), Some(2 * CHUNK as u64));
    }
}
