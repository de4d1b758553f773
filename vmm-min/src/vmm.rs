//! A running VM's lifecycle: build from a configuration, start the vCPU
//! threads, observe (heartbeat, dirty rate, exits), pause, resume, stop.

use crate::abi::{self, BootInfo};
use crate::arch;
use crate::config::VmConfig;
use crate::devices::bus::MmioBus;
use crate::devices::net::NetDevice;
use crate::devices::uart::Uart;
use crate::error::{Error, Result};
use crate::exit::GuestExit;
use crate::guest_image;
use crate::machine::Machine;
use crate::sync::lock;
use crate::vstate::vcpu::{self, ExitCounts, Vcpu, VcpuHost, VcpuSet};
use crate::vstate::vm::{self, Vm};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

/// KVM_GET_SUPPORTED_CPUID's entry limit.
const MAX_CPUID_ENTRIES: usize = 80;

/// A dirty-rate measurement from KVM's dirty log.
#[derive(Debug, Clone, Serialize)]
pub struct DirtyRate {
    /// Pages KVM reported dirty per second, summed over the samples.
    pub pages_per_s: f64,
    /// The same in MB/s (MB = 10^6 bytes).
    pub mb_per_s: f64,
    /// Pages the guest's workers say they wrote per second, over the same time.
    pub guest_pages_written_per_s: f64,
    /// How long the measurement ran, measured.
    pub interval_ms: f64,
    /// How often the log was collected.
    pub sample_ms: f64,
}

/// Checks `config` against this host's KVM (vCPU limit) and the layout,
/// before any child VMM is started.
pub fn check_on_host(config: &VmConfig) -> Result<()> {
    config.validate(vm::max_vcpus(&vm::open_kvm()?))
}

/// Creates the VM, its RAM and its vCPUs (with CPUID set), without loading
/// anything: `boot` fills it with a fresh guest, a migration destination
/// with the incoming one.
pub(crate) fn new_machine(config: &VmConfig, console: bool) -> Result<Machine> {
    new_machine_with(config, console, crate::memory::create(config.memory, config.backend)?, None)
}

/// [`new_machine`] over RAM made beforehand (a migration destination fills
/// it while the VM is built), with the NIC on `tap` when it was opened
/// beforehand too.
pub(crate) fn new_machine_with(
    config: &VmConfig,
    console: bool,
    mem: crate::memory::GuestMem,
    tap: Option<crate::devices::tap::Tap>,
) -> Result<Machine> {
    let t0 = results::clock::mono_ns();
    let kvm = vm::open_kvm()?;
    config.validate(vm::max_vcpus(&kvm))?;
    let supported = kvm.get_supported_cpuid(MAX_CPUID_ENTRIES).map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let t1 = results::clock::mono_ns();
    let vm = Vm::with_memory(kvm, mem, config.memory)?;
    let t2 = results::clock::mono_ns();
    let mut vcpus = Vec::new();
    for i in 0..config.vcpus {
        let fd = vm.fd().create_vcpu(u64::from(i)).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(&arch::cpuid_for(&supported, i)).map_err(Error::kvm("KVM_SET_CPUID2"))?;
        vcpus.push(Arc::new(Vcpu::new(i as usize, fd)?));
    }
    let t3 = results::clock::mono_ns();
    // The TAP, unless given, is opened in this thread's network namespace.
    let net = match &config.net {
        Some(n) => Some(NetDevice::new(n, vm.fd(), &vm.mem, tap)?),
        None => None,
    };
    let ms = |a, b| results::clock::ms_between(a, b);
    tracing::debug!(
        kvm_ms = ms(t0, t1),
        vm_ms = ms(t1, t2),
        vcpus_ms = ms(t2, t3),
        nic_ms = ms(t3, results::clock::mono_ns()),
        "machine built"
    );
    Ok(Machine::new(vm, VcpuSet::new(vcpus), MmioBus::new(Uart::new(console)), net, console))
}

/// A running VM.
pub struct Vmm {
    machine: Arc<Machine>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    config: VmConfig,
}

