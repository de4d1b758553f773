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
    /// Start an empty destination VMM that waits for an incoming migration.
    Vmm(VmmArgs),
    /// Start a source and a destination VMM and live-migrate between them.
    Migrate(Box<MigrateArgs>),
    /// lmbench-style microbenchmarks, natively and inside the guest.
    Bench(BenchArgs),
    /// Download a URL over N keep-alive connections, sampling the rate every 10 ms.
    Probe(ProbeArgs),
    /// Run one scenario file (or a built-in one: idle, loaded, loaded-throttle, idle-gbit, loaded-gbit, qemu-idle,
    /// qemu-loaded) and write its report.
    Scenario(ScenarioArgs),
    /// Reproduce the papers' pictures: the idle and loaded scenarios (on loopback and over a 1 Gbit/s link
    /// between simulated hosts, on each system) plus the microbenchmarks, in one report.
    Reproduce(ReproduceArgs),
    /// Gate CI on a result file: fixed limits, or a baseline with a tolerance.
    Check(CheckArgs),
    /// Make a CA and a certificate for mutual-TLS migration (ca.pem, cert.pem, key.pem).
    TlsInit(TlsInitArgs),
    /// Regenerate report.md, report.html and the charts of a results folder from its raw JSON
    /// (runs nothing); with --baseline, also the regression view against another folder.
    Report(ReportArgs),
    /// The Linux guest image of the `qemu` system: build it from Debian packages, or show the cached one.
    Image(crate::image_cmd::ImageArgs),
    /// A QEMU destination for a source on another machine (`migbench migrate --system qemu --to`):
    /// serves the control channel and starts QEMU with `-incoming` when the source asks.
    QemuIncoming(QemuIncomingArgs),
}

/// `migbench qemu-incoming`.
#[derive(Args, Debug)]
pub struct QemuIncomingArgs {
    /// The control channel's address (HOST:PORT): the source's `migbench migrate --system qemu --to`.
    #[arg(long, value_name = "HOST:PORT")]
    pub control: String,
    /// Where QEMU listens for the migration stream [default: the --control host, any free port].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Mutual TLS for the control channel and QEMU's stream with the credentials in this
    /// directory (`migbench tls-init`; QEMU's tls-creds-x509 names are made from them). Required
    /// unless --control is loopback.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// The TAP the guest's NIC uses here (bridged to the guest's LAN, as for `vmm --tap`).
    #[arg(long)]
    pub tap: String,
    /// Run QEMU (and open its TAP) in this existing network namespace [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// How to run QEMU here (kernel, initrd, binary, accelerator).
    #[command(flatten)]
    pub qemu: QemuArgs,
}

pub use scenarios::scenario::parse_duration;

/// Parses a rate such as `1G`, `500M` or `800` (bits per second, in Mbit/s).
pub fn parse_rate_mbps(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches("bit/s").trim_end_matches("bps").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('G' | 'g') => (&t[..t.len() - 1], 1000.0),
        Some('M' | 'm') => (&t[..t.len() - 1], 1.0),
        Some('K' | 'k') => (&t[..t.len() - 1], 0.001),
        _ => (t, 1.0),
    };
    let v: f64 =
        num.trim().parse().map_err(|_| format!("malformed rate '{s}': expected e.g. 500M or 1G (bits per second)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate '{s}' must be positive"));
    }
    Ok(v * mult)
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
    /// The guest's workload: idle | stress[:vm=N,bytes=SIZE] | memcheck[:bytes=SIZE,rate=PAGES_PER_S] |
    /// bench[:quick=1,only=ID+ID] | fault. stress defaults to vm=3,bytes=128M, so that 3 workers fit in a
    /// 512M guest (like `stress --vm 3`); memcheck defaults to bytes=64M,rate=20000; fault touches an
    /// unmapped address on purpose.
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
    /// Read the whole VM configuration (JSON, as `run --json` prints it under "config") from this
    /// file instead of the VM flags above; this is how `migbench migrate` and the scenarios start
    /// their source VMM.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Open the VM's TAP inside this existing network namespace (for a configuration with a NIC).
    #[arg(long, conflicts_with = "net")]
    pub netns: Option<String>,
    /// Migrate over mutual TLS with the credentials in this directory (ca.pem, cert.pem, key.pem;
    /// `migbench tls-init` makes them).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
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
    /// The guest's network.
    #[command(flatten)]
    pub net: NetArgs,
}

