//! The console: a 16550 UART (vm-superio) in MMIO space, writing to the
//! VMM's stderr. The guest polls, so the UART raises no interrupt.

use serde::{Deserialize, Serialize};
use std::io::Write;
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};

/// An interrupt line that goes nowhere: the guest does not use interrupts.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// Where console bytes go: stderr, or nowhere.
pub struct ConsoleOut {
    enabled: bool,
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.enabled {
            // A broken stderr must not stop the guest.
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The console UART.
pub struct Uart {
    serial: Serial<NoInterrupt, NoEvents, ConsoleOut>,
}

/// The UART's registers, for migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UartState {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub regs: [u8; 9],
    /// Bytes waiting in the receive FIFO.
    pub rx: Vec<u8>,
}

impl Uart {
    /// A UART whose output goes to stderr when `console` is set.
    pub fn new(console: bool) -> Self {
        Self { serial: Serial::new(NoInterrupt, ConsoleOut { enabled: console }) }
    }

    /// A guest read of register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.serial.read(offset)
    }

    /// A guest write of register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        // The only error is a failing interrupt trigger, which cannot happen.
        let _ = self.serial.write(offset, value);
    }

    /// The registers, for the migration stream.
    pub fn state(&self) -> UartState {
        let s = self.serial.state();
        UartState {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            rx: s.in_buffer,
        }
    }

    /// Restores the registers from a migration stream.
    pub fn restore(&mut self, st: &UartState, console: bool) -> Result<(), String> {
        let r = st.regs;
        let s = SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: st.rx.clone(),
        };
        self.serial = Serial::from_state(&s, NoInterrupt, NoEvents, ConsoleOut { enabled: console })
            .map_err(|e| format!("UART state rejected: {e:?}"))?;
        Ok(())
    }
}