impl Vmm {
    /// Builds the VM described by `config`, loads the guest and starts it.
    pub fn boot(config: &VmConfig, console: bool) -> Result<Vmm> {
        let machine = new_machine(config, console)?;
        let mem = &machine.vm.mem;
        arch::write_page_tables(mem, config.memory)?;
        arch::write_descriptor_tables(mem, config.vcpus)?;
        let entry = arch::load_image(mem, guest_image::ELF)?;
        let mut tsc_khz = 0;
        for v in machine.vcpus.iter() {
            let fd = lock(&v.fd);
            let i = v.index as u64;
            let sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
            fd.set_sregs(&arch::sregs_for(sregs, i)).map_err(Error::kvm("KVM_SET_SREGS"))?;
            fd.set_regs(&arch::regs_for(entry, i)).map_err(Error::kvm("KVM_SET_REGS"))?;
            fd.set_fpu(&arch::fpu()).map_err(Error::kvm("KVM_SET_FPU"))?;
            if i == 0 {
                tsc_khz = fd.get_tsc_khz().map_err(Error::kvm("KVM_GET_TSC_KHZ"))?;
            }
        }
        arch::write_boot_info(mem, config.memory, config.vcpus, u64::from(tsc_khz), &config.cmdline())?;
        Ok(Self::start(machine, config.clone()))
    }

    /// Starts the vCPU threads of a built machine.
    pub fn start(machine: Machine, config: VmConfig) -> Vmm {
        let machine = Arc::new(machine);
        if let Some(net) = &machine.net {
            if let Err(e) = net.start(machine.vcpus.doorbell().clone()) {
                machine.finish(GuestExit::Crash { reason: e.to_string() });
            }
        }
        let threads = machine
            .vcpus
            .iter()
            .map(|v| {
                let (v, host) = (v.clone(), machine.clone() as Arc<dyn VcpuHost>);
                std::thread::Builder::new().name(format!("vcpu{}", v.index)).spawn(move || vcpu::run_loop(v, host))
            })
            .collect::<std::io::Result<Vec<_>>>();
        match threads {
            Ok(threads) => Vmm { machine, threads: Mutex::new(threads), config },
            Err(e) => {
                machine.finish(GuestExit::Crash { reason: format!("cannot start vCPU threads: {e}") });
                Vmm { machine, threads: Mutex::new(Vec::new()), config }
            }
        }
    }

    /// The configuration the VM was built from.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The priorities the VM's own threads set themselves (vCPU 0 and the
    /// virtio-net thread), for those that have started.
    pub fn thread_priorities(&self) -> Vec<results::ThreadPriority> {
        let m = &self.machine;
        let vcpus = m.vcpus.iter().filter_map(|v| v.priority().cloned());
        vcpus.chain(m.net.as_ref().and_then(|n| n.priority().cloned())).collect()
    }

    /// The shared machine state (the migration code's and the device
    /// tests' way to the VM's memory and devices).
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    fn boot_field(&self, offset: usize) -> u64 {
        self.machine.vm.mem.load(GuestAddress(abi::BOOT_INFO_ADDR + offset as u64), Ordering::Acquire).unwrap_or(0)
    }

    /// vCPU `i`'s heartbeat counter.
    pub fn heartbeat(&self, i: usize) -> u64 {
        self.boot_field(std::mem::offset_of!(BootInfo, heartbeat) + 8 * i)
    }

    /// Pages the workers reported writing, summed over vCPUs.
    pub fn pages_written(&self) -> u64 {
        (0..self.config.vcpus as usize)
            .map(|i| self.boot_field(std::mem::offset_of!(BootInfo, pages_written) + 8 * i))
            .sum()
    }