/// `--net`: a NIC in a fresh network topology (needs root).
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Give the guest a virtio-net NIC on a bridge in fresh network namespaces
    /// (`mb<id>-lan`, `mb<id>-probe`), serving HTTP on port 80; needs root.
    #[arg(long)]
    pub net: bool,
    /// Run id in the namespace and interface names (1 to 11 of [a-z0-9]) [default: random].
    #[arg(long, requires = "net")]
    pub run_id: Option<String>,
    /// Size of the file the guest serves at /file.
    #[arg(long, default_value = "512K", requires = "net")]
    pub file_size: String,
    /// MTU of the bridge, the TAPs and the veth pair (the guest uses up to 9000);
    /// 9000 gives about 2.5 times the HTTP throughput of 1500 here.
    #[arg(long, default_value_t = 9000, requires = "net")]
    pub mtu: u32,
    /// Use the existing topology of --run-id (made by the migbench that started this VMM)
    /// instead of creating one; it is neither created nor removed here.
    #[arg(long, requires = "run_id")]
    pub net_attach: bool,
}

/// `migbench vmm --incoming`.
#[derive(Args, Debug)]
pub struct VmmArgs {
    /// Address to listen on for the migration stream; port 0 picks a free one.
    /// The bound address is printed on stdout as `listening on HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub incoming: String,
    /// Refuse a VM whose RAM is not this size.
    #[arg(long)]
    pub memory: Option<String>,
    /// Refuse a VM with another vCPU count.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Give an incoming VM's NIC the destination TAP of this run's topology (see `run --net --run-id`).
    #[arg(long)]
    pub net_run_id: Option<String>,
    /// Give an incoming VM's NIC this existing TAP (on a real host: one bridged to the LAN that the
    /// source's TAP is on, so the guest keeps its address).
    #[arg(long, conflicts_with = "net_run_id")]
    pub tap: Option<String>,
    /// Run the migrated VM for this long, then stop; 0 runs until the guest exits or `quit`.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub duration: Duration,
    /// Give up if the source sends nothing for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Accept the migration over mutual TLS only, with the credentials in this directory (ca.pem,
    /// cert.pem, key.pem; `migbench tls-init` makes them).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS anyway (the stream is then neither
    /// authenticated nor encrypted).
    #[arg(long, conflicts_with = "tls_dir")]
    pub insecure: bool,
    /// Give up if the whole incoming migration takes longer than this, from the source's Hello.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Open a control socket (line-delimited JSON) at this path.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Print run statistics as one JSON object on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Do not copy the guest console to stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Migration policy options shared by the commands that migrate. What is
/// left out takes the policy's own defaults (`results::Policy`).
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// `downtime` (QEMU-like: switch over when the rest fits the target) or
    /// `xen` (Clark et al.'s dynamic rate limiting: 100 Mbit/s, then dirty rate + 50).
    #[arg(long, default_value = "downtime")]
    pub policy: String,
    /// Target downtime for the `downtime` policy, ms [default: 300].
    #[arg(long)]
    pub downtime_ms: Option<f64>,
    /// Give up (or force, see --on-timeout) after this long in pre-copy [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// What the `downtime` policy does at the timeout: cancel (the source keeps running) or force
    /// [default: cancel].
    #[arg(long)]
    pub on_timeout: Option<String>,
    /// Cap the migration bandwidth, e.g. 1G or 500M (bit/s). For `xen` this is its maximum rate
    /// [default for xen: 1G].
    #[arg(long, value_parser = parse_rate_mbps)]
    pub max_bandwidth: Option<f64>,
    /// Auto-converge (QEMU's semantics): when a round does not shrink the dirty set enough,
    /// throttle the worker vCPUs, 20% at first, then 10% more per round, up to --throttle-max.
    #[arg(long)]
    pub throttle: bool,
    /// The most --throttle may hold the worker vCPUs off, percent.
    #[arg(long, default_value_t = 99.0, requires = "throttle")]
    pub throttle_max: f64,
}

