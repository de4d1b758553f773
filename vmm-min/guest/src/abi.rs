//! The contract between `vmm-min` and its built-in guest: the guest-physical
//! memory layout, the boot-information page, the control-device registers,
//! the virtio-mmio register map and the GDT selectors.
//!
//! This file is compiled twice: into the guest (`no_std`) and into the VMM
//! (through `#[path]`), so it holds only plain constants and `#[repr(C)]` data.

#![allow(dead_code)]

/// Size of a guest page in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// GDT, one table for all vCPUs (null, kernel code 64, kernel data, user code
/// 32, user data, user code 64, then one 16-byte TSS descriptor per vCPU).
pub const GDT_ADDR: u64 = 0x1000;
/// IDT: 256 gates of 16 bytes.
pub const IDT_ADDR: u64 = 0x2000;
/// TSSs, `TSS_STRIDE` bytes apart, one per vCPU.
pub const TSS_ADDR: u64 = 0x3000;
/// Distance between two vCPUs' TSSs.
pub const TSS_STRIDE: u64 = 128;
/// The boot-information page ([`BootInfo`]).
pub const BOOT_INFO_ADDR: u64 = 0x5000;
/// The kernel command line, NUL-terminated.
pub const CMDLINE_ADDR: u64 = 0x6000;
/// Maximum command-line length including the NUL.
pub const CMDLINE_MAX: u64 = 0x1000;
/// PML4, then one PDPT, then one page directory per GiB (2 MiB pages).
pub const PML4_ADDR: u64 = 0x10000;
/// The page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0x11000;
/// First of four page directories (one per GiB of the low 4 GiB).
pub const PD_ADDR: u64 = 0x12000;
/// A 4 KiB page table that maps the demand-fault window (see `FAULT_WINDOW_ADDR`).
pub const FAULT_PT_ADDR: u64 = 0x16000;
/// Where the guest image is linked and loaded.
pub const IMAGE_ADDR: u64 = 0x10_0000;
/// Top of the area reserved for the guest image.
pub const IMAGE_END: u64 = 0x100_0000;
/// Per-vCPU stacks: ring 0 (exceptions, 16 KiB) then ring 3 (240 KiB).
pub const STACKS_ADDR: u64 = 0x100_0000;
/// Size of one vCPU's stack area (ring 0 + ring 3).
pub const STACK_AREA: u64 = 0x4_0000;
/// Ring-0 stack size at the bottom of each stack area.
pub const RING0_STACK: u64 = 0x4000;
/// Maximum number of vCPUs the layout has room for.
pub const MAX_VCPUS: u64 = 32;
/// A 2 MiB window whose 4 KiB pages start not-present; the guest's own #PF
/// handler maps them (the "page fault" microbenchmark).
pub const FAULT_WINDOW_ADDR: u64 = 0x200_0000;
/// Size of the demand-fault window.
pub const FAULT_WINDOW_SIZE: u64 = 0x20_0000;
/// First byte of RAM the guest may use freely (heap, workloads).
pub const FREE_MEM_ADDR: u64 = 0x240_0000;

/// Base of the MMIO window (identity-mapped, uncached, user-accessible).
pub const MMIO_BASE: u64 = 0xD000_0000;
/// 16550 UART, one byte per register.
pub const UART_ADDR: u64 = MMIO_BASE;
/// The paravirtual control device.
pub const CTRL_ADDR: u64 = MMIO_BASE + 0x1000;
/// First virtio-mmio device; the next ones follow every `VIRTIO_MMIO_STRIDE`.
pub const VIRTIO_MMIO_ADDR: u64 = MMIO_BASE + 0x10000;
/// Distance between two virtio-mmio devices.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Size of the whole MMIO window.
pub const MMIO_SIZE: u64 = 0x10_0000;
/// Largest guest RAM the layout supports (RAM must end below the MMIO window).
pub const MAX_RAM: u64 = 0xC000_0000;

/// Control-device registers (offsets from [`CTRL_ADDR`], 64-bit accesses).
pub mod ctrl {
    /// R: [`super::CTRL_MAGIC`]. Used as the "null I/O" microbenchmark.
    pub const MAGIC: u64 = 0x00;
    /// W: power off with this exit code.
    pub const EXIT: u64 = 0x08;
    /// W: a guest exception; the value is the ring-0 stack pointer at the
    /// common fault stub (vector, error code, then the CPU's IRET frame).
    pub const FAULT: u64 = 0x10;
    /// W: wait for device work for at most this many microseconds.
    pub const WAIT_US: u64 = 0x18;
    /// W: write a result line; value = `(len << 48) | guest_address`.
    pub const RESULT: u64 = 0x20;
}

