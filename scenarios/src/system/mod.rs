//! The boundary between the runner and a system under test. The runner,
//! the probe, the reports and `check` see only this: start a source running
//! a workload and a destination, migrate with a policy (with progress),
//! check the guest on either side, pause and resume, tear down; the
//! statistics come back in the common results model ([`results`]).
//!
//! - [`vmm_min`]: migbench's own VMM and built-in guest, as child processes
//!   driven over their control sockets.
//! - [`qemu`]: QEMU with the Linux guest, driven over QMP and the guest
//!   agent's HTTP endpoints.

pub mod qemu;
pub mod vmm_min;

use crate::error::RunnerError;
use crate::netns::Names;
use results::{MigrationStats, Policy};
use std::path::Path;

pub use ::vmm_min::control::MigrationProgress;

/// Which copy of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Where the guest started.
    Source,
    /// Where it is migrated to.
    Destination,
}

impl Side {
    /// "source" or "destination".
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// The guest an experiment runs, in terms every system understands.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSpec {
    /// Guest RAM, bytes.
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// The workload, as `migbench run --workload` spells it
    /// (`idle`, `stress:vm=3,bytes=128M`, `memcheck`, ...).
    pub workload: String,
    /// Whether the workload can check its own memory (`memcheck`).
    pub memcheck: bool,
}

/// Where an experiment runs: its scratch directory and its network.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// A directory the run owns (sockets, configuration files).
    pub dir: &'a Path,
    /// The topology, when the guest has a NIC.
    pub names: Option<&'a Names>,
    /// The size of the file the guest serves, when it has a NIC.
    pub file_bytes: Option<u64>,
    /// The shaped link between the hosts, when there is one: a system
    /// sizes its deadlines by it (the stop-and-copy of a whole working set
    /// at 1 Gbit/s takes seconds).
    pub link: Option<&'a results::Link>,
}

/// How each side ended at teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Teardown {
    /// The source's exit code (`None`: killed, or did not exit in time).
    pub source_exit: Option<i32>,
    /// The destination's exit code.
    pub destination_exit: Option<i32>,
}

/// A system under test.
pub trait SystemUnderTest {
    /// Its name in reports: `vmm-min`, `qemu`.
    fn name(&self) -> &'static str;

    /// Starts the destination, ready to receive, and the source, running
    /// the guest's workload (with its NIC on the run's topology).
    fn start(&mut self, guest: &GuestSpec, ctx: &RunContext) -> Result<(), RunnerError>;

    /// Live-migrates the guest from the source to the destination and
    /// returns the statistics, whatever the outcome; `progress` is called
    /// while it runs (about every 100 ms).
    fn migrate(
        &mut self,
        policy: &Policy,
        verify: bool,
        progress: &mut dyn FnMut(&MigrationProgress),
    ) -> Result<MigrationStats, RunnerError>;

    /// Auto-converge for the next [`SystemUnderTest::migrate`] (`None`:
    /// off). A system that cannot throttle ignores it, which this default
    /// does.
    fn set_throttle(&mut self, _throttle: Option<results::Throttle>) {}

    /// Whether the destination was started elsewhere (a real remote host):
    /// the runner then checks the guest there only by the migration's
    /// outcome (the destination's Started) and not through [`Self::heartbeat`].
    fn destination_is_remote(&self) -> bool {
        false
    }

    /// A counter that advances while the guest runs on `side`.
    fn heartbeat(&self, side: Side) -> Result<u64, RunnerError>;

    /// Runs the guest's own memory check on `side`; the pages found bad.
    fn guest_memcheck(&self, side: Side) -> Result<u64, RunnerError>;

    /// The guest NIC's counters on `side` (frames, drops, receive-buffer
    /// starvation, frames carried by the migration), where the system
    /// exposes them; `None` where it does not (QEMU).
    fn nic_counters(&self, _side: Side) -> Result<Option<::vmm_min::devices::net::NetStats>, RunnerError> {
        Ok(None)
    }

    /// After an `indeterminate` migration (the source committed and never
    /// heard back): looks at the destination, keeps the one copy that runs
    /// (or resumes the source's if none does), and says where the guest is.
    fn resolve_indeterminate(&self) -> Result<Side, RunnerError>;

    /// Pauses the guest on `side`.
    fn pause(&self, side: Side) -> Result<(), RunnerError>;

    /// Resumes it.
    fn resume(&self, side: Side) -> Result<(), RunnerError>;

    /// Asks both sides to stop and waits for them; kills what does not end.
    fn teardown(&mut self) -> Teardown;

    /// What the report should say about how this system ran (version,
    /// accelerator and why), once started.
    fn note(&self) -> Option<String> {
        None
    }

    /// When the source was launched (`CLOCK_MONOTONIC`, ns), so the runner
    /// can time the boot to the guest's first HTTP answer.
    fn source_launched_ns(&self) -> Option<u64> {
        None
    }

    /// The launch-to-first-HTTP-200 time, ms, when the system measured it
    /// itself while starting (the runner measures it otherwise).
    fn boot_to_http_ms(&self) -> Option<f64> {
        None
    }
}