    /// Waits until the main vCPU's heartbeat is non-zero; returns when it saw it.
    pub fn wait_first_heartbeat(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.heartbeat(0) != 0 {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline || self.exited().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// How the guest ended, if it has.
    pub fn exited(&self) -> Option<GuestExit> {
        lock(&self.machine.exit).clone()
    }

    /// Result lines the guest has sent so far.
    pub fn results(&self) -> Vec<String> {
        lock(&self.machine.results).clone()
    }

    /// Per-vCPU exit counts.
    pub fn exit_counts(&self) -> Vec<ExitCounts> {
        self.machine.vcpus.iter().map(|v| v.exit_counts()).collect()
    }

    /// Measures the dirty rate with KVM's dirty log for `total`, collecting
    /// every `step` (a page counts once per collection it was written in).
    /// A migration that starts meanwhile ends it early, within a
    /// millisecond; the rate is then over the time it ran.
    pub fn measure_dirty_rate(&self, total: Duration, step: Duration) -> Result<DirtyRate> {
        let vm = &self.machine.vm;
        let _owner = lock(&vm.dirty_log_owner);
        vm.take_dirty_log()?;
        let written0 = self.pages_written();
        let t0 = Instant::now();
        let mut pages = 0u64;
        let mut samples = 0u32;
        let wanted = || vm.dirty_log_wanted.load(std::sync::atomic::Ordering::Acquire);
        while t0.elapsed() < total && !wanted() {
            let t = Instant::now();
            while t.elapsed() < step && !wanted() {
                std::thread::sleep(Duration::from_millis(1).min(step));
            }
            pages += vm.take_dirty_log()?.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
            samples += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        let written = self.pages_written().saturating_sub(written0);
        Ok(DirtyRate {
            pages_per_s: pages as f64 / secs,
            mb_per_s: pages as f64 * abi::PAGE_SIZE as f64 / secs / 1e6,
            guest_pages_written_per_s: written as f64 / secs,
            interval_ms: secs * 1e3,
            sample_ms: secs * 1e3 / f64::from(samples.max(1)),
        })
    }

    /// Waits until a vCPU has entered `KVM_RUN`; returns when (CLOCK_MONOTONIC ns).
    pub fn wait_first_run(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.machine.vcpus.first_run_ns() {
                return Some(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Posts a request to the guest through the boot page; returns its sequence number.
    pub fn post_request(&self, request: u64) -> Result<u64> {
        let mem = &self.machine.vm.mem;
        let at = |f: usize| GuestAddress(abi::BOOT_INFO_ADDR + f as u64);
        let seq = self.boot_field(std::mem::offset_of!(BootInfo, request_seq)) + 1;
        mem.store(request, at(std::mem::offset_of!(BootInfo, request)), Ordering::Release)
            .and_then(|_| mem.store(seq, at(std::mem::offset_of!(BootInfo, request_seq)), Ordering::Release))
            .map_err(|e| Error::Memory(format!("posting a request: {e}")))?;
        Ok(seq)
    }

    /// Waits for the guest to answer request `seq`; returns its response.
    pub fn wait_response(&self, seq: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.exited().is_none() {
            if self.boot_field(std::mem::offset_of!(BootInfo, response_seq)) == seq {
                return Some(self.boot_field(std::mem::offset_of!(BootInfo, response)));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Pauses every vCPU, then the device threads (each through
    /// [`crate::run_control::Pausable`]); returns how long it took. On error
    /// nothing stays paused.
    pub fn pause(&self) -> Result<Duration> {
        let t = Instant::now();
        let parts = self.machine.pausables();
        for (i, p) in parts.iter().enumerate() {
            if let Err(e) = p.pause() {
                parts[..i].iter().rev().for_each(|p| p.resume());
                return Err(e);
            }
        }
        Ok(t.elapsed())
    }

    /// Resumes paused devices, then vCPUs.
    pub fn resume(&self) {
        self.machine.pausables().iter().rev().for_each(|p| p.resume());
    }

    /// Resumes the guest after a migration that did not move it, and tells
    /// the bridge it is here (a gratuitous ARP): a restored destination may
    /// have announced it there before Ready.
    pub fn resume_after_migration(&self) {
        self.resume();
        if let Some(net) = &self.machine.net {
            if let Err(e) = net.announce() {
                tracing::warn!("gratuitous ARP after resuming failed: {e}");
            }
        }
    }

    /// Asks the vCPUs and devices to stop; `join` waits for the vCPUs.
    pub fn stop(&self) {
        self.machine.stop();
    }

    /// Stops the VM and waits for its threads; returns how the guest ended
    /// (`None` if the VMM stopped it).
    pub fn join(&self) -> Option<GuestExit> {
        self.stop();
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        self.exited()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.join();
    }
}