/// The virtio-mmio transport (virtio 1.x, register layout version 2) and the
/// virtio-net device behind it: the VMM's device model and the guest's
/// driver both use these.
pub mod virtio_mmio {
    /// Register offsets from the device's base address.
    pub mod reg {
        /// R: "virt".
        pub const MAGIC: u64 = 0x000;
        /// R: 2 (virtio 1.x register layout).
        pub const VERSION: u64 = 0x004;
        /// R: virtio device id.
        pub const DEVICE_ID: u64 = 0x008;
        /// R: vendor id.
        pub const VENDOR_ID: u64 = 0x00c;
        /// R: 32 feature bits selected by `DEVICE_FEATURES_SEL`.
        pub const DEVICE_FEATURES: u64 = 0x010;
        /// W: which 32 device feature bits `DEVICE_FEATURES` shows.
        pub const DEVICE_FEATURES_SEL: u64 = 0x014;
        /// W: 32 feature bits the driver accepts, selected by `DRIVER_FEATURES_SEL`.
        pub const DRIVER_FEATURES: u64 = 0x020;
        /// W: which 32 driver feature bits `DRIVER_FEATURES` sets.
        pub const DRIVER_FEATURES_SEL: u64 = 0x024;
        /// W: the queue the `QUEUE_*` registers refer to.
        pub const QUEUE_SEL: u64 = 0x030;
        /// R: the selected queue's largest size.
        pub const QUEUE_NUM_MAX: u64 = 0x034;
        /// W: the selected queue's size.
        pub const QUEUE_NUM: u64 = 0x038;
        /// RW: the selected queue is ready.
        pub const QUEUE_READY: u64 = 0x044;
        /// W: the driver has new buffers in queue N (the value).
        pub const QUEUE_NOTIFY: u64 = 0x050;
        /// R: interrupt status (always 0: no interrupts).
        pub const INTERRUPT_STATUS: u64 = 0x060;
        /// W: interrupt acknowledge.
        pub const INTERRUPT_ACK: u64 = 0x064;
        /// RW: device status.
        pub const STATUS: u64 = 0x070;
        /// W: descriptor table address, low 32 bits.
        pub const QUEUE_DESC_LOW: u64 = 0x080;
        /// W: descriptor table address, high 32 bits.
        pub const QUEUE_DESC_HIGH: u64 = 0x084;
        /// W: available ring address, low 32 bits.
        pub const QUEUE_DRIVER_LOW: u64 = 0x090;
        /// W: available ring address, high 32 bits.
        pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
        /// W: used ring address, low 32 bits.
        pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
        /// W: used ring address, high 32 bits.
        pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
        /// R: configuration generation.
        pub const CONFIG_GENERATION: u64 = 0x0fc;
        /// First byte of the device-specific configuration space.
        pub const CONFIG: u64 = 0x100;
    }

    /// "virt", little-endian.
    pub const MAGIC: u32 = 0x7472_6976;
    /// Device status bits.
    pub mod status {
        /// The guest noticed the device.
        pub const ACKNOWLEDGE: u32 = 1;
        /// The guest knows how to drive it.
        pub const DRIVER: u32 = 2;
        /// The driver is ready: the device may use the queues.
        pub const DRIVER_OK: u32 = 4;
        /// Feature negotiation is complete.
        pub const FEATURES_OK: u32 = 8;
        /// Something went wrong in the device.
        pub const DEVICE_NEEDS_RESET: u32 = 64;
        /// The driver gave up.
        pub const FAILED: u32 = 128;
    }
    /// VIRTIO_F_VERSION_1: the modern (1.x) interface.
    pub const F_VERSION_1: u64 = 1 << 32;
    /// Our vendor id ("MIGB").
    pub const VENDOR: u32 = 0x4247_494d;
    /// The register layout version (virtio 1.x).
    pub const VERSION: u32 = 2;

