//! The content checksum used for end-to-end integrity checks.
//!
//! The guest HTTP server sends every response with an `ETag` header whose
//! value is [`etag_of`] of the body: the **FNV-1a 64-bit** hash of the body
//! bytes, rendered as 16 lowercase hex digits inside double quotes, e.g.
//! `"cbf29ce484222325"` for the empty body.
//!
//! FNV-1a 64: `h = 0xcbf29ce484222325; for each byte b: h ^= b; h *= 0x100000001b3`
//! (wrapping multiplication modulo 2^64).
//!
//! The probe hashes the body incrementally as chunks arrive with [`Fnv1a64`]
//! and compares with [`etag_matches`], which accepts a weak `W/` prefix and
//! upper-case hex.
//!
//! The hash itself lives in the `served-file` crate, with the served content,
//! so that every guest and the probe share one implementation.

pub use served_file::{FNV64_OFFSET, FNV64_PRIME};

/// Incremental FNV-1a 64-bit hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a64 {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Fnv1a64(FNV64_OFFSET)
    }

    /// Feed more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = served_file::fnv1a(self.0, bytes);
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The ETag for everything fed so far (see [`etag_of`]).
    pub fn etag(&self) -> String {
        format_etag(self.0)
    }
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    h.finish()
}

/// Render a hash as a strong ETag: `"` + 16 lowercase hex digits + `"`.
pub fn format_etag(hash: u64) -> String {
    format!("\"{hash:016x}\"")
}

/// The ETag the server sends for a body: `"<fnv1a64 as 16 lowercase hex digits>"`.
///
/// ```
/// assert_eq!(probes::etag::etag_of(b""), "\"cbf29ce484222325\"");
/// assert_eq!(probes::etag::etag_of(b"a"), "\"af63dc4c8601ec8c\"");
/// ```
pub fn etag_of(bytes: &[u8]) -> String {
    format_etag(fnv1a64(bytes))
}

/// Parse an ETag header value produced by [`etag_of`] back into the hash.
///
/// Accepts an optional weak prefix `W/`, surrounding whitespace, and upper-
/// or lower-case hex. Returns `None` for anything else.
pub fn parse_etag(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    if inner.len() != 16 || !inner.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(inner, 16).ok()
}

/// Whether an ETag header value matches the hash of the received body.
/// An unparseable header never matches.
pub fn etag_matches(header: &str, body_hash: u64) -> bool {
    parse_etag(header) == Some(body_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_test_vectors() {
        // Reference vectors from the FNV specification.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(etag_of(b"foobar"), "\"85944171f73967e8\"");
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut h = Fnv1a64::new();
        for c in data.chunks(333) {
            h.update(c);
        }
        assert_eq!(h.finish(), fnv1a64(&data));
        assert_eq!(h.etag(), etag_of(&data));
    }

    #[test]
    fn parse_and_match() {
        let h = fnv1a64(b"foobar");
        assert!(etag_matches("\"85944171f73967e8\"", h));
        assert!(etag_matches("W/\"85944171F73967E8\"", h));
        assert!(etag_matches("  \"85944171f73967e8\" ", h));
        assert!(!etag_matches("\"85944171f73967e9\"", h));
        assert!(!etag_matches("85944171f73967e8", h));
        assert!(!etag_matches("\"85944171f73967e\"", h));
        assert!(!etag_matches("\"+5944171f73967e8\"", h));
        assert!(!etag_matches("", h));
        assert_eq!(parse_etag("\"0000000000000000\""), Some(0));
    }
}
