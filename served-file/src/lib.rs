//! The file that every guest's HTTP server serves at `/file`, and the
//! checksum the probe verifies it with. `no_std` and dependency-free, so the
//! freestanding built-in guest, the Linux guest agent and the host-side probe
//! all use this one copy.
//!
//! - **Content:** byte `i` of the file is byte `i % 8` (little-endian) of
//!   word `i / 8`, where word `w` is a splitmix64-style mix of `w`
//!   ([`fill`]). Any offset can be produced without the bytes before it.
//! - **Checksum:** FNV-1a 64 ([`fnv1a`]): `h = 0xcbf29ce484222325; for each
//!   byte b: h ^= b; h *= 0x100000001b3` (wrapping). The `ETag` of a response
//!   is this hash of its body as 16 lowercase hex digits in double quotes.
#![no_std]

/// FNV-1a 64-bit offset basis.
pub const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `h` (start with [`FNV64_OFFSET`]).
pub fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    let mut hasher = fnv::FnvHasher::with_key(h);
    core::hash::Hasher::write(&mut hasher, bytes);
    core::hash::Hasher::finish(&hasher)
}

/// FNV-1a 64 of `bytes`, from the offset basis.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a(FNV64_OFFSET, bytes)
}

/// Word `w` of the served file: splitmix64 of the word index.
fn content_word(w: u64) -> u64 {
    let mut z = w.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0x6d69_6762_656e_6368 | 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the file's bytes starting at offset `off`.
pub fn fill(buf: &mut [u8], off: u64) {
    let mut i = 0;
    let mut pos = off;
    // Unaligned head.
    while i < buf.len() && !pos.is_multiple_of(8) {
        buf[i] = content_word(pos / 8).to_le_bytes()[(pos % 8) as usize];
        i += 1;
        pos += 1;
    }
    let mut chunks = buf[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&content_word(pos / 8).to_le_bytes());
        pos += 8;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = content_word(pos / 8).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

/// The FNV-1a 64 hash of the whole file of `len` bytes.
pub fn file_hash(len: u64) -> u64 {
    let mut h = FNV64_OFFSET;
    let mut buf = [0u8; 4096];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        fill(&mut buf[..n], off);
        h = fnv1a(h, &buf[..n]);
        off += n as u64;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        assert_eq!(fnv1a(FNV64_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV64_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV64_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn fill_at_any_offset_matches_the_whole() {
        let mut whole = [0u8; 1000];
        fill(&mut whole, 0);
        for off in [0usize, 1, 7, 8, 13, 500, 999] {
            let mut part = [0u8; 37];
            let n = part.len().min(whole.len() - off);
            fill(&mut part[..n], off as u64);
            assert_eq!(&part[..n], &whole[off..off + n], "offset {off}");
        }
        assert_eq!(file_hash(1000), fnv1a(FNV64_OFFSET, &whole));
        assert_ne!(whole[..8], whole[8..16]);
    }
}
