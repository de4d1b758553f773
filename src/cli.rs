//! The command-line grammar (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Live migration and virtualization benchmarks on Linux KVM, with a built-in
/// minimal VMM and guest.
#[derive(Parser, Debug)]
#[command(name = "migbench", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a VM with the built-in guest; the console goes to stderr.
    Run(RunArgs),
}

/// Parses durations such as `3s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("malformed duration '{s}': expected e.g. 3s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("malformed duration '{s}': unknown unit '{unit}' (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("malformed duration '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a VM is made of.
#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Guest RAM, e.g. 512M or 1G (a multiple of 2M, at most 3G).
    #[arg(long, default_value = "512M")]
    pub memory: String,
    /// Number of vCPUs [default: what the workload needs: 1, or 1 + N for stress:vm=N].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// The guest's workload: idle | stress[:vm=N,bytes=SIZE] | memcheck[:bytes=SIZE,rate=PAGES_PER_S] | fault.
    /// stress defaults to vm=3,bytes=128M, so that 3 workers fit in a 512M guest (like `stress --vm 3`);
    /// memcheck defaults to bytes=64M,rate=20000.
    #[arg(long, default_value = "idle")]
    pub workload: String,
    /// How guest RAM is backed: anon or memfd.
    #[arg(long, default_value = "anon")]
    pub memory_backend: String,
}

/// `migbench run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The VM.
    #[command(flatten)]
    pub vm: VmArgs,
    /// Stop the VM after this long (e.g. 5s, 500ms, 2m); 0 runs until the guest exits or `quit`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open a control socket (line-delimited JSON) at this path.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Print run statistics as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not copy the guest console to stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Turns the user's VM arguments into a checked configuration.
pub fn vm_config(a: &VmArgs) -> anyhow::Result<vmm_min::VmConfig> {
    let workload: vmm_min::Workload = a.workload.parse()?;
    let config = vmm_min::VmConfig {
        memory: vmm_min::config::parse_size(&a.memory)?,
        vcpus: a.vcpus.unwrap_or_else(|| workload.vcpus_needed()),
        workload,
        backend: a.memory_backend.parse()?,
        net: None,
    };
    Ok(config)
}
