//! Ring 0: the whole of it. The entry that drops to ring 3, the exception
//! stubs, the INT3 "system call" and the demand-fault handler.
//!
//! Ring 0 runs under KVM's instruction emulator on the development hosts
//! (about 1 µs per instruction), so it is hand-written assembly using only
//! general-purpose registers, and nothing hot lives here. The VMM builds the
//! GDT, TSS, IDT and page tables before the first `KVM_RUN`; the IDT points at
//! the stubs, which sit at fixed addresses (`abi::EXC_STUBS_ADDR`).

use crate::abi;

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
// Entered in ring 0 with RDI = vCPU index, RSI = boot info, RDX = ring-3 stack
// top; RSP is this vCPU's ring-0 stack (also its TSS.RSP0).
_start:
    lea rcx, [rip + {entry}]
    push {user_ss}
    push rdx
    push 0x2
    push {user_cs}
    push rcx
    iretq

.macro stub_noerr n
    .org 0x100 + 16 * \n
    push 0
    push \n
    jmp exc_common
.endm
.macro stub_err n
    .org 0x100 + 16 * \n
    push \n
    jmp exc_common
.endm

    stub_noerr 0
    stub_noerr 1
    stub_noerr 2
    // #BP: INT3 from ring 3 is the guest's system call, number in RAX.
    .org 0x100 + 16 * 3
    test rax, rax
    jnz syscall_dispatch
    iretq
    stub_noerr 4
    stub_noerr 5
    stub_noerr 6
    stub_noerr 7
    stub_err 8
    stub_noerr 9
    stub_err 10
    stub_err 11
    stub_err 12
    stub_err 13
    .org 0x100 + 16 * 14
    jmp pf_handler
    stub_noerr 15
    stub_noerr 16
    stub_err 17
    stub_noerr 18
    stub_noerr 19
    stub_noerr 20
    stub_err 21
    stub_noerr 22
    stub_noerr 23
    stub_noerr 24
    stub_noerr 25
    stub_noerr 26
    stub_noerr 27
    stub_noerr 28
    stub_err 29
    stub_err 30
    stub_noerr 31
    .org 0x100 + 16 * 32

syscall_dispatch:
    cmp rax, {sys_flush_tlb}
    jne 4f
    mov rax, cr3
    mov cr3, rax
    xor eax, eax
    iretq
// Spin RCX iterations in ring 0: measures how ring 0 is executed here.
4:  cmp rax, {sys_spin}
    jne 1f
5:  dec rcx
    jnz 5b
    xor eax, eax
    iretq
1:  push 0
    push 3
    jmp exc_common

// #PF: a fault inside the demand window maps its page (present, writable,
// user); anything else is a real fault.
pf_handler:
    push rax
    push rbx
    mov rax, cr2
    mov rbx, {fw_addr}
    sub rax, rbx
    mov rbx, {fw_size}
    cmp rax, rbx
    jae 2f
    mov rbx, cr2
    shr rbx, 12
    shl rbx, 12
    or rbx, 7
    shr rax, 12
    mov [rax * 8 + {fault_pt}], rbx
    pop rbx
    pop rax
    add rsp, 8
    iretq
2:  pop rbx
    pop rax
    push 14
    jmp exc_common

// Report the fault to the VMM: the stack holds vector, error code and the
// CPU's frame. The VMM reads them and stops the VM.
exc_common:
    mov rax, {ctrl_fault}
    mov [rax], rsp
3:  hlt
    jmp 3b
"#,
    entry = sym crate::rust_start,
    user_ss = const abi::SEL_USER_DATA as u64,
    user_cs = const abi::SEL_USER_CODE as u64,
    sys_flush_tlb = const abi::syscall::FLUSH_TLB,
    sys_spin = const abi::syscall::SPIN,
    fw_addr = const abi::FAULT_WINDOW_ADDR,
    fw_size = const abi::FAULT_WINDOW_SIZE,
    fault_pt = const abi::FAULT_PT_ADDR,
    ctrl_fault = const abi::CTRL_ADDR + abi::ctrl::FAULT,
);