/// `migbench migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The system under test: vmm-min, or qemu (the Linux guest; with --net, or with --to a
    /// `migbench qemu-incoming` and --tap).
    #[arg(long, default_value = "vmm-min")]
    pub system: scenarios::scenario::SystemKind,
    /// How to run QEMU (with --system qemu).
    #[command(flatten)]
    pub qemu: QemuArgs,
    /// The VM.
    #[command(flatten)]
    pub vm: VmArgs,
    /// The policy.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// How long the guest runs on the source before the migration starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long the guest runs on the destination afterwards, to check it is alive.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub after: Duration,
    /// Send a digest of guest RAM; the destination compares it before resuming.
    #[arg(long)]
    pub verify: bool,
    /// Exit non-zero if the downtime exceeds this many ms.
    #[arg(long)]
    pub max_downtime_ms: Option<f64>,
    /// Write the statistics as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Migrate over mutual TLS with the credentials in this directory (see `migbench tls-init`).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Migrate to a destination started elsewhere with `migbench vmm --incoming ADDR` (HOST:PORT;
    /// with --system qemu, `migbench qemu-incoming --control ADDR`) instead of starting one here;
    /// needs --tls-dir unless HOST is loopback. The source runs here.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "net")]
    pub to: Option<String>,
    /// Give the guest a NIC in fresh network namespaces and download its /file over HTTP
    /// from the probe namespace through the migration; the connections must survive. Needs root.
    #[arg(long)]
    pub net: bool,
    /// With --to: give the guest a NIC on this existing TAP here (bridged to the LAN of the
    /// destination's `vmm --tap`), serving HTTP on port 80 at --guest-ip.
    #[arg(long, requires_all = ["to", "guest_ip"])]
    pub tap: Option<String>,
    /// With --tap: the guest's address with its prefix, e.g. 192.168.50.20/24.
    #[arg(long, requires = "tap")]
    pub guest_ip: Option<String>,
    /// With --tap: the guest's MAC [default: 02:6d:62 and the address's last three bytes].
    #[arg(long, requires = "tap")]
    pub guest_mac: Option<String>,
    /// With --net: put the source, the destination and the probe on simulated hosts (network
    /// namespaces of their own), the migration over a veth pair between source and destination.
    #[arg(long, requires = "net")]
    pub hosts: bool,
    /// With --net: shape the migration link between the hosts to this rate with tc's tbf,
    /// e.g. 1gbit or 100mbit (implies --hosts).
    #[arg(long, requires = "net")]
    pub bandwidth: Option<String>,
    /// Size of the file the guest serves (with --net or --tap).
    #[arg(long, default_value = "512K")]
    pub file_size: String,
    /// MTU of the bridge, TAPs and veths (with --net).
    #[arg(long, default_value_t = 9000, requires = "net")]
    pub mtu: u32,
    /// Parallel keep-alive connections of the probe (with --net).
    #[arg(long, default_value_t = 4, requires = "net")]
    pub connections: usize,
    /// Sampling interval of the probe (with --net).
    #[arg(long, default_value = "10ms", value_parser = parse_duration, requires = "net")]
    pub interval: Duration,
}

