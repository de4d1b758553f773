//! The built-in guest's ELF, built by `build.rs` and embedded in the binary.

/// The guest image.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/migbench-guest.elf"));

/// A short fingerprint of the image (FNV-1a 64), so a migration destination
/// can refuse a source running a different guest.
pub fn fingerprint() -> u64 {
    served_file::fnv1a64(ELF)
}
