//! x86-64 long-mode setup, done by the VMM before the first `KVM_RUN` (as
//! Firecracker does): identity page tables with 2 MiB pages, the GDT with one
//! TSS per vCPU, the IDT pointing at the guest's stubs, the boot page, the
//! command line, the guest image, and each vCPU's registers and CPUID.
//!
//! Everything is user-accessible (U/S = 1) because the guest's drivers and
//! workloads run in ring 3; the guest is a benchmark, not a protection domain.

use crate::abi::{self, BootInfo};
use crate::error::{Error, Result};
use crate::memory::GuestMem;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, CpuId};
use vm_memory::{Bytes, GuestAddress};

const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PWT: u64 = 1 << 3;
const PTE_PCD: u64 = 1 << 4;
const PTE_PS: u64 = 1 << 7;
const TWO_MB: u64 = 2 << 20;

const GDT_ENTRIES: [u64; 6] = [
    0,                     // null
    0x00AF_9A00_0000_FFFF, // 0x08 kernel code 64
    0x00CF_9200_0000_FFFF, // 0x10 kernel data
    0x00CF_FA00_0000_FFFF, // 0x18 user code 32
    0x00CF_F200_0000_FFFF, // 0x20 user data
    0x00AF_FA00_0000_FFFF, // 0x28 user code 64
];

const CR0: u64 = 0x8001_0033; // PG | WP | NE | ET | MP | PE
const CR4: u64 = (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10); // PAE | PGE | OSFXSR | OSXMMEXCPT
const EFER: u64 = 0xd01; // SCE | LME | LMA | NXE
const TSS_LIMIT: u32 = 103;

fn write<T: vm_memory::ByteValued>(mem: &GuestMem, addr: u64, val: T) -> Result<()> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|e| Error::Memory(format!("writing boot structures at {addr:#x}: {e}")))
}

/// Writes the page tables: RAM and the MMIO window identity-mapped with
/// 2 MiB pages, except the demand-fault window, mapped by a 4 KiB table whose
/// entries start not-present.
pub fn write_page_tables(mem: &GuestMem, ram: u64) -> Result<()> {
    let table = PTE_P | PTE_RW | PTE_US;
    write(mem, abi::PML4_ADDR, abi::PDPT_ADDR | table)?;
    for gib in 0..4u64 {
        write(mem, abi::PDPT_ADDR + gib * 8, (abi::PD_ADDR + gib * 4096) | table)?;
    }
    let mut pds = vec![0u64; 4 * 512];
    for addr in (0..ram).step_by(TWO_MB as usize) {
        pds[(addr / TWO_MB) as usize] = addr | table | PTE_PS;
    }
    pds[(abi::FAULT_WINDOW_ADDR / TWO_MB) as usize] = abi::FAULT_PT_ADDR | table;
    pds[(abi::MMIO_BASE / TWO_MB) as usize] = abi::MMIO_BASE | table | PTE_PS | PTE_PCD | PTE_PWT;
    let bytes: Vec<u8> = pds.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(abi::PD_ADDR))
        .map_err(|e| Error::Memory(format!("writing page directories: {e}")))?;
    mem.write_slice(&[0u8; 4096], GuestAddress(abi::FAULT_PT_ADDR))
        .map_err(|e| Error::Memory(format!("writing the fault-window table: {e}")))
}

fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = u64::from(TSS_LIMIT);
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, type 11 (busy 64-bit TSS)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// Writes the GDT, one TSS per vCPU (RSP0 = top of its ring-0 stack) and the
/// IDT (DPL 3 only for #BP, the guest's system call).
pub fn write_descriptor_tables(mem: &GuestMem, vcpus: u32) -> Result<()> {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        write(mem, abi::GDT_ADDR + 8 * i as u64, *e)?;
    }
    for v in 0..u64::from(vcpus) {
        let tss = abi::TSS_ADDR + v * abi::TSS_STRIDE;
        let [lo, hi] = tss_descriptor(tss);
        let slot = abi::GDT_ADDR + u64::from(abi::SEL_TSS0) + 16 * v;
        write(mem, slot, lo)?;
        write(mem, slot + 8, hi)?;
        write(mem, tss + 4, ring0_stack_top(v))?; // RSP0
        write(mem, tss + 102, 104u16)?; // no I/O bitmap
    }
    for vec in 0..abi::EXC_VECTORS {
        let handler = abi::EXC_STUBS_ADDR + vec * abi::EXC_STUB_SIZE;
        let dpl: u64 = if vec == 3 { 3 } else { 0 };
        let lo = (handler & 0xffff)
            | (u64::from(abi::SEL_KERNEL_CODE) << 16)
            | ((0x8e | (dpl << 5)) << 40)
            | (((handler >> 16) & 0xffff) << 48);
        write(mem, abi::IDT_ADDR + 16 * vec, lo)?;
        write(mem, abi::IDT_ADDR + 16 * vec + 8, handler >> 32)?;
    }
    Ok(())
}

