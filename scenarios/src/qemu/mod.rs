//! The `qemu` system under test: QEMU with a Linux guest built from Debian
//! packages.
//!
//! - [`image`]: `migbench image build`: kernel, initramfs, agent, manifest.
//! - [`accel`]: which accelerator (`kvm` or `tcg`) and why.
//! - [`qmp`]: the typed QMP client (the `qapi` crate).
//! - [`rounds`]: per-round statistics from `query-migrate` polls.
//! - [`driver`]: starting source and destination QEMUs, migrating,
//!   statistics, memory verification, teardown.
//! - [`pages`]: RAM dumps and their per-page digests (`--verify`).
//! - [`remote`]: the control channel to `migbench qemu-incoming` (types,
//!   framing, the source's client).
//! - [`incoming`]: `migbench qemu-incoming`'s server.

pub mod accel;
pub mod driver;
pub mod image;
pub mod incoming;
pub mod pages;
pub mod qmp;
pub mod remote;
pub mod rounds;