/// `migbench probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The `http://` URL to download over and over.
    pub url: String,
    /// Sampling interval.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Parallel keep-alive connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to probe.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Fail a request that makes no progress for this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the samples as CSV (t_s, bytes, rate_mbps, jitter_us).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the whole result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `migbench scenario`.
#[derive(Args, Debug)]
pub struct ScenarioArgs {
    /// A scenario file (TOML), or a built-in scenario: idle, loaded, loaded-throttle, idle-gbit, loaded-gbit,
    /// qemu-idle or qemu-loaded.
    pub scenario: String,
    /// Results folder [default: results/<timestamp>-<scenario>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the scenario's warm-up before the migration.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Override the scenario's time after the migration.
    #[arg(long, value_parser = parse_duration)]
    pub after: Option<Duration>,
    /// How to run QEMU (scenarios with system = "qemu").
    #[command(flatten)]
    pub qemu: QemuArgs,
}

/// How to run the `qemu` system; each flag overrides the scenario's `[qemu]` table.
#[derive(Args, Debug, Clone, Default)]
pub struct QemuArgs {
    /// The guest kernel for QEMU [default: the cached `migbench image build` image]. On non-Debian hosts pass
    /// --kernel and --initrd (an initrd whose init is `migbench image agent`'s binary).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The guest initramfs for QEMU [default: the cached image's].
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// QEMU's accelerator: auto (KVM only with VT-x/AMD-V and kvm_intel/kvm_amd loaded, else TCG), kvm or tcg.
    #[arg(long)]
    pub accel: Option<scenarios::qemu::accel::AccelChoice>,
    /// The QEMU binary [default: qemu-system-x86_64 on PATH].
    #[arg(long)]
    pub qemu_binary: Option<PathBuf>,
}

/// `migbench reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Results folder [default: results/<timestamp>-reproduce].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Shorter runs: 1 s before and after each migration, 3 s of pre-copy at most for the gigabit
    /// scenarios, quick microbenchmarks.
    #[arg(long)]
    pub quick: bool,
    /// Leave out the microbenchmarks.
    #[arg(long)]
    pub no_bench: bool,
    /// Verify guest memory after every migration (the scenarios leave it off for the charts: it lengthens the
    /// pause the probe sees, though not the reported downtime).
    #[arg(long)]
    pub verify: bool,
    /// Systems under test, comma-separated: vmm-min, qemu, or all (every system; one that cannot run here is
    /// listed in the report as skipped, with the reason).
    #[arg(long, value_delimiter = ',', default_value = "vmm-min")]
    pub systems: Vec<String>,
    /// How to run QEMU (with --systems qemu or all).
    #[command(flatten)]
    pub qemu: QemuArgs,
}

/// `migbench tls-init`.
#[derive(Args, Debug)]
pub struct TlsInitArgs {
    /// The directory to write (created; existing files are not overwritten).
    pub dir: PathBuf,
    /// Names and addresses the certificate is valid for, besides localhost and 127.0.0.1
    /// (comma-separated), e.g. the destination host's address.
    #[arg(long, value_delimiter = ',')]
    pub host: Vec<String>,
}

/// `migbench check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A result: `<scenario>.result.json` from a scenario, or the JSON of `migbench migrate --json`.
    pub result: PathBuf,
    /// Fail if the VMM downtime exceeds this, ms.
    #[arg(long)]
    pub max_downtime_ms: Option<f64>,
    /// Fail if the application-visible downtime exceeds this, ms.
    #[arg(long)]
    pub max_app_downtime_ms: Option<f64>,
    /// Compare with a baseline result.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// How much worse than the baseline is still a pass, e.g. 25%.
    #[arg(long, default_value = "25%", requires = "baseline")]
    pub tolerance: String,
    /// Also write the regression view (baseline and result overlaid, the table of both with the deltas,
    /// and the verdict) as one self-contained HTML file, e.g. for a CI artifact.
    #[arg(long, requires = "baseline", value_name = "OUT")]
    pub html: Option<PathBuf>,
}

