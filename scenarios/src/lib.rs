//! Scenario files (TOML) and the runner that orchestrates VMMs, network, probe and migration.

pub mod netns;
pub mod qemu;
pub mod runner;
pub mod scenario;
