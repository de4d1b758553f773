//! The paravirtual control device: power-off with an exit code, fault
//! reports, "wait for work" (the polling guest's HLT), and result lines read
//! straight from guest memory. Its magic register is the target of
//! the "null I/O" microbenchmark.

use crate::abi::{self, ctrl};

/// What a guest write to the control device asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Power off with this exit code.
    Exit(u64),
    /// A guest exception; the value is the guest's ring-0 stack pointer.
    Fault(u64),
    /// Block until device work arrives or this many microseconds pass.
    Wait(u64),
    /// A result line at `(address, length)`.
    Result(u64, usize),
    /// Nothing (an unknown register).
    Ignore,
}

/// Decodes a guest write of `value` to register `offset`.
pub fn write(offset: u64, value: u64) -> ControlAction {
    let buffer = || (value & 0xffff_ffff_ffff, (value >> 48) as usize);
    match offset {
        ctrl::EXIT => ControlAction::Exit(value),
        ctrl::FAULT => ControlAction::Fault(value),
        ctrl::WAIT_US => ControlAction::Wait(value),
        ctrl::RESULT => {
            let (a, l) = buffer();
            ControlAction::Result(a, l)
        }
        _ => ControlAction::Ignore,
    }
}

/// The value of a guest read of register `offset`.
pub fn read(offset: u64) -> u64 {
    match offset {
        ctrl::MAGIC => abi::CTRL_MAGIC,
        _ => 0,
    }
}
