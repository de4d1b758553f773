//! Guest RAM: one region at guest-physical 0, anonymous or `memfd`-backed,
//! with vm-memory's `AtomicBitmap` recording every write the VMM itself makes
//! (device emulation, requests), which KVM's dirty log does not see.

use crate::config::MemoryBackend;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::FromRawFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Guest RAM with the VMM's own-write bitmap.
pub type GuestMem = GuestMemoryMmap<AtomicBitmap>;

/// Allocates `size` bytes of guest RAM at guest-physical address 0.
pub fn create(size: u64, backend: MemoryBackend) -> Result<GuestMem> {
    let len = usize::try_from(size).map_err(|_| Error::Memory(format!("{size} bytes do not fit this host")))?;
    let file = match backend {
        MemoryBackend::Anon => None,
        MemoryBackend::Memfd => Some(FileOffset::new(memfd(size)?, 0)),
    };
    GuestMemoryMmap::from_ranges_with_files([(GuestAddress(0), len, file)])
        .map_err(|e| Error::Memory(format!("cannot map {size} bytes: {e}")))
}

fn memfd(size: u64) -> Result<File> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns
    // a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"migbench-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(Error::io("sizing the guest memfd"))?;
    Ok(file)
}

/// The host address where guest-physical 0 is mapped.
pub fn host_base(mem: &GuestMem) -> Result<*mut u8> {
    mem.get_host_address(GuestAddress(0)).map_err(|e| Error::Memory(format!("no host mapping for guest RAM: {e}")))
}

/// The RAM as one byte slice, for page copies and hashing.
///
/// # Safety
/// The guest and device threads may write the memory concurrently; callers
/// must tolerate torn reads (migration re-sends pages dirtied meanwhile).
pub unsafe fn as_slice(mem: &GuestMem) -> Result<&[u8]> {
    let base = host_base(mem)?;
    // SAFETY: the single region covers [0, size) and lives as long as `mem`.
    Ok(unsafe { std::slice::from_raw_parts(base, ram_size(mem) as usize) })
}

/// Size of guest RAM in bytes.
fn ram_size(mem: &GuestMem) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Takes and clears the VMM's own-write bitmap, as one bit per 4 KiB page.
pub fn take_own_writes(mem: &GuestMem) -> Vec<u64> {
    mem.iter().next().map(|r| std::ops::Deref::deref(r).bitmap().get_and_reset()).unwrap_or_default()
}
