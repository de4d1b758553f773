//! Scenario files (TOML) and the runner that orchestrates a system under
//! test, the network, the probe and the migration.
//!
//! - [`scenario`]: scenario files, parsed strictly;
//! - [`system`]: the system-under-test boundary and its implementations;
//! - [`runner`]: one experiment end to end;
//! - [`netns`]: the run's network namespaces, bridge and TAPs, and the
//!   simulated hosts;
//! - [`link`]: shaping the link between the hosts with `tc`;
//! - [`process`]: child processes that die with the runner;
//! - [`error`]: the runner's error, [`RunnerError`].

pub mod error;
pub mod link;
pub mod netns;
pub mod process;
pub mod qemu;
pub mod runner;
pub mod scenario;
pub mod system;

pub use error::RunnerError;