    /// The virtio-net device.
    pub mod net {
        /// virtio device id of a network card.
        pub const DEVICE_ID: u32 = 1;
        /// VIRTIO_NET_F_MTU: the device reports the link MTU in its configuration.
        pub const F_MTU: u64 = 1 << 3;
        /// VIRTIO_NET_F_MAC: the device reports the MAC address.
        pub const F_MAC: u64 = 1 << 5;
        /// VIRTIO_NET_F_STATUS: the configuration has a link status word.
        pub const F_STATUS: u64 = 1 << 16;
        /// Offset of the MAC address (6 bytes) in the configuration space.
        pub const CONFIG_MAC: u64 = 0;
        /// Offset of the MTU (16 bits, little-endian) in the configuration space.
        pub const CONFIG_MTU: u64 = 10;
    }
}

/// Value read from [`ctrl::MAGIC`].
pub const CTRL_MAGIC: u64 = 0x4d49_4742_454e_4348; // "MIGBENCH"

/// Selector of the ring-0 code segment.
pub const SEL_KERNEL_CODE: u16 = 0x08;
/// Selector of the ring-0 data segment.
pub const SEL_KERNEL_DATA: u16 = 0x10;
/// Selector of the ring-3 data segment, RPL 3.
pub const SEL_USER_DATA: u16 = 0x20 | 3;
/// Selector of the ring-3 64-bit code segment, RPL 3.
pub const SEL_USER_CODE: u16 = 0x28 | 3;
/// Selector of vCPU 0's TSS; vCPU `i` uses `SEL_TSS0 + 16 * i`.
pub const SEL_TSS0: u16 = 0x30;

/// Magic value of [`BootInfo::magic`].
pub const BOOT_MAGIC: u64 = 0x424f_4f54_494e_464f; // "BOOTINFO"

/// Requests the VMM posts in [`BootInfo::request`].
pub mod request {
    /// Nothing to do.
    pub const NONE: u64 = 0;
    /// Verify the whole `memcheck` region and report the result.
    pub const VERIFY: u64 = 1;
}

/// The boot-information page, written by the VMM before the first `KVM_RUN`
/// and shared with the guest for the guest's life. Fields the guest updates
/// are only ever written by one vCPU each.
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// Guest RAM in bytes.
    pub ram_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u64,
    /// TSC frequency in kHz, from `KVM_GET_TSC_KHZ`.
    pub tsc_khz: u64,
    /// Length of the command line at [`CMDLINE_ADDR`], without the NUL.
    pub cmdline_len: u64,
    /// Per-vCPU heartbeat: the main vCPU counts loop iterations; a worker
    /// counts completed sweeps.
    pub heartbeat: [u64; MAX_VCPUS as usize],
    /// Per-vCPU count of pages written (workers) since boot.
    pub pages_written: [u64; MAX_VCPUS as usize],
    /// A request from the VMM ([`request`]); the guest zeroes it once done.
    pub request: u64,
    /// Sequence number the VMM bumps with each request.
    pub request_seq: u64,
    /// Sequence number of the last request the guest completed.
    pub response_seq: u64,
    /// Result of the last request: 0 = ok, otherwise the number of bad pages.
    pub response: u64,
    /// Bumped by the VMM (e.g. a migration destination on resume) to ask the
    /// guest's network stack to announce itself with gratuitous ARPs; the
    /// guest announces whenever it sees a value it has not announced yet.
    pub announce_seq: u64,
}

/// Exception stubs: stub `n` is at `EXC_STUBS_ADDR + n * EXC_STUB_SIZE`.
pub const EXC_STUBS_ADDR: u64 = IMAGE_ADDR + 0x100;
/// Size of one exception stub slot.
pub const EXC_STUB_SIZE: u64 = 16;
/// Number of exception vectors with a stub.
pub const EXC_VECTORS: u64 = 32;
/// The guest heap (its allocator's arena).
pub const HEAP_ADDR: u64 = FREE_MEM_ADDR;
/// Size of the guest heap.
pub const HEAP_SIZE: u64 = 0xC0_0000;
/// Start of the memory handed to workloads (`stress`, `memcheck`).
pub const WORKLOAD_ADDR: u64 = 0x300_0000;

/// Guest "system calls", made with INT3 from ring 3 with the number in RAX.
pub mod syscall {
    /// Return at once: the null call.
    pub const NULL: u64 = 0;
    /// Reload CR3, flushing the TLB (after ring 3 edited the fault window's page table).
    pub const FLUSH_TLB: u64 = 1;
    /// Spin RCX iterations of `dec rcx; jnz` in ring 0 (at least one).
    pub const SPIN: u64 = 2;
}
