//! The built-in guest of `vmm-min`.
//!
//! Ring 0 is a few hundred bytes of assembly (`boot`); everything else runs in
//! ring 3, where KVM executes it natively even on hosts whose ring 0 is
//! emulated. The VMM builds the page tables, GDT, TSS and IDT, writes the boot
//! page and the command line, and starts every vCPU at `_start`, which drops
//! to [`rust_start`] in ring 3. Each vCPU then runs its role's loop.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "abi.rs"]
mod abi;
mod bench;
mod boot;
mod cmdline;
mod hw;
mod net;
mod rt;
mod workloads;

use core::sync::atomic::{AtomicBool, Ordering};

/// Set by vCPU 0 once the heap is ready; other vCPUs wait for it.
static HEAP_READY: AtomicBool = AtomicBool::new(false);

/// Ring-3 entry of every vCPU.
#[no_mangle]
pub extern "sysv64" fn rust_start(vcpu: u64, _boot: u64) -> ! {
    let vcpu = vcpu as usize;
    if vcpu >= abi::MAX_VCPUS as usize {
        hw::exit(102);
    }
    if vcpu == 0 {
        rt::init_heap();
        HEAP_READY.store(true, Ordering::Release);
        println!("migbench guest: {}", cmdline::get());
    } else {
        while !HEAP_READY.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    match cmdline::role(vcpu) {
        "main" => workloads::main_vcpu(vcpu),
        "stress" => workloads::stress_worker(vcpu),
        _ => workloads::idle_vcpu(vcpu),
    }
}
