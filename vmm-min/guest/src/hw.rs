//! Ring-3 access to the hardware the VMM provides: the control device, the
//! UART, the TSC and the boot-information page.

use crate::abi::{self, BootInfo};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

fn ctrl_write(reg: u64, value: u64) {
    // SAFETY: the control device's MMIO window is identity-mapped and
    // user-accessible; a write exits to the VMM.
    unsafe { write_volatile((abi::CTRL_ADDR + reg) as *mut u64, value) }
}

/// Reads the control device's magic register: one exit to the VMM and back.
pub fn ctrl_read_magic() -> u64 {
    // SAFETY: as in `ctrl_write`.
    unsafe { read_volatile((abi::CTRL_ADDR + abi::ctrl::MAGIC) as *const u64) }
}

/// Powers the VM off with `code` as its exit code.
pub fn exit(code: u64) -> ! {
    loop {
        ctrl_write(abi::ctrl::EXIT, code);
    }
}

/// Blocks this vCPU in the VMM until device work arrives or `us` pass.
pub fn wait_us(us: u64) {
    ctrl_write(abi::ctrl::WAIT_US, us);
}

/// Hands a result line (JSON) to the VMM in one exit.
pub fn result_line(line: &[u8]) {
    ctrl_write(abi::ctrl::RESULT, ((line.len() as u64) << 48) | line.as_ptr() as u64);
}

/// Writes bytes to the 16550 UART's transmit register (one exit per byte).
pub fn uart_write(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: the UART's MMIO window is identity-mapped and user-accessible.
        unsafe { write_volatile(abi::UART_ADDR as *mut u8, b) }
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects and is allowed in ring 3 (CR4.TSD = 0).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Makes a guest system call (INT3 with the number in RAX and an argument
/// in RCX).
pub fn syscall(nr: u64, arg: u64) {
    // SAFETY: the guest's #BP handler clobbers only RAX and RCX.
    unsafe { core::arch::asm!("int3", inout("rax") nr => _, inout("rcx") arg => _) }
}

/// The boot-information page the VMM wrote.
pub fn boot_info() -> *mut BootInfo {
    abi::BOOT_INFO_ADDR as *mut BootInfo
}

/// TSC ticks per microsecond.
pub fn tsc_per_us() -> u64 {
    // SAFETY: the boot page is identity-mapped for the guest's whole life.
    (unsafe { read_volatile(addr_of!((*boot_info()).tsc_khz)) } / 1000).max(1)
}

/// Adds `n` to vCPU `vcpu`'s heartbeat counter (only that vCPU writes it).
pub fn heartbeat_add(vcpu: usize, n: u64) {
    let b = boot_info();
    // SAFETY: `vcpu` < MAX_VCPUS (checked at start); one writer per slot.
    unsafe {
        let p = addr_of_mut!((*b).heartbeat[vcpu]);
        write_volatile(p, read_volatile(p).wrapping_add(n));
    }
}

/// Adds `n` to vCPU `vcpu`'s pages-written counter.
pub fn pages_written_add(vcpu: usize, n: u64) {
    let b = boot_info();
    // SAFETY: as in `heartbeat_add`.
    unsafe {
        let p = addr_of_mut!((*b).pages_written[vcpu]);
        write_volatile(p, read_volatile(p).wrapping_add(n));
    }
}

/// A pending request from the VMM, as `(sequence, request)`, if any.
pub fn pending_request() -> Option<(u64, u64)> {
    let b = boot_info();
    // SAFETY: the boot page is identity-mapped; the VMM writes `request`
    // before bumping `request_seq`.
    unsafe {
        let seq = read_volatile(addr_of!((*b).request_seq));
        if seq == read_volatile(addr_of!((*b).response_seq)) {
            return None;
        }
        Some((seq, read_volatile(addr_of!((*b).request))))
    }
}

/// Completes request `seq` with `response`.
pub fn complete_request(seq: u64, response: u64) {
    let b = boot_info();
    // SAFETY: only the main vCPU answers requests.
    unsafe {
        write_volatile(addr_of_mut!((*b).response), response);
        write_volatile(addr_of_mut!((*b).response_seq), seq);
    }
}
