//! `--net`: gives a VM a NIC inside a fresh network topology
//! (`scenarios::netns`), boots it with its TAP opened in the lan namespace,
//! prints where the guest is, and removes the topology when the run ends,
//! also on error, Ctrl-C or SIGTERM.
//!
//! Signals: once a topology exists, SIGINT, SIGTERM and SIGHUP are blocked
//! in every thread and taken by one thread with `sigwait`, which removes
//! every namespace still alive and exits with 130 (`scenarios::netns`).

use crate::cli::NetArgs;
use anyhow::{Context, Result};
use scenarios::netns::{self, Names, Topology};
use vmm_min::{MemoryBackend, VmConfig, Vmm, Workload};

/// A run's network: the topology (if this run made it), removed on drop.
pub struct NetRun {
    /// The topology's names and addresses.
    pub names: Names,
    _topo: Option<Topology>,
}

/// Creates the topology for `args` (if `--net`) and points `config` at its
/// source TAP.
pub fn prepare(args: &NetArgs, config: &mut VmConfig) -> Result<Option<NetRun>> {
    if !args.net {
        return Ok(None);
    }
    let id = args.run_id.clone().unwrap_or_else(netns::new_run_id);
    let file_bytes = vmm_min::config::parse_size(&args.file_size)?;
    let (names, topo) = if args.net_attach {
        let names = Names::for_run(&id)?;
        if !netns::namespace_exists(&names.lan_ns) {
            anyhow::bail!("--net-attach: run {id} has no topology (namespace {} does not exist)", names.lan_ns);
        }
        (names, None)
    } else {
        let topo = Topology::create(&id, args.mtu).context("creating the network topology")?;
        (topo.names().clone(), Some(topo))
    };
    config.net = Some(names.source_nic(file_bytes));
    Ok(Some(NetRun { names, _topo: topo }))
}

/// Boots the benchmarks' guest on topology `n`: idle, 256 MiB, one vCPU,
/// serving `file_bytes` at `/file`, its TAP opened in the lan namespace.
pub fn boot_bench_guest(n: &Names, file_bytes: u64) -> std::result::Result<Vmm, String> {
    let config = VmConfig {
        memory: 256 << 20,
        vcpus: 1,
        workload: Workload::Idle,
        backend: MemoryBackend::Anon,
        net: Some(n.source_nic(file_bytes)),
    };
    netns::run_in_netns(&n.lan_ns, || Vmm::boot(&config, false))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("booting the guest: {e}"))
}

impl NetRun {
    /// Boots the VM with its TAP opened inside the lan namespace, and prints
    /// the guest's address.
    pub fn boot(&self, config: &VmConfig, console: bool) -> Result<Vmm> {
        let vmm = netns::run_in_netns(&self.names.lan_ns, || Vmm::boot(config, console))
            .context("entering the lan namespace")??;
        let n = &self.names;
        eprintln!(
            "migbench: net: guest {} (MAC {}) on TAP {} in netns {}; probe netns {} ({}); try: ip netns exec {} curl -s http://{}/health",
            n.guest_ip, n.guest_mac, n.tap_src, n.lan_ns, n.probe_ns, n.probe_ip, n.probe_ns, n.guest_ip
        );
        Ok(vmm)
    }
}
