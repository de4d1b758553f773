//! The migration stream's framing. Ours, versioned, length-prefixed, with a
//! CRC-32 over each frame:
//!
//! ```text
//! magic u32 "MGB1" | version u16 | kind u8 | reserved u8 | seq u32 | length u32 | crc32 u32 | payload
//! ```
//!
//! All integers are little-endian. `seq` counts the frames of one direction
//! from 0, so a dropped or repeated frame is caught; `reserved` must be 0. The CRC covers kind,
//! seq, length and payload. A reader rejects a bad magic, another version,
//! an unknown kind, a frame out of sequence, a length over
//! [`MAX_PAYLOAD`], a checksum mismatch and a truncated frame, each with
//! its own error, and never trusts a length before checking it.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};

/// Frame magic, "MGB1" read as little-endian bytes.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MGB1");
/// Wire version; a destination refuses any other.
pub const VERSION: u16 = 4;
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 8 << 20;
const HEADER: usize = 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Source → destination: versions and the VM's configuration (JSON).
    Hello = 1,
    /// Destination → source: accepted, or refused with a reason (JSON).
    HelloReply = 2,
    /// Source → destination: a batch of pages (binary, see `pages`).
    Pages = 3,
    /// Source → destination: vCPU, VM and device state (JSON).
    State = 4,
    /// Source → destination: digest of guest RAM (JSON).
    Digest = 5,
    /// Source → destination: everything is sent; check and restore (JSON).
    Complete = 6,
    /// Destination → source: the VM is complete and restored, paused (JSON).
    Ready = 7,
    /// Either way: the sender gives up, with a reason (JSON).
    Abort = 8,
    /// Source → destination: run the VM; the source will not (JSON).
    Commit = 9,
    /// Destination → source: the guest runs here (JSON).
    Started = 10,
    /// Source → destination: pages known to be zero, as one bitmap over
    /// the guest's RAM (binary, see [`pages::decode_zero_map`]); round 0
    /// sends the pages the host never populated this way instead of a
    /// marker each.
    ZeroMap = 11,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::HelloReply,
            3 => Kind::Pages,
            4 => Kind::State,
            5 => Kind::Digest,
            6 => Kind::Complete,
            7 => Kind::Ready,
            8 => Kind::Abort,
            9 => Kind::Commit,
            10 => Kind::Started,
            11 => Kind::ZeroMap,
            _ => return None,
        })
    }
}

/// A malformed or broken stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("migration stream I/O: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a frame.
    #[error("migration stream truncated: {0}")]
    Truncated(&'static str),
    /// Not a migbench stream.
    #[error("not a migbench migration stream (bad magic {0:#010x})")]
    BadMagic(u32),
    /// Another wire version.
    #[error("migration stream version {0}, this VMM speaks {VERSION}")]
    BadVersion(u16),
    /// An unknown frame kind.
    #[error("unknown migration frame kind {0}")]
    UnknownKind(u8),
    /// A frame longer than allowed.
    #[error("migration frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The checksum does not match: corrupted in transit.
    #[error("migration frame checksum mismatch (kind {kind}, {len} bytes): stream corrupted")]
    Checksum {
        /// Frame kind byte.
        kind: u8,
        /// Payload length.
        len: usize,
    },
    /// A frame whose content does not parse.
    /// The peer sent an Abort frame instead of the one expected.
    #[error("the peer aborted: {}", super::protocol::escape(.0))]
    Aborted(String),
    /// A frame came out of order: one was lost or repeated.
    #[error("migration frame {got} arrived where frame {expected} was due: a frame was lost or repeated")]
    Sequence {
        /// The frame number due.
        expected: u32,
        /// The one that came.
        got: u32,
    },
    #[error("malformed migration frame: {0}")]
    Malformed(String),
}