/// Writes the command line and the boot page.
pub fn write_boot_info(mem: &GuestMem, ram: u64, vcpus: u32, tsc_khz: u64, cmdline: &str) -> Result<()> {
    if cmdline.len() as u64 >= abi::CMDLINE_MAX {
        return Err(Error::Config(format!("guest command line is {} bytes, over the limit", cmdline.len())));
    }
    mem.write_slice(cmdline.as_bytes(), GuestAddress(abi::CMDLINE_ADDR))
        .map_err(|e| Error::Memory(format!("writing the command line: {e}")))?;
    let info_off = |f: usize| abi::BOOT_INFO_ADDR + f as u64;
    write(mem, info_off(std::mem::offset_of!(BootInfo, magic)), abi::BOOT_MAGIC)?;
    write(mem, info_off(std::mem::offset_of!(BootInfo, ram_bytes)), ram)?;
    write(mem, info_off(std::mem::offset_of!(BootInfo, vcpus)), u64::from(vcpus))?;
    write(mem, info_off(std::mem::offset_of!(BootInfo, tsc_khz)), tsc_khz)?;
    write(mem, info_off(std::mem::offset_of!(BootInfo, cmdline_len)), cmdline.len() as u64)
}

/// Loads the guest ELF and returns its entry point, which must be the
/// image's base (the exception stubs' addresses depend on it).
pub fn load_image(mem: &GuestMem, elf: &[u8]) -> Result<u64> {
    use linux_loader::loader::{elf::Elf, KernelLoader};
    let mut image = std::io::Cursor::new(elf);
    let res = Elf::load(mem, None, &mut image, Some(GuestAddress(abi::IMAGE_ADDR)))
        .map_err(|e| Error::Load(e.to_string()))?;
    let entry = res.kernel_load.0;
    if entry != abi::IMAGE_ADDR || res.kernel_end > abi::IMAGE_END {
        return Err(Error::Load(format!(
            "guest image entry {entry:#x} / end {:#x} does not match the layout",
            res.kernel_end
        )));
    }
    Ok(entry)
}

/// Top of vCPU `v`'s ring-0 stack.
fn ring0_stack_top(v: u64) -> u64 {
    abi::STACKS_ADDR + v * abi::STACK_AREA + abi::RING0_STACK
}

/// Top of vCPU `v`'s ring-3 stack, aligned as after a `call`.
fn ring3_stack_top(v: u64) -> u64 {
    abi::STACKS_ADDR + (v + 1) * abi::STACK_AREA - 8
}

/// The supported CPUID with vCPU `v`'s APIC id patched into leaves 1 and 0xB.
pub fn cpuid_for(supported: &CpuId, v: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (v << 24),
            0xb => e.edx = v,
            _ => {}
        }
    }
    cpuid
}

fn segment(selector: u16, type_: u8, dpl: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long-mode special registers for vCPU `v`, starting in ring 0.
pub fn sregs_for(mut sregs: kvm_sregs, v: u64) -> kvm_sregs {
    sregs.cs = segment(abi::SEL_KERNEL_CODE, 0xb, 0, true);
    let data = segment(abi::SEL_KERNEL_DATA, 0x3, 0, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: abi::TSS_ADDR + v * abi::TSS_STRIDE,
        limit: TSS_LIMIT,
        selector: abi::SEL_TSS0 + 16 * v as u16,
        type_: 11,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = abi::GDT_ADDR;
    sregs.gdt.limit = (u64::from(abi::SEL_TSS0) + 16 * abi::MAX_VCPUS - 1) as u16;
    sregs.idt.base = abi::IDT_ADDR;
    sregs.idt.limit = (16 * abi::EXC_VECTORS - 1) as u16;
    sregs.cr0 = CR0;
    sregs.cr3 = abi::PML4_ADDR;
    sregs.cr4 = CR4;
    sregs.efer = EFER;
    sregs
}

/// General registers for vCPU `v`: `_start` gets its index, the boot page and
/// its ring-3 stack.
pub fn regs_for(entry: u64, v: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: ring0_stack_top(v),
        rdi: v,
        rsi: abi::BOOT_INFO_ADDR,
        rdx: ring3_stack_top(v),
        rflags: 0x2,
        ..Default::default()
    }
}

/// FPU state at reset, with SSE usable in ring 3.
pub fn fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}
