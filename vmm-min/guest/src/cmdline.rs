//! The guest's configuration: a Linux-style `key=value …` command line that
//! the VMM writes at `abi::CMDLINE_ADDR`.

use crate::abi;

/// The command line as a string slice (empty if it is not valid UTF-8).
pub fn get() -> &'static str {
    // SAFETY: the VMM wrote `cmdline_len` bytes at CMDLINE_ADDR and never
    // changes them while the guest runs.
    let bytes = unsafe {
        let len = core::ptr::read_volatile(core::ptr::addr_of!((*crate::hw::boot_info()).cmdline_len));
        core::slice::from_raw_parts(abi::CMDLINE_ADDR as *const u8, len.min(abi::CMDLINE_MAX - 1) as usize)
    };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The value of `key` on the command line.
pub fn value(key: &str) -> Option<&'static str> {
    get().split_ascii_whitespace().find_map(|tok| {
        let (k, v) = tok.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The value of `key` as an integer, or `default`.
pub fn u64_or(key: &str, default: u64) -> u64 {
    value(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The role of vCPU `vcpu` from `roles=a,b,c` (`idle` when absent).
pub fn role(vcpu: usize) -> &'static str {
    value("roles").and_then(|r| r.split(',').nth(vcpu)).unwrap_or("idle")
}