fn crc(kind: u8, seq: u32, len: u32, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Writes frames, counting bytes.
pub struct FrameWriter<W: Write> {
    w: W,
    bytes: u64,
    seq: u32,
}

impl<W: Write> FrameWriter<W> {
    /// Wraps a stream.
    pub fn new(w: W) -> Self {
        Self { w, bytes: 0, seq: 0 }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Bytes written so far, headers included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one frame whose payload is the concatenation of `parts`.
    pub fn send_parts(&mut self, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {len} bytes too large")));
        }
        let len = len as u32;
        let mut hdr = [0u8; HEADER];
        hdr[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        hdr[4..6].copy_from_slice(&VERSION.to_le_bytes());
        hdr[6] = kind as u8;
        hdr[8..12].copy_from_slice(&self.seq.to_le_bytes());
        hdr[12..16].copy_from_slice(&len.to_le_bytes());
        hdr[16..20].copy_from_slice(&crc(kind as u8, self.seq, len, parts).to_le_bytes());
        self.w.write_all(&hdr)?;
        for p in parts {
            self.w.write_all(p)?;
        }
        self.bytes += (HEADER + len as usize) as u64;
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    /// Writes one frame with a JSON payload.
    pub fn send_json<T: Serialize>(&mut self, kind: Kind, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.send_parts(kind, &[&bytes])
    }

    /// Flushes buffered frames.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Reads and checks frames.
pub struct FrameReader<R: Read> {
    r: R,
    buf: Vec<u8>,
    seq: u32,
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<(), WireError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Truncated(what),
        _ => WireError::Io(e),
    })
}

impl<R: Read> FrameReader<R> {
    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.r
    }

    /// Wraps a stream.
    pub fn new(r: R) -> Self {
        Self { r, buf: Vec::new(), seq: 0 }
    }

    /// Reads the next frame; the payload is valid until the next call.
    pub fn recv(&mut self) -> Result<(Kind, &[u8]), WireError> {
        let mut hdr = [0u8; HEADER];
        read_exact_or(&mut self.r, &mut hdr, "in a frame header")?;
        let magic = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = u16::from_le_bytes([hdr[4], hdr[5]]);
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let kind = Kind::from_u8(hdr[6]).ok_or(WireError::UnknownKind(hdr[6]))?;
        if hdr[7] != 0 {
            return Err(WireError::Malformed(format!("reserved header byte is {:#04x}, not 0", hdr[7])));
        }
        let seq = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        let len = u32::from_le_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        if len as usize > MAX_PAYLOAD {
            return Err(WireError::TooLarge(len as usize));
        }
        let sum = u32::from_le_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        self.buf.resize(len as usize, 0);
        read_exact_or(&mut self.r, &mut self.buf, "in a frame payload")?;
        if crc(hdr[6], seq, len, &[&self.buf]) != sum {
            return Err(WireError::Checksum { kind: hdr[6], len: len as usize });
        }
        if seq != self.seq {
            return Err(WireError::Sequence { expected: self.seq, got: seq });
        }
        self.seq = self.seq.wrapping_add(1);
        Ok((kind, &self.buf))
    }

    /// Reads the next frame, which must be `want`, and parses its JSON.
    pub fn recv_json<T: DeserializeOwned>(&mut self, want: Kind) -> Result<T, WireError> {
        let (kind, payload) = self.recv()?;
        if kind == Kind::Abort && want != Kind::Abort {
            let abort: super::protocol::Abort = parse_json(payload, Kind::Abort)?;
            return Err(WireError::Aborted(abort.reason));
        }
        if kind != want {
            return Err(WireError::Malformed(format!("expected a {want:?} frame, got {kind:?}")));
        }
        parse_json(payload, want)
    }
}

/// Parses a JSON frame payload.
pub fn parse_json<T: DeserializeOwned>(payload: &[u8], kind: Kind) -> Result<T, WireError> {
    serde_json::from_slice(payload).map_err(|e| WireError::Malformed(format!("{kind:?} frame: {e}")))
}

/// Page batches: `count u32`, then `count` entries of `u64` (page frame
/// number, with [`ZERO_PAGE`] set for an all-zero page), then 4 KiB of data
/// for each entry without the flag, in order.
pub mod pages {
    use super::WireError;

    /// Set in an entry for a page that is all zeroes (no data follows).
    pub const ZERO_PAGE: u64 = 1 << 63;
    /// Pages per batch.
    pub const BATCH: usize = 256;

    /// Encodes a batch's entry table (`count u32 | entry u64 ...`) into
    /// `table`; the data of the non-zero pages follows it in the frame, in
    /// entry order. [`decode`] is its inverse.
    pub fn encode_table(entries: &[u64], table: &mut Vec<u8>) {
        table.clear();
        table.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            table.extend_from_slice(&e.to_le_bytes());
        }
    }

    /// Decodes a batch, checking every entry against `ram_pages` and the
    /// payload's length. Returns the entries and the data area.
    pub fn decode(payload: &[u8], ram_pages: u64) -> Result<(Vec<u64>, &[u8]), WireError> {
        let bad = |m: String| WireError::Malformed(format!("page batch: {m}"));
        let count = payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("shorter than its count".into()))?;
        if count > BATCH * 64 {
            return Err(bad(format!("{count} entries is too many")));
        }
        let table_end = 4 + count * 8;
        let table = payload.get(4..table_end).ok_or_else(|| bad("shorter than its entry table".into()))?;
        let entries: Vec<u64> =
            table.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        let mut data_pages = 0usize;
        for &e in &entries {
            let pfn = e & !ZERO_PAGE;
            if pfn >= ram_pages {
                return Err(bad(format!("page {pfn:#x} is outside the guest's {ram_pages} pages")));
            }
            if e & ZERO_PAGE == 0 {
                data_pages += 1;
            }
        }
        let data = &payload[table_end..];
        if data.len() != data_pages * 4096 {
            return Err(bad(format!("{} data bytes for {data_pages} pages", data.len())));
        }
        Ok((entries, data))
    }

    /// Encodes a zero map (one bit per page, `u64` words, little-endian).
    pub fn encode_zero_map(map: &[u64], out: &mut Vec<u8>) {
        out.clear();
        for w in map {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes a zero map: exactly one bit per page of a guest of
    /// `ram_pages` pages, in whole words, with no bit set past the last
    /// page. [`encode_zero_map`] is its inverse.
    pub fn decode_zero_map(payload: &[u8], ram_pages: u64) -> Result<Vec<u64>, WireError> {
        let bad = |m: String| WireError::Malformed(format!("zero map: {m}"));
        let words = ram_pages.div_ceil(64) as usize;
        if payload.len() != words * 8 {
            return Err(bad(format!("{} bytes for a guest of {ram_pages} pages (want {})", payload.len(), words * 8)));
        }
        let map: Vec<u64> =
            payload.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        let tail = ram_pages % 64;
        if tail != 0 && map.last().is_some_and(|w| w >> tail != 0) {
            return Err(bad(format!("pages past the guest's {ram_pages} are set")));
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new());
        w.send_parts(kind, &[payload]).unwrap();
        w.w
    }

    #[test]
    fn round_trip() {
        let bytes = frame(Kind::State, b"{\"a\":1}");
        let mut r = FrameReader::new(&bytes[..]);
        let (k, p) = r.recv().unwrap();
        assert_eq!(k, Kind::State);
        assert_eq!(p, b"{\"a\":1}");
    }

    #[test]
    fn corruption_truncation_and_garbage_are_caught() {
        let mut bytes = frame(Kind::Pages, &[7u8; 100]);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert!(matches!(FrameReader::new(&bytes[..]).recv(), Err(WireError::Checksum { .. })));
        let bytes = frame(Kind::Pages, &[7u8; 100]);
        assert!(matches!(FrameReader::new(&bytes[..50]).recv(), Err(WireError::Truncated(_))));
        assert!(matches!(
            FrameReader::new(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]).recv(),
            Err(WireError::BadMagic(_))
        ));
        let mut bytes = frame(Kind::Pages, &[]);
        bytes[4] = 9;
        assert!(matches!(FrameReader::new(&bytes[..]).recv(), Err(WireError::BadVersion(9))));
        let mut bytes = frame(Kind::Pages, &[]);
        bytes[6] = 77;
        assert!(matches!(FrameReader::new(&bytes[..]).recv(), Err(WireError::UnknownKind(77))));
        let mut bytes = frame(Kind::Pages, &[]);
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(FrameReader::new(&bytes[..]).recv(), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn a_lost_frame_breaks_the_sequence() {
        let mut w = FrameWriter::new(Vec::new());
        for _ in 0..3 {
            w.send_parts(Kind::Pages, &[b"x"]).unwrap();
        }
        let frame_len = HEADER + 1;
        let mut stream = w.w[..frame_len].to_vec();
        stream.extend_from_slice(&w.w[2 * frame_len..]);
        let mut r = FrameReader::new(&stream[..]);
        assert!(r.recv().is_ok());
        assert!(matches!(r.recv(), Err(WireError::Sequence { expected: 1, got: 2 })));
    }

    #[test]
    fn page_batches_are_checked() {
        let mut p = 2u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(5u64 | pages::ZERO_PAGE).to_le_bytes());
        p.extend_from_slice(&6u64.to_le_bytes());
        p.extend_from_slice(&[1u8; 4096]);
        let (e, d) = pages::decode(&p, 10).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(d.len(), 4096);
        assert!(pages::decode(&p, 6).is_err(), "page 6 outside 6 pages");
        assert!(pages::decode(&p[..p.len() - 1], 10).is_err());
        assert!(pages::decode(&p[..3], 10).is_err());
    }

    #[test]
    fn zero_maps_are_checked() {
        let mut p = Vec::new();
        pages::encode_zero_map(&[u64::MAX, 0b101], &mut p);
        assert_eq!(pages::decode_zero_map(&p, 67).unwrap(), vec![u64::MAX, 0b101]);
        let e = pages::decode_zero_map(&p, 66).unwrap_err().to_string();
        assert!(e.contains("pages past the guest's 66"), "{e}");
        assert!(pages::decode_zero_map(&p, 64).is_err(), "two words for one word's pages");
        assert!(pages::decode_zero_map(&p[..15], 67).is_err(), "not whole words");
    }
}
