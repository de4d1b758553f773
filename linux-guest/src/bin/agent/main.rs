//! `migbench-agent`: the Linux guest's init after the shell script `/init`
//! has mounted the pseudo file systems and loaded the virtio modules.
//!
//! It reads its [`GuestParams`] from `/proc/cmdline`, configures the NIC
//! whose MAC the host gave, starts the workload and serves HTTP on port 80
//! until the guest is switched off. Errors go to the console (stderr), where
//! the host's console log shows them; a fatal one ends init, and the kernel
//! (booted with `panic=-1`, QEMU with `-no-reboot`) stops the VM.
//!
//! Started as `migbench-agent bench-row [--quick] ID` (by its own bench
//! runner, `bench`), it measures one row of the native suite instead.

mod bench;
mod figure;
mod memcheck;
mod net;
mod server;
mod ttcp;
mod workload;

use linux_guest::params::GuestParams;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some(bench::ROW_ARG) => bench::row_main(&args[1..]),
        _ => run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migbench-agent: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let params = GuestParams::parse(&cmdline).map_err(|e| e.to_string())?;
    let nic = net::configure(&params).map_err(|e| format!("configuring the NIC: {e}"))?;
    eprintln!("migbench-agent: {nic} up as {}/{}; workload {}", params.ip, params.prefix, params.workload);
    let workload = workload::start(&params.workload);
    server::serve(&params, nic, workload).map_err(|e| format!("HTTP server: {e}"))
}