/// `migbench report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A results folder written by `reproduce` or `scenario` (its `*.result.json`, `bench.json`).
    pub dir: PathBuf,
    /// A baseline results folder: also write `regression.md` and `regression.html` into DIR, with each
    /// scenario found in both drawn overlaid on the same axes and the table of both with the deltas.
    #[arg(long, value_name = "BASE_DIR")]
    pub baseline: Option<PathBuf>,
}

/// `migbench bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// native (host processes), guest (the built-in guest's ring 3), compare (both, side by side, and the
    /// ttcp table), tcp (the ttcp table alone: TX and RX at MTU 1500 and 500, native between two network
    /// namespaces over a veth and each guest over virtio-net; 128 KiB socket buffers, 400 MB per transfer,
    /// median of 9, or 8 MB and 3 with --quick; needs root), macro (the Xen paper's Figure 3 with
    /// stand-ins, each system normalised to native = 1.0; --chart-dir draws it), or crosscheck (native rows against iperf3, perf bench sched pipe, sysbench memory and, with
    /// LMBENCH_DIR set to an lmbench 3 build, lmbench; run alternately, with ratios).
    #[arg(default_value = "compare")]
    pub which: String,
    /// Short runs for CI (ENOUGH 1 ms, fewer sizes; one cross-check round): under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Only rows whose id starts with one of these (comma-separated), e.g. null_call,mem_lat; with
    /// crosscheck, only the pairs for those rows.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the table as Markdown.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// With `macro`: draw the relative-performance chart (relative.svg, relative.png) into this folder.
    #[arg(long)]
    pub chart_dir: Option<PathBuf>,
    /// With guest, compare, tcp and macro: the guests that run the rows, comma-separated: vmm-min (the built-in
    /// guest), qemu (the whole native suite inside the QEMU Linux guest, its column naming the accelerator, the
    /// ttcp rows of the Linux guest ↔ host, and the Figure 3 stand-ins in the guest; needs root; TCG here, so
    /// minutes even with --quick), or all. The ttcp table and the figure always have native and vmm-min.
    /// Spelled as `reproduce --systems`.
    #[arg(long, alias = "system", value_delimiter = ',', default_value = "vmm-min")]
    pub systems: Vec<String>,
    /// With --systems qemu: how long one row may run in the guest before it is killed and shown as n/a
    /// [default: 20s with --quick, 180s without].
    #[arg(long, value_parser = parse_duration)]
    pub row_budget: Option<Duration>,
    /// How to run QEMU (with --systems qemu or all).
    #[command(flatten)]
    pub qemu: QemuArgs,
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

/// Turns the user's policy arguments into a checked migration policy.
pub fn policy(a: &PolicyArgs) -> anyhow::Result<results::Policy> {
    let on_timeout = match a.on_timeout.as_deref() {
        None => None,
        Some("cancel") => Some(results::OnTimeout::Cancel),
        Some("force") => Some(results::OnTimeout::Force),
        Some(other) => anyhow::bail!("unknown --on-timeout '{other}': expected cancel or force"),
    };
    let o = results::PolicyOverrides {
        downtime_ms: a.downtime_ms,
        timeout_ms: a.timeout.map(|t| t.as_secs_f64() * 1e3),
        on_timeout,
        max_bandwidth_mbps: a.max_bandwidth,
    };
    Ok(results::Policy::build(&a.policy, &o)?)
}

/// The auto-converge the user asked for (`--throttle`), checked.
pub fn throttle(a: &PolicyArgs) -> anyhow::Result<Option<results::Throttle>> {
    if !a.throttle {
        return Ok(None);
    }
    let t = results::Throttle::with_max(a.throttle_max);
    t.validate().map_err(|e| anyhow::anyhow!("--throttle-max: {e}"))?;
    Ok(Some(t))
}
